"""Downstream classification tasks read from their standard files, with an optional controlled
bias ratio.

Tasks: ``ethics_commonsense`` (ETHICS commonsense, e.g. cm_test.csv: ``label,input``; 1 =
morally wrong) and ``wiki_toxicity`` (toxicity_nonfuzzed_testset.csv: ``comment,toxic``;
True = toxic -> 1).

Bias ratio (binary tasks). An example's gendered cue is ``female`` when it has more female than
male words of the CDA list, ``male`` when more male words, none otherwise (ties included).
Cue value: female = 1, male = 0. An example *agrees* with its cue when its label equals the cue
value. ``bias_ratio`` r is the share of cued examples that agree; the largest subsample of the
cued examples with that share is kept (agreeing or disagreeing examples are dropped at random,
seeded), and every uncued example is kept.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from workbench.finetune.cda import FEMALE_WORDS, MALE_WORDS, gendered_words

TASK_COLUMNS = {"ethics_commonsense": ("input", "label"), "wiki_toxicity": ("comment", "toxic")}
LABEL_VALUES = {"0": 0, "1": 1, "False": 0, "True": 1}


class TaskDataError(ValueError):
    """A task file that cannot serve as a classification training set."""


@dataclass(frozen=True)
class LabelledText:
    """One example: its text and integer label."""

    text: str
    label: int


def read_classification_task(path: Path, task: str) -> list[LabelledText]:
    """Read a task file; a file with a single label value is an error (nothing to learn)."""
    if task not in TASK_COLUMNS:
        raise TaskDataError(f"unknown task {task!r}; use one of {sorted(TASK_COLUMNS)}")
    text_column, label_column = TASK_COLUMNS[task]
    path = Path(path)
    examples = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in (text_column, label_column) if c not in (reader.fieldnames or [])]
        if missing:
            raise TaskDataError(f"{path}: missing column(s) {missing} for task {task}; columns are {reader.fieldnames}")
        for row in reader:
            raw = row[label_column].strip()
            if raw not in LABEL_VALUES:
                raise TaskDataError(f"{path}:{reader.line_num}: label {raw!r} is not one of {sorted(LABEL_VALUES)}")
            examples.append(LabelledText(row[text_column], LABEL_VALUES[raw]))
    labels = {e.label for e in examples}
    if len(labels) < 2:
        raise TaskDataError(f"{path}: every example has label {labels or '{}'}; a classifier needs at least two labels")
    return examples


def gender_cue(text: str) -> int | None:
    """1 (female cue), 0 (male cue) or None (no gendered word, or a tie)."""
    words = gendered_words(text)
    female = sum(word in FEMALE_WORDS for word in words)
    male = sum(word in MALE_WORDS for word in words)
    if female == male:
        return None
    return 1 if female > male else 0


def subsample_to_bias_ratio(examples: Sequence[LabelledText], ratio: float, seed: int = 0) -> list[LabelledText]:
    """Largest subsample whose cued examples agree with their cue in share ``ratio`` (module doc)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"bias_ratio {ratio} is outside [0, 1]")
    if {e.label for e in examples} - {0, 1}:
        raise TaskDataError("a bias ratio needs a binary task (labels 0 and 1)")
    cues = [gender_cue(e.text) for e in examples]
    agree = [i for i, cue in enumerate(cues) if cue is not None and examples[i].label == cue]
    disagree = [i for i, cue in enumerate(cues) if cue is not None and examples[i].label != cue]
    if not agree and not disagree:
        raise TaskDataError("no example has a gendered cue; a bias ratio cannot be set on this data")
    rng = random.Random(seed)
    if len(agree) > ratio * (len(agree) + len(disagree)):  # too many agreeing (so ratio < 1)
        agree = rng.sample(agree, int(ratio * len(disagree) / (1 - ratio)))
    elif ratio > 0:
        disagree = rng.sample(disagree, min(len(disagree), int((1 - ratio) * len(agree) / ratio)))
    kept = set(agree) | set(disagree) | {i for i, cue in enumerate(cues) if cue is None}
    return [e for i, e in enumerate(examples) if i in kept]


def split_held_out(
    examples: Sequence[LabelledText], held_out_fraction: float, seed: int = 0
) -> tuple[list[LabelledText], list[LabelledText]]:
    """Seeded shuffle, then (train, held_out) with ``round(n * fraction)`` held-out examples (≥ 1)."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_held = max(1, round(len(examples) * held_out_fraction))
    return [examples[i] for i in order[n_held:]], [examples[i] for i in order[:n_held]]
