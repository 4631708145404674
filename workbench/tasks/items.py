"""The unit every task produces and every protocol consumes: one benchmark item."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OPTION_LETTERS = "abcdefghij"


@dataclass(frozen=True)
class Item:
    """One benchmark item, independent of any model.

    Attributes:
        item_id: stable identifier, unique within a run, e.g. ``"bbq/Age/17"``.
        task: task family, e.g. ``"bbq"``, ``"winogender"``, ``"realtoxicity"``.
        category: the dataset's category (BBQ category, Winogender occupation, ...).
        context: the passage the question is about (may be empty).
        question: the question (or, for generation tasks, the prompt to complete).
        options: answer option texts in presentation order; option ``i`` is labelled
            ``(OPTION_LETTERS[i])``. Empty for open generation tasks.
        gold: index into ``options`` of the correct answer, or ``None`` when the task has none.
        metadata: task-specific fields (BBQ: ``context_condition``, ``question_polarity``,
            ``unknown_index``, ``target_index``, ``stereotyped_groups``, ...). Not compared.
    """

    item_id: str
    task: str
    category: str
    context: str
    question: str
    options: tuple[str, ...] = ()
    gold: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def option_labels(self) -> tuple[str, ...]:
        """``("(a)", "(b)", ...)`` for the item's options."""
        return tuple(f"({OPTION_LETTERS[i]})" for i in range(len(self.options)))

    @property
    def choices_text(self) -> str:
        """Options as one line, ``"(a) x (b) y (c) z"`` (the MSU scripts' format)."""
        return " ".join(f"{label} {text}" for label, text in zip(self.option_labels, self.options))
