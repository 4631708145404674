"""Explicit dialogue state: the turns a multi-round self-correction dialogue has produced so far."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TurnKind = Literal["answer", "rationale", "feedback"]
Budget = Literal["answer", "rationale"]


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
        budget: which token budget the reply gets: ``"answer"`` (``answer_tokens``) or
            ``"rationale"`` (``rationale_tokens``): a CoT rationale, or with paper 2's turn parity
            every odd-numbered BBQ turn.
        collapse: the reply is collapsed to its first option label before later turns see it, and
            a reply with no label ends the dialogue (paper 2's BBQ rule; :func:`complete_turn`).
    """

    template_id: str
    kind: TurnKind
    round: int
    user: str
    assistant_prefix: str
    raw_prompt: str
    budget: Budget = "answer"
    collapse: bool = False

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
    """The turns of one item's dialogue, oldest first. Immutable: :meth:`append` returns a new one.

    ``ended`` marks a dialogue stopped before its schedule was through (paper 2's BBQ answer with
    no option label, under ``collapse_answers``): it gets no further turn.
    """

    item_id: str
    turns: tuple[Turn, ...] = ()
    ended: bool = False

    def append(self, turn: Turn) -> Dialogue:
        """This dialogue with ``turn`` added at the end."""
        return Dialogue(self.item_id, (*self.turns, turn), self.ended)

    def end(self) -> Dialogue:
        """This dialogue, stopped: no further turn is scheduled."""
        return Dialogue(self.item_id, self.turns, True)

    def through(self, turn: Turn) -> Dialogue:
        """The dialogue up to and including ``turn`` (one of its own turns, found by identity).

        A critic is shown the dialogue as it stood when the output under review was made, so the
        output it reviews is the last model turn of what it sees.
        """
        for index in range(len(self.turns) - 1, -1, -1):
            if self.turns[index] is turn:
                return Dialogue(self.item_id, self.turns[: index + 1], self.ended)
        raise ValueError(f"dialogue {self.item_id!r} does not hold that {turn.kind} turn of round {turn.round}")

    @property
    def model_turns(self) -> tuple[Turn, ...]:
        """Answer and rationale turns (what the model itself said), oldest first."""
        return tuple(t for t in self.turns if t.kind != "feedback")

    @property
    def answers(self) -> tuple[Turn, ...]:
        """Answer turns only; ``answers[r]`` is round ``r``'s answer."""
        return tuple(t for t in self.turns if t.kind == "answer")

    def feedback_after(self, model_turn_index: int) -> str | None:
        """Text of the first feedback turn after model turn ``model_turn_index`` (0-based), or ``None``.

        Feedback is always asked about the latest reviewed turn, so the first feedback turn after
        a reviewed turn is the feedback on it.
        """
        seen = -1
        for turn in self.turns:
            if turn.kind != "feedback":
                seen += 1
            elif seen >= model_turn_index:
                return turn.response
        return None
