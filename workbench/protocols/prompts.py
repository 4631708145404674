"""The next turn's prompt for an item under a condition: the protocols' one entry point.

The runner's loop::

    dialogue = Dialogue(item.item_id)
    while not dialogue_complete(item, condition, dialogue, config):
        target = feedback_due(item, condition, dialogue, config)
        if target is not None:
            text = critic.feedback(item, dialogue, target.response)
            dialogue = dialogue.append(feedback_turn(text, critic.name, target.round))
        prompt = next_prompt(item, condition, dialogue, config)
        response = generate(prompt)          # messages + assistant_prefix, or prompt.text
        dialogue = dialogue.append(prompt.turn.complete(response))
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.protocols.conditions import Condition
from workbench.protocols.dialogue import Dialogue, PendingTurn, Turn
from workbench.protocols.history import ChatMessage, clean_messages, faithful_prompt
from workbench.protocols.schedule import TemplateFamily, next_scheduled_turn
from workbench.protocols.templates import fill_template, split_chat_turn
from workbench.tasks.items import Item


@dataclass(frozen=True)
class ProtocolConfig:
    """Settings shared by every condition of a run.

    Attributes:
        family: ``"paper2"`` (instruction x CoT x feedback templates) or ``"paper4"``.
        eos_token: the string closing each turn in the faithful history (``"</s>"`` for
            Llama-2/Mistral, ``"<|eot_id|>"`` for Llama-3).
    """

    family: TemplateFamily = "paper2"
    eos_token: str = "</s>"


@dataclass(frozen=True)
class RoundPrompt:
    """The prompt of one model turn.

    Exactly one of ``messages`` (clean mode) and ``text`` (faithful mode) is set. In clean mode the
    runner applies the model's chat template to ``messages`` with a generation prompt and then
    appends ``turn.assistant_prefix``; in faithful mode ``text`` is fed to the tokenizer as is.
    """

    turn: PendingTurn
    messages: list[ChatMessage] | None
    text: str | None

    @property
    def assistant_prefix(self) -> str:
        """Text the reply must start with (already inside ``text`` in faithful mode)."""
        return self.turn.assistant_prefix


def item_slots(item: Item) -> dict[str, str]:
    """Template slot values of an item (see :mod:`workbench.protocols.templates` for the names).

    The Winogender sentence is ``item.context`` and ``item.question`` joined by a space (whichever
    are non-empty); the RealToxicity prompt is ``item.question``.
    """
    choices = item.choices_text
    sentence = " ".join(part for part in (item.context, item.question) if part)
    return {
        "Q": f"{item.context} {item.question} {choices}.",
        "context": item.context,
        "question": item.question,
        "choices": choices,
        "sentence": sentence,
        "p": item.question,
    }


def _separator(item: Item) -> str:
    return "" if item.task == "realtoxicity" else "\n"


def dialogue_complete(
    item: Item, condition: Condition, dialogue: Dialogue, config: ProtocolConfig = ProtocolConfig()
) -> bool:
    """Whether every turn of the condition has been generated."""
    return next_scheduled_turn(item, condition, dialogue, config.family) is None


def feedback_due(
    item: Item, condition: Condition, dialogue: Dialogue, config: ProtocolConfig = ProtocolConfig()
) -> Turn | None:
    """The model turn a critic must comment on before the next turn can be built, or ``None``.

    Feedback is due when the next turn's template has a ``{feedback}`` slot and no feedback turn
    follows the last model turn yet. The returned turn is the last model turn: the answer (no
    CoT) or the rationale (CoT) of the previous round.
    """
    scheduled = next_scheduled_turn(item, condition, dialogue, config.family)
    if scheduled is None or not scheduled.needs_feedback or dialogue.pending_feedback is not None:
        return None
    return dialogue.model_turns[-1]


def next_prompt(
    item: Item,
    condition: Condition,
    dialogue: Dialogue,
    config: ProtocolConfig = ProtocolConfig(),
    feedback: str | None = None,
) -> RoundPrompt | None:
    """The prompt of the dialogue's next model turn, or ``None`` when the dialogue is complete.

    ``feedback`` defaults to the feedback turn that follows the last model turn; a turn whose
    template needs feedback raises ``ValueError`` when there is none.
    """
    scheduled = next_scheduled_turn(item, condition, dialogue, config.family)
    if scheduled is None:
        return None
    slots = item_slots(item)
    if scheduled.instruction_id is not None:
        slots["instruction"] = fill_template(scheduled.instruction_id)
    elif item.task == "winogender":
        slots["instruction"] = ""
    if scheduled.needs_feedback:
        text = feedback if feedback is not None else dialogue.pending_feedback
        if text is None:
            raise ValueError(
                f"item {item.item_id!r}, {condition.name}, round {scheduled.round}: template "
                f"{scheduled.template_id!r} needs the critic's feedback; append a feedback turn first"
            )
        slots["feedback"] = text
    raw = fill_template(scheduled.template_id, **slots)
    user, prefix = split_chat_turn(raw)
    pending = PendingTurn(scheduled.template_id, scheduled.kind, scheduled.round, user, prefix, raw)
    if condition.history_mode == "clean":
        return RoundPrompt(pending, clean_messages(dialogue, pending), None)
    return RoundPrompt(pending, None, faithful_prompt(dialogue, pending, config.eos_token, _separator(item)))
