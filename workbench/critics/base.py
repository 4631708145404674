"""The critic interface: who gives external feedback on a model's answer or rationale."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from workbench.protocols.dialogue import Dialogue
from workbench.tasks.items import Item


class CriticUnavailable(ValueError):
    """A remote critic could not be reached or did not answer usably after all retries.

    A ``ValueError``, so that the CLI prints its one-line message as ``error: ...`` and exits 2.
    """


@runtime_checkable
class Critic(Protocol):
    """Gives feedback on the last model output of a dialogue.

    ``answer_text`` is the output to critique: the answer (no CoT) or the rationale (CoT); the
    kind is that of ``dialogue.model_turns[-1]``. ``name`` identifies the critic in records
    (feedback turns are stored with template ID ``"critic:<name>"``).
    """

    name: str

    def feedback(self, item: Item, dialogue: Dialogue, answer_text: str) -> str:
        """The feedback text."""
        ...
