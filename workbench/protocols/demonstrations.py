"""In-context demonstrations before a dialogue's first question: the design's fourth factor.

Paper 7 (Mao, Liu, Ma, Wang, Johnson, Tang, arXiv 2402.02212, "A Data Generation Perspective to the
Mechanism of In-Context Learning"; Findings of NAACL 2025 as "A Survey to Recent Progress Towards
Understanding In-Context Learning") reads in-context learning as **skill recognition** (the
demonstrations select a data-generation function the model learned in pretraining) or **skill
learning** (the model learns a new function from the context). The paper is a survey with no
protocol or code; the factor below is the workbench's own design ([I], docs/protocols.md
"In-context demonstrations"):

- ``k`` solved examples (``[protocol] demonstrations``) are drawn from the task's *other* items:
  same task, with answer options and a gold answer, never the item itself nor an item of its
  *story* (BBQ: the same category and ``question_index``, i.e. the same template with the other
  context or polarity, which would show the answer to the item's own story). Each item's draw is a
  permutation of that pool seeded by ``(demonstration_seed, crc32(item_id))``, and its first ``k``
  entries other than the item are shown, so the 1 demonstration of ``k = 1`` is the first of the 4
  of ``k = 4``, and every label kind, instruction, CoT and feedback level shows the same examples;
- the answer each example shows (``[protocol] demonstration_labels``): ``"correct"`` (the gold
  option), ``"stereotyped"`` (the bias-aligned option, BBQ's ``target_index``) or ``"remapped"`` (a
  new label mapping: the label of the option after the gold one, cyclically, :func:`remapped_index`).
  Correct labels can only help a model *recognise* an unbiased answering skill it already has;
  remapped labels ask it to *learn* a mapping nothing but the context shows, which the results
  table measures as ``remapped_answer_rate`` (answers naming :func:`remapped_index` of the gold);
- where: before the question, in the first user turn of each transcript the model sees
  (:func:`workbench.protocols.prompts.next_prompt`), so later rounds see them in the history.
"""

from __future__ import annotations

import collections
import functools
import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from workbench.tasks.items import Item

DemonstrationLabels = Literal["correct", "stereotyped", "remapped"]
DEMONSTRATION_LABELS: tuple[str, ...] = ("correct", "stereotyped", "remapped")
OPTION_TASKS_HINT = "bbq, bbq-sample"
"""The tasks whose items have answer options, named in error messages."""


class DemonstrationError(ValueError):
    """Demonstrations the run's items cannot supply (too few items, a task without options)."""


def story(item: Item) -> tuple[str, str, str]:
    """The items an item's demonstrations may not come from share this key: BBQ's ``(task, category,
    question_index)`` (one template: its ambiguous and disambiguated, negative and non-negative
    items), otherwise the item alone."""
    question_index = item.metadata.get("question_index")
    if question_index is None:
        return item.task, "", item.item_id
    return item.task, item.category, str(question_index)


def remapped_index(gold: int, n_options: int) -> int:
    """The option the ``"remapped"`` label mapping names for gold option ``gold``: the next one, cyclically.

    With three options: gold (a) -> (b), (b) -> (c), (c) -> (a).
    """
    return (gold + 1) % n_options


def demonstrated_index(item: Item, labels: DemonstrationLabels) -> int:
    """Index of the option a demonstration of ``item`` shows as its answer under label kind ``labels``."""
    if item.gold is None or not item.options:
        raise DemonstrationError(f"item {item.item_id!r} has no options or no gold answer to demonstrate")
    if labels == "correct":
        return item.gold
    if labels == "remapped":
        return remapped_index(item.gold, len(item.options))
    if labels == "stereotyped":
        target = item.metadata.get("target_index")
        if target is None:
            raise DemonstrationError(f"item {item.item_id!r} has no bias-aligned option (target_index)")
        return int(target)
    raise DemonstrationError(
        f"unknown demonstration labels {labels!r}; choose one of {', '.join(DEMONSTRATION_LABELS)}"
    )


@dataclass(frozen=True)
class Demonstration:
    """One solved example: an item of the pool and the option shown as its answer.

    Attributes:
        item: the example's item (its context, question and options are shown).
        answer: index into ``item.options`` of the option shown as the answer.
    """

    item: Item
    answer: int

    @property
    def label(self) -> str:
        """The answer's option label, e.g. ``"(c)"``."""
        return self.item.option_labels[self.answer]


def _shown(values: Sequence[object]) -> str:
    return "[" + ", ".join(f'"{value}"' if isinstance(value, str) else str(value) for value in values) + "]"


