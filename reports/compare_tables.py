"""What a comparison of runs says, computed from the runs' typed tables (pure functions, no HTML).

- :func:`config_differences`: the configuration keys whose values differ between the runs.
- :func:`metric_cells`: per headline metric and condition, each run's value at its first and last
  round with intervals and n, and (accuracy) the paired change between them over the run's items.
- :func:`between_runs`: a run's accuracy minus the reference run's, paired over the items both answered
  in the same condition at the same round (``results/items.csv``), with its bootstrap interval and the
  exact sign-flip p-value (:func:`workbench.metrics.statistics.paired_change`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reports.figures.convergence import behaviour_metrics_of
from reports.summary import TableEstimate, headline_metrics, round_changes
from workbench.metrics.statistics import PairedChange, paired_change
from workbench.run_tables import BehaviourMetric, ItemAnswer

IDENTITY_KEYS = ("name", "output_dir")
"""Top-level configuration keys that say where a run is, not what it did: never listed as differences."""

NOT_SET = "not set"
"""How the difference table shows a key a run's configuration leaves out (TOML has no null: ``None``)."""

PAIRED_METRIC = "accuracy"
"""The metric compared item by item, within a run (first vs last round) and between runs."""


@dataclass(frozen=True)
class ConfigDifference:
    """One dotted configuration key (``protocol.rounds``) and its value in each run (``None``: not set)."""

    key: str
    values: tuple[str | None, ...]


def value_text(value: Any) -> str:
    """A configuration value as the table shows it: strings as they are, others as JSON (lists, numbers, booleans)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``dotted key -> value text`` of a nested configuration table, in table order."""
    pairs: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            pairs.update(flatten(value, f"{prefix}{key}."))
        else:
            pairs[f"{prefix}{key}"] = value_text(value)
    return pairs


def config_differences(tables: Sequence[Mapping[str, Any]]) -> tuple[ConfigDifference, ...]:
    """The keys whose value is not the same in every one of ``tables`` (resolved configurations, one per run).

    A key set in some runs only counts as different (the others show ``None``); :data:`IDENTITY_KEYS`
    are left out. Keys in order of first appearance over the runs.
    """
    flat = [flatten(table) for table in tables]
    keys = dict.fromkeys(key for pairs in flat for key in pairs if key not in IDENTITY_KEYS)
    differences = []
    for key in keys:
        values = tuple(pairs.get(key) for pairs in flat)
        if len(set(values)) > 1:
            differences.append(ConfigDifference(key, values))
    return tuple(differences)


def compared_metrics(behaviours: Sequence[Sequence[BehaviourMetric]]) -> list[str]:
    """The metrics every run has: the headline metrics (accuracy, bias scores, toxicity) when any is shared,
    else every shared behaviour metric; in the first run's order."""
    for pick in (headline_metrics, behaviour_metrics_of):
        chosen = [list(pick(rows)) for rows in behaviours]
        shared = [metric for metric in chosen[0] if all(metric in other for other in chosen[1:])]
        if shared:
            return shared
    return []


@dataclass(frozen=True)
class MetricCell:
    """One run's metric of one condition at its first and last round.

    Attributes:
        first_round, last_round: the run's first and last rounds (equal for a one-round run).
        first, last: the values there (``None``: no row; ``first`` is ``None`` for a one-round run).
        paired: the paired change first -> last over the run's items (accuracy with ``items.csv``), else ``None``.
    """

    first_round: int
    last_round: int
    first: TableEstimate | None
    last: TableEstimate | None
    paired: PairedChange | None


def _estimate(row: BehaviourMetric | None) -> TableEstimate | None:
    if row is None:
        return None
    if row.value is None:
        return TableEstimate(None, None, None, row.n, row.undefined_reason)
    return TableEstimate(row.value, row.ci_low, row.ci_high, row.n)


def metric_cells(
    behaviour: Sequence[BehaviourMetric],
    items: Sequence[ItemAnswer],
    conditions: Sequence[str],
    metrics: Sequence[str],
    *,
    level: float,
    n_boot: int,
    seed: int,
) -> dict[tuple[str, str], MetricCell]:
    """``(metric, condition) -> MetricCell`` of one run, for the ``metrics`` and ``conditions`` it has rows of.

    Two or more rounds: :func:`reports.summary.round_changes` (first and last round, the paired accuracy
    change over ``items``); one round: its value as ``last``.
    """
    rounds = sorted({row.round for row in behaviour})
    if not rounds:
        return {}
    cells: dict[tuple[str, str], MetricCell] = {}
    if len(rounds) > 1:
        for change in round_changes(behaviour, (), items, conditions, level=level, n_boot=n_boot, seed=seed):
            if change.metric in metrics:
                key = (change.metric, change.condition)
                cells[key] = MetricCell(change.first_round, change.last_round, change.first, change.last, change.paired)
    by_cell = {(row.metric, row.condition, row.round): row for row in behaviour}
    for metric in metrics:
        for condition in conditions:
            if (metric, condition) in cells:
                continue
            first = by_cell.get((metric, condition, rounds[0])) if len(rounds) > 1 else None
            last = by_cell.get((metric, condition, rounds[-1]))
            if first is not None or last is not None:
                cells[metric, condition] = MetricCell(rounds[0], rounds[-1], _estimate(first), _estimate(last), None)
    return cells


@dataclass(frozen=True)
class BetweenRuns:
    """A run's accuracy minus the reference run's in one condition at one round, paired over shared items."""

    condition: str
    round: int
    change: PairedChange


def last_shared_round(reference: Sequence[ItemAnswer], other: Sequence[ItemAnswer], condition: str) -> int | None:
    """The last round at which both runs have scored answers (``correct`` known) in ``condition``, if any."""
    rounds = [
        {item.round for item in answers if item.condition == condition and item.correct is not None}
        for answers in (reference, other)
    ]
    shared = rounds[0] & rounds[1]
    return max(shared) if shared else None


def between_runs(
    reference: Sequence[ItemAnswer],
    other: Sequence[ItemAnswer],
    condition: str,
    *,
    level: float,
    n_boot: int,
    seed: int,
) -> BetweenRuns | None:
    """``other`` minus ``reference`` accuracy in ``condition`` at :func:`last_shared_round`, paired over items.

    Items are matched by ``item_id``; only those with a known ``correct`` in both runs count (unparsed
    answers as each run's ``[results] unparsed`` made them). ``None`` when no item is shared.
    """
    round_ = last_shared_round(reference, other, condition)
    if round_ is None:
        return None

    def scored(answers: Sequence[ItemAnswer]) -> dict[str, bool]:
        return {
            item.item_id: item.correct
            for item in answers
            if item.condition == condition and item.round == round_ and item.correct is not None
        }

    before, after = scored(reference), scored(other)
    shared = [item_id for item_id in before if item_id in after]
    if not shared:
        return None
    differences = np.array([float(after[item_id]) - float(before[item_id]) for item_id in shared])
    return BetweenRuns(condition, round_, paired_change(differences, level=level, n_boot=n_boot, seed=seed))
