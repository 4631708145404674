"""Which template each turn of a dialogue uses, per task, template family and condition.

Paper-2 family (``qzm233/SuperficialMoralSelfCorrection`` ``mechanism/inference_feedback_cot.py``):

- without CoT, one answer turn per round: round 0 = baseline (instruction ``none``) or the
  instructed question; rounds >= 1 = the review prompt, or the feedback prompt when ``feedback``;
- with CoT, a (rationale, answer) pair per round: round 0 = rationale prompt (with the instruction
  sentence unless ``none``) then the answer prompt; rounds >= 1 = rationale refinement (review, or
  feedback on the previous rationale) then the answer prompt. As in the script, the answer turns of
  rounds >= 1 carry the feedback (``bbq.cot.answer.feedback.v1``) only when there is no instruction;
- feedback is asked for after the answer (no CoT) or after the rationale (CoT), i.e. it always
  critiques the output the next feedback-carrying turn refers to.

Paper-4 family (``HaitaoMao/LLM-self-correction`` @071c790): instructed first round, then the
review prompt; no CoT and no feedback templates exist there.

Winogender has only the Llama-2-era fill-in prompt and a review turn (any family). RealToxicity
rounds >= 1 without feedback always use the "less toxic" review: the sources have no neutral one,
so for toxicity the instruction ``none`` differs from ``intrinsic`` only in round 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from workbench.protocols.conditions import Condition
from workbench.protocols.dialogue import Dialogue, TurnKind
from workbench.protocols.templates import get_template
from workbench.tasks.items import Item

TemplateFamily = Literal["paper2", "paper4"]
TASKS: tuple[str, ...] = ("bbq", "winogender", "realtoxicity")

_INSTRUCTION_SENTENCES: dict[str, dict[str, str]] = {
    "bbq": {
        "intrinsic": "bbq.instr.unbiased.v1",
        "ladder-1": "bbq.instr.ladder.1",
        "ladder-2": "bbq.instr.ladder.2",
        "ladder-3": "bbq.instr.ladder.3",
        "ladder-4": "bbq.instr.ladder.4",
        "negated": "bbq.instr.negated.v1",
    },
    "winogender": {"intrinsic": "winogender.instr.unbiased.v1", "ladder-1": "winogender.instr.ladder.1"},
    "realtoxicity": {"intrinsic": "rtp.instr.nontoxic.v1", "negated": "rtp.instr.negated.v1"},
}


class UnsupportedConditionError(ValueError):
    """A condition the source templates cannot express for this task or family."""


@dataclass(frozen=True)
class ScheduledTurn:
    """The template of the next turn and, if it has an ``{instruction}`` slot, the sentence's ID."""

    template_id: str
    kind: TurnKind
    round: int
    instruction_id: str | None = None

    @property
    def needs_feedback(self) -> bool:
        """Whether the template has a ``{feedback}`` slot."""
        return "feedback" in get_template(self.template_id).slots


def instruction_sentence_id(task: str, instruction: str) -> str | None:
    """Template ID of the instruction sentence for ``task`` at ``instruction`` level (None for none)."""
    if instruction == "none":
        return None
    sentences = _INSTRUCTION_SENTENCES.get(task, {})
    if instruction not in sentences:
        raise UnsupportedConditionError(
            f"task {task!r} has no source template for instruction {instruction!r}; "
            f"choose one of none, {', '.join(sentences)}"
        )
    return sentences[instruction]


def _check(item: Item, condition: Condition, family: TemplateFamily) -> None:
    if item.task not in TASKS:
        raise UnsupportedConditionError(
            f"item {item.item_id!r}: task {item.task!r} has no protocol; choose one of {', '.join(TASKS)}"
        )
    if family not in ("paper2", "paper4"):
        raise UnsupportedConditionError(f"unknown template family {family!r}; choose paper2 or paper4")
    no_dialogue_extras = family == "paper4" or item.task == "winogender"
    if no_dialogue_extras and (condition.cot or condition.feedback):
        raise UnsupportedConditionError(
            f"{condition.name}: task {item.task!r} with family {family!r} has no CoT or feedback "
            "templates; use family 'paper2' with bbq or realtoxicity"
        )


def next_scheduled_turn(
    item: Item, condition: Condition, dialogue: Dialogue, family: TemplateFamily = "paper2"
) -> ScheduledTurn | None:
    """The next model turn of ``dialogue`` under ``condition``, or ``None`` when it is complete."""
    _check(item, condition, family)
    instruction_id = instruction_sentence_id(item.task, condition.instruction)
    model_turns = dialogue.model_turns
    turns_per_round = 2 if condition.cot else 1
    if len(model_turns) >= condition.rounds * turns_per_round:
        return None
    round_index, position = divmod(len(model_turns), turns_per_round)
    kind: TurnKind = "rationale" if condition.cot and position == 0 else "answer"
    first = round_index == 0
    task = item.task

    if task == "winogender":
        if first:
            return ScheduledTurn("winogender.p4.fill.v1", kind, round_index, instruction_id)
        return ScheduledTurn("winogender.p4.review.confidence.v1", kind, round_index)

    prefix = "bbq" if task == "bbq" else "rtp"
    if family == "paper4":
        if first:
            template = f"{prefix}.p4.baseline.v1" if instruction_id is None else f"{prefix}.p4.instructed.v1"
            return ScheduledTurn(template, kind, round_index, instruction_id)
        review = "bbq.p4.review.confidence.v1" if task == "bbq" else "rtp.p4.selfcorrect.lesstoxic.v1"
        return ScheduledTurn(review, kind, round_index)

    if not condition.cot:
        if first:
            template = f"{prefix}.baseline.v1" if instruction_id is None else f"{prefix}.instructed.v1"
            return ScheduledTurn(template, kind, round_index, instruction_id)
        if condition.feedback:
            if task == "realtoxicity" and instruction_id is not None:
                return ScheduledTurn("rtp.feedback.answer.instructed.v1", kind, round_index)
            return ScheduledTurn(f"{prefix}.feedback.answer.v1", kind, round_index)
        review = "bbq.review.confidence.v1" if task == "bbq" else "rtp.selfcorrect.lesstoxic.v1"
        return ScheduledTurn(review, kind, round_index)

    if kind == "rationale":
        if first:
            if instruction_id is None:
                return ScheduledTurn(f"{prefix}.cot.rationale.v1", kind, round_index)
            return ScheduledTurn(f"{prefix}.cot.rationale.instructed.v1", kind, round_index, instruction_id)
        if condition.feedback:
            return ScheduledTurn(f"{prefix}.feedback.rationale.v1", kind, round_index)
        return ScheduledTurn(f"{prefix}.cot.review.v1", kind, round_index)
    if task == "bbq":
        if not first and condition.feedback and instruction_id is None:
            return ScheduledTurn("bbq.cot.answer.feedback.v1", kind, round_index)
        return ScheduledTurn("bbq.cot.answer.v1", kind, round_index)
    return ScheduledTurn("rtp.cot.answer.v1" if first else "rtp.cot.answer.revised.v1", kind, round_index)
