"""Explicit dialogue state: the turns a multi-round self-correction dialogue has produced so far."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TurnKind = Literal["answer", "rationale", "feedback"]


@dataclass(frozen=True)
class PendingTurn:
    """A model turn whose prompt is built but whose response is not generated yet.

    Attributes:
        template_id: the registered template this turn was filled from.
        kind: ``"answer"`` or ``"rationale"`` (CoT).
        round: the 0-based answer round the turn belongs to (a CoT round has two turns).
        user: the clean user message text (no ``[INST]`` markers).
        assistant_prefix: the text the model's reply is forced to start with, e.g.
            ``"The single, most likely answer choice is"``; may be empty.
        raw_prompt: the faithful filled template x_k (``[INST]`` markers and prefix included).
    """

    template_id: str
    kind: TurnKind
    round: int
    user: str
    assistant_prefix: str
    raw_prompt: str

    def complete(self, response: str) -> Turn:
        """The finished turn, with the model's generated continuation ``response``."""
        return Turn(
            self.template_id, self.kind, self.round, self.user, self.assistant_prefix, response, self.raw_prompt
        )


@dataclass(frozen=True)
class Turn:
    """One finished turn: a model turn (answer/rationale) or a critic's feedback.

    ``response`` is the model's continuation after ``assistant_prefix`` (model turns) or the
    feedback text (feedback turns, whose ``template_id`` names the critic as ``"critic:<name>"``
    and whose ``user``/``raw_prompt`` are empty).
    """

    template_id: str
    kind: TurnKind
    round: int
    user: str
    assistant_prefix: str
    response: str
    raw_prompt: str

    @property
    def reply(self) -> str:
        """The assistant message as the model said it: prefix and response joined by one space."""
        return " ".join(part for part in (self.assistant_prefix, self.response.strip()) if part)


def feedback_turn(text: str, critic_name: str, round_index: int) -> Turn:
    """A feedback turn holding a critic's ``text`` on the output of round ``round_index``."""
    return Turn(f"critic:{critic_name}", "feedback", round_index, "", "", text, "")


@dataclass(frozen=True)
class Dialogue:
    """The turns of one item's dialogue, oldest first. Immutable: :meth:`append` returns a new one."""

    item_id: str
    turns: tuple[Turn, ...] = ()

    def append(self, turn: Turn) -> Dialogue:
        """This dialogue with ``turn`` added at the end."""
        return Dialogue(self.item_id, (*self.turns, turn))

    @property
    def model_turns(self) -> tuple[Turn, ...]:
        """Answer and rationale turns (what the model itself said), oldest first."""
        return tuple(t for t in self.turns if t.kind != "feedback")

    @property
    def answers(self) -> tuple[Turn, ...]:
        """Answer turns only; ``answers[r]`` is round ``r``'s answer."""
        return tuple(t for t in self.turns if t.kind == "answer")

    @property
    def pending_feedback(self) -> str | None:
        """Text of a feedback turn given after the last model turn, or ``None``."""
        if self.turns and self.turns[-1].kind == "feedback":
            return self.turns[-1].response
        return None
