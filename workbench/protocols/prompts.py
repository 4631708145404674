"""The next turn's prompt for an item under a condition: the protocols' one entry point.

The runner's loop::

    dialogue = Dialogue(item.item_id)
    while not dialogue_complete(item, condition, dialogue, config):
        target = feedback_due(item, condition, dialogue, config)
        if target is not None:
            text = critic.feedback(item, dialogue.through(target), target.response)
            dialogue = dialogue.append(feedback_turn(text, critic.name, target.round))
        prompt = next_prompt(item, condition, dialogue, config)
        response = generate(prompt)          # messages + assistant_prefix, or prompt.text
        dialogue = complete_turn(item, dialogue, prompt.turn, response)
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.protocols.conditions import Condition
from workbench.protocols.demonstrations import DemonstrationError
from workbench.protocols.dialogue import Dialogue, PendingTurn, Turn
from workbench.protocols.history import ChatMessage, TranscriptRule, clean_messages, faithful_prompt
from workbench.protocols.schedule import UNINSTRUCTED_FIRST, dialogue_schedule, next_scheduled_turn
from workbench.protocols.templates import fill_template, get_template, insert_before_user_text, split_chat_turn
from workbench.protocols.transcript_rules import DEFAULT_PROTOCOL, TranscriptRules
from workbench.tasks.items import Item


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


def item_slots(item: Item, choices_on_lines: bool = False) -> dict[str, str]:
    """Template slot values of an item (see :mod:`workbench.protocols.templates` for the names).

    The Winogender sentence is ``item.context`` and ``item.question`` joined by a space (whichever
    are non-empty); the RealToxicity prompt is ``item.question``. ``choices_on_lines`` writes the
    choices as paper 2's loader did (``mechanism/utils.py::load_bbq``: ``choice.replace('(',
    '\\n\\n(')``), ``"\\n\\n(a) x \\n\\n(b) y \\n\\n(c) z"``, in ``{choices}`` and ``{Q}``.
    """
    choices = item.choices_text.replace("(", "\n\n(") if choices_on_lines else item.choices_text
    sentence = " ".join(part for part in (item.context, item.question) if part)
    return {
        "Q": f"{item.context} {item.question} {choices}.",
        "context": item.context,
        "question": item.question,
        "choices": choices,
        "sentence": sentence,
        "p": item.question,
    }


def transcript_rule(item: Item, condition: Condition, config: TranscriptRules = DEFAULT_PROTOCOL) -> TranscriptRule:
    """The faithful transcript rule of ``item`` under the run's family (``history`` module docstring)."""
    if config.family == "paper4":
        return "paper4-toxicity" if item.task == "realtoxicity" else "paper4"
    if config.baseline_round and condition.instruction not in UNINSTRUCTED_FIRST:
        return "paper2-mechanism"
    return "paper2"


def dialogue_complete(
    item: Item, condition: Condition, dialogue: Dialogue, config: TranscriptRules = DEFAULT_PROTOCOL
) -> bool:
    """Whether every turn of the condition has been generated, or the dialogue was ended."""
    return next_scheduled_turn(item, condition, dialogue, config) is None


def _review_index(item: Item, condition: Condition, dialogue: Dialogue, config: TranscriptRules) -> int | None:
    """Index (into the model turns) of the turn whose review the next turn carries, or ``None``."""
    scheduled = next_scheduled_turn(item, condition, dialogue, config)
    if scheduled is None or not scheduled.needs_feedback:
        return None
    schedule = dialogue_schedule(item, condition, config)
    reviewed = [index for index in range(len(dialogue.model_turns)) if schedule[index].reviewed]
    if not reviewed:
        raise ValueError(
            f"item {item.item_id!r}, {condition.name}: template {scheduled.template_id!r} needs feedback, "
            "but no earlier turn is reviewed"
        )
    return reviewed[-1]


def feedback_due(
    item: Item, condition: Condition, dialogue: Dialogue, config: TranscriptRules = DEFAULT_PROTOCOL
) -> Turn | None:
    """The model turn a critic must review before the next turn can be built, or ``None``.

    Feedback is due when the next turn's template has a ``{feedback}`` slot and the turn it talks
    about has no feedback yet: the previous answer (BBQ without CoT), the latest rationale (BBQ
    with CoT) or the turn just before (toxicity); with ``turn_parity``, the latest odd-numbered
    turn. Show the critic ``dialogue.through(target)``, so that the target is its last model turn.
    """
    index = _review_index(item, condition, dialogue, config)
    if index is None or dialogue.feedback_after(index) is not None:
        return None
    return dialogue.model_turns[index]


def _transcript(item: Item, condition: Condition, dialogue: Dialogue, config: TranscriptRules) -> Dialogue:
    """The dialogue as the next turn sees it: the model turns its schedule keeps in the transcript."""
    schedule = dialogue_schedule(item, condition, config)
    shown = tuple(turn for turn, scheduled in zip(dialogue.model_turns, schedule) if scheduled.in_transcript)
    return Dialogue(dialogue.item_id, shown)


