"""A critic backed by any chat model given as a callable (the model itself or a second local model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from workbench.critics.requests import feedback_request_messages, feedback_target
from workbench.protocols.dialogue import Dialogue
from workbench.tasks.items import Item

ChatGenerate = Callable[[list[dict[str, str]]], str]


@dataclass(frozen=True)
class ModelCritic:
    """Feedback from ``generate(messages) -> text`` on the paper-2 feedback-generator prompts.

    ``messages`` are ``[{"role": "system"|"user", "content": str}]`` (docs/protocols.md §4); the runner
    decides how the callable applies a chat template and decodes.
    """

    generate: ChatGenerate
    name: str = "model"

    def feedback(self, item: Item, dialogue: Dialogue, answer_text: str) -> str:
        """The callable's reply to the feedback request for the dialogue's last output."""
        messages = feedback_request_messages(item, answer_text, feedback_target(dialogue))
        return self.generate(messages).strip()
