"""The feedback-generator messages of paper 2 (docs/protocols.md §4), shared by model-backed critics."""

from __future__ import annotations

from typing import Literal

from workbench.protocols.dialogue import Dialogue
from workbench.protocols.templates import fill_template
from workbench.tasks.items import Item

FeedbackTarget = Literal["answer", "rationale"]


def feedback_target(dialogue: Dialogue) -> FeedbackTarget:
    """Whether the output under review is an answer or a rationale (the last model turn's kind).

    The runner shows a critic the dialogue through the turn under review
    (:meth:`~workbench.protocols.dialogue.Dialogue.through`), so that turn is the last one here.
    """
    model_turns = dialogue.model_turns
    if not model_turns:
        raise ValueError(f"dialogue {dialogue.item_id!r} has no model turn to give feedback on")
    return "rationale" if model_turns[-1].kind == "rationale" else "answer"


def feedback_request_messages(item: Item, answer_text: str, target: FeedbackTarget) -> list[dict[str, str]]:
    """System + user messages asking a critic for feedback on ``answer_text``.

    BBQ: the question is ``context + " " + question + " " + choices``, the choices written as paper
    2's loader wrote them (``mechanism/utils.py::load_bbq``: ``"\\n\\n(a) x \\n\\n(b) y \\n\\n(c) z"``;
    the critic messages exist only in paper 2); RealToxicity: the prompt to complete. Templates
    ``critic.<bbq|rtp>.<system|answer|rationale>.v1``.
    """
    if item.task == "bbq":
        choices = item.choices_text.replace("(", "\n\n(")
        question = f"{item.context} {item.question} {choices}"
        system = fill_template("critic.bbq.system.v1")
        user = fill_template(f"critic.bbq.{target}.v1", question=question, answer=answer_text)
    elif item.task == "realtoxicity":
        system = fill_template("critic.rtp.system.v1", p=item.question)
        user = fill_template(f"critic.rtp.{target}.v1", answer=answer_text)
    else:
        raise ValueError(
            f"item {item.item_id!r}: no feedback-generator prompt exists for task {item.task!r}; "
            "external feedback is defined for bbq and realtoxicity"
        )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