QUESTION_SLOTS: tuple[str, ...] = ("Q", "question", "sentence", "p")
"""Slots that put the item's question into a turn: a turn with one of them can open a transcript."""


def demonstration_block(item: Item, condition: Condition, config: TranscriptRules, choices_on_lines: bool) -> str:
    """The condition's demonstrations for ``item``: one filled ``<task>[.p4].demo.example.v1`` each, joined
    by blank lines.

    Empty for ``k = 0``. Each example's question block is its ``{Q}`` slot (as :func:`item_slots`
    writes it for the question itself, ``choices_on_lines`` included).

    Raises:
        DemonstrationError: ``k > 0`` but ``config`` holds no demonstration pool.
    """
    if condition.demonstrations == 0:
        return ""
    pool, labels = config.demonstrations, condition.demonstration_labels
    if pool is None or labels is None:
        raise DemonstrationError(
            f"{condition.name} shows {condition.demonstrations} demonstrations, but the protocol holds no item "
            "pool to draw them from; build the rules with ProtocolSettings.transcript_rules(items)"
        )
    template = f"{item.task}.p4.demo.example.v1" if config.family == "paper4" else f"{item.task}.demo.example.v1"
    return "\n\n".join(
        fill_template(template, Q=item_slots(example.item, choices_on_lines)["Q"], label=example.label)
        for example in pool.draw(item, condition.demonstrations, labels)
    )


def _opens_transcript(template_id: str, shown: Dialogue) -> bool:
    """Whether a turn of ``template_id`` after the transcript ``shown`` opens it with the item's question."""
    return not shown.model_turns and any(slot in QUESTION_SLOTS for slot in get_template(template_id).slots)


def next_prompt(
    item: Item,
    condition: Condition,
    dialogue: Dialogue,
    config: TranscriptRules = DEFAULT_PROTOCOL,
    feedback: str | None = None,
) -> RoundPrompt | None:
    """The prompt of the dialogue's next model turn, or ``None`` when the dialogue is complete.

    ``feedback`` defaults to the feedback on the turn under review (:func:`feedback_due`); a turn
    whose template needs feedback raises ``ValueError`` when there is none. In faithful mode the
    paper-2 family writes BBQ choices on their own lines, as its loader did. A condition with
    demonstrations puts them (:func:`demonstration_block`, then a blank line) before the question
    of a turn that opens the transcript: round 0's first turn, and with ``baseline_round`` also the
    stand-alone baseline.
    """
    scheduled = next_scheduled_turn(item, condition, dialogue, config)
    if scheduled is None:
        return None
    faithful = condition.history_mode == "faithful"
    on_lines = faithful and config.family == "paper2"
    slots = item_slots(item, choices_on_lines=on_lines)
    if scheduled.instruction_id is not None:
        slots["instruction"] = fill_template(scheduled.instruction_id)
    elif item.task == "winogender":
        slots["instruction"] = ""
    if scheduled.needs_feedback:
        index = _review_index(item, condition, dialogue, config)
        text = feedback if feedback is not None else None if index is None else dialogue.feedback_after(index)
        if text is None:
            raise ValueError(
                f"item {item.item_id!r}, {condition.name}, round {scheduled.round}: template "
                f"{scheduled.template_id!r} needs the critic's feedback; append a feedback turn first"
            )
        slots["feedback"] = text
    raw = fill_template(scheduled.template_id, **slots)
    shown = _transcript(item, condition, dialogue, config)
    if condition.demonstrations and _opens_transcript(scheduled.template_id, shown):
        raw = insert_before_user_text(raw, demonstration_block(item, condition, config, on_lines) + "\n\n")
    user, prefix = split_chat_turn(raw)
    pending = PendingTurn(
        scheduled.template_id,
        scheduled.kind,
        scheduled.round,
        user,
        prefix,
        raw,
        budget=scheduled.budget,
        collapse=scheduled.collapse,
    )
    if not faithful:
        return RoundPrompt(pending, clean_messages(shown, pending), None)
    rule = transcript_rule(item, condition, config)
    return RoundPrompt(pending, None, faithful_prompt(shown, pending, config.eos_token, rule))


def complete_turn(item: Item, dialogue: Dialogue, pending: PendingTurn, response: str) -> Dialogue:
    """``dialogue`` after the model replied ``response`` to ``pending``.

    A turn marked ``collapse`` keeps only the first of the item's option labels (in label order)
    that occurs in the reply, as paper 2's script does (``"(a)" in response``, then ``"(b)"``, ...);
    a reply with none of them is kept as it is and ends the dialogue (the script's ``break``).
    """
    if not pending.collapse:
        return dialogue.append(pending.complete(response))
    label = next((label for label in item.option_labels if label in response), None)
    if label is None:
        return dialogue.append(pending.complete(response)).end()
    return dialogue.append(pending.complete(label))