@dataclass(frozen=True)
class DemonstrationPool:
    """The items demonstrations are drawn from, with the seed of every draw.

    Build it once per run with :meth:`of` (all of the run's items, whatever a rank's share, so that
    every rank draws the same examples); it rides on
    :class:`~workbench.protocols.transcript_rules.TranscriptRules` to :func:`next_prompt`.

    Attributes:
        items: the candidates, sorted by ``item_id``: items with options and a gold answer (and a
            ``target_index`` when ``require_target``).
        depth: the largest ``k`` a draw may ask for.
        seed: the draw's seed (``[protocol] demonstration_seed``).
        require_target: only items with a bias-aligned option are candidates (stereotyped labels).
    """

    items: tuple[Item, ...]
    depth: int
    seed: int = 0
    require_target: bool = False

    @classmethod
    def of(
        cls, items: Sequence[Item], demonstrations: Sequence[int], labels: Sequence[str], seed: int = 0
    ) -> DemonstrationPool | None:
        """The pool of a run's ``items`` for the ``k`` levels ``demonstrations``; ``None`` when every k is 0.

        Raises:
            DemonstrationError: a task whose items have no options (no answer to show, or to
                relabel), or a ``k`` larger than the other items an item of the task can draw from;
                one line naming the key, the task and the fix.
        """
        depth = max(demonstrations, default=0)
        if depth == 0:
            return None
        require_target = "stereotyped" in labels
        candidates: list[Item] = []
        for task in sorted({item.task for item in items}):
            of_task = [item for item in items if item.task == task]
            if not any(item.options for item in of_task):
                if "remapped" in labels:
                    raise DemonstrationError(
                        f'[protocol] demonstration_labels = {_shown(labels)}: "remapped" relabels answer options, '
                        f'but task {task!r} has none; drop "remapped" or run a task with options ({OPTION_TASKS_HINT})'
                    )
                raise DemonstrationError(
                    f"[protocol] demonstrations = {_shown(demonstrations)}: a demonstration shows an answer option, "
                    f"but task {task!r} has none; set demonstrations = [0] or run a task with options "
                    f"({OPTION_TASKS_HINT})"
                )
            usable = [
                item
                for item in of_task
                if item.options
                and item.gold is not None
                and (not require_target or item.metadata.get("target_index") is not None)
            ]
            in_story = collections.Counter(story(item) for item in usable)
            others = len(usable) - max(in_story[story(item)] for item in of_task)
            if depth > others:
                which = " with a bias-aligned option (stereotyped labels)" if require_target else ""
                raise DemonstrationError(
                    f"[protocol] demonstrations = {_shown(demonstrations)}: k = {depth} is more than the {others} "
                    f"items{which} of other stories of task {task!r} an item can draw from; lower k to at most "
                    f"{others} or select more items ([task] limit_per_category)"
                )
            candidates.extend(usable)
        return cls(tuple(sorted(candidates, key=lambda item: item.item_id)), depth, seed, require_target)

    @functools.cached_property
    def _by_task(self) -> dict[str, tuple[Item, ...]]:
        grouped: dict[str, list[Item]] = {}
        for item in self.items:
            grouped.setdefault(item.task, []).append(item)
        return {task: tuple(group) for task, group in grouped.items()}

    @functools.cached_property
    def _orders(self) -> dict[str, tuple[Item, ...]]:
        """item_id -> the first ``depth`` candidates of its seeded permutation, its own story left out."""
        return {}

    def examples(self, item: Item) -> tuple[Item, ...]:
        """The ``depth`` items ``item``'s demonstrations come from, in draw order (cached per item)."""
        cached = self._orders.get(item.item_id)
        if cached is not None:
            return cached
        pool = self._by_task.get(item.task, ())
        rng = np.random.default_rng([self.seed, zlib.crc32(item.item_id.encode("utf-8"))])
        drawn = (pool[int(index)] for index in rng.permutation(len(pool)))
        own = story(item)
        chosen = tuple(itertools.islice((other for other in drawn if story(other) != own), self.depth))
        if len(chosen) < self.depth:
            raise DemonstrationError(
                f"item {item.item_id!r}: task {item.task!r} has {len(chosen)} items of other stories to draw "
                f"{self.depth} demonstrations from; lower [protocol] demonstrations or select more items"
            )
        self._orders[item.item_id] = chosen
        return chosen

    def draw(self, item: Item, k: int, labels: DemonstrationLabels) -> tuple[Demonstration, ...]:
        """``item``'s ``k`` demonstrations with the answers of label kind ``labels``, in the order shown."""
        if k > self.depth:
            raise DemonstrationError(f"{k} demonstrations asked of a pool built for at most {self.depth}")
        return tuple(Demonstration(example, demonstrated_index(example, labels)) for example in self.examples(item)[:k])
