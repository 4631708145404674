"""The findings that open the report, computed from the run's typed tables (pure functions, no HTML).

Every finding carries its interval and sample size; nothing here draws a conclusion the tables do not
hold. Four kinds (:class:`RunSummary`):

- :func:`round_changes`: per condition and headline metric (accuracy, bias scores, toxicity), the
  value at the first and at the last round (``results/behaviour.csv``, with their intervals), the
  convergence round (``results/convergence.csv``) and, for accuracy, the paired change over the items
  answered at both rounds (``results/items.csv``): the mean of ``correct(last) - correct(first)`` with
  a percentile bootstrap interval and the exact two-sided sign-flip p-value (:func:`paired_change`).
- :func:`reference_comparisons`: each instructed condition against the no-instruction condition with
  the same CoT and feedback levels, at the first and last round, from ``results/paired_tests.csv``.
- :func:`morality_changes`: hidden-state morality at the first and last round, per condition
  (``probes/morality.csv``): every layer-band measure, and the probe probability at the layer where
  the probe is most accurate (``probes/layer_scores.csv``; the lowest such layer on ties, the rule the
  probe stage's steering uses).
- :func:`category_biases`: BBQ bias scores per category at the last round (``results/bbq_categories.csv``).

Changes are called distinguishable from none only by an interval: a paired interval that excludes 0,
or (where the tables hold no paired interval) two rounds' intervals that do not overlap
(:func:`moved`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from reports.figures.categories import BIAS_METRICS, category_order
from reports.figures.convergence import HEADLINE_METRICS
from reports.run_results import RunResults
from workbench.metrics.statistics import PairedChange, paired_change
from workbench.protocols.conditions import ConditionError, parse_condition_name
from workbench.run_tables import (
    BBQCategoryMetric,
    BehaviourMetric,
    ConvergenceRound,
    ItemAnswer,
    LayerScore,
    MoralityLevel,
    PairedTest,
)

NO_INSTRUCTION = "none"
"""The instruction level of the reference condition (``instr=none+...``)."""

PROBE_MEASURE = "probe_probability"
BAND_PREFIX = "band_"
"""Measures of ``probes/morality.csv`` averaged over the layer band (one row per condition and round)."""

DEFAULT_LEVEL = 0.95
DEFAULT_BOOTSTRAPS = 1000
DEFAULT_SEED = 0
"""Interval level, resamples and seed when ``config.toml`` has no ``[results]`` table (the stage's defaults)."""


@dataclass(frozen=True)
class TableEstimate:
    """A value with its interval over ``n`` items, as a table row gives it.

    ``value`` is ``None`` when undefined (``undefined_reason`` says why); ``ci_low``/``ci_high`` are
    ``None`` when the table has no interval.
    """

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    undefined_reason: str | None = None

    @property
    def bounded(self) -> bool:
        """Whether the value is defined and has both bounds."""
        return self.value is not None and self.ci_low is not None and self.ci_high is not None


@dataclass(frozen=True)
class RoundChange:
    """One headline metric of one condition from the first to the last round.

    Attributes:
        condition, metric: as in ``results/behaviour.csv``.
        first_round, last_round: the rounds compared.
        first, last: the metric at those rounds (``None``: the table has no row for the round).
        paired: the paired change over items (accuracy only, from ``results/items.csv``), else ``None``.
        convergence_round: the round from which the metric stops changing, ``None`` when it never does.
        convergence_listed: whether ``results/convergence.csv`` lists the series (it leaves out series
            with an undefined round, and the table may be absent).
    """

    condition: str
    metric: str
    first_round: int
    last_round: int
    first: TableEstimate | None
    last: TableEstimate | None
    paired: PairedChange | None
    convergence_round: int | None
    convergence_listed: bool


@dataclass(frozen=True)
class ReferenceComparison:
    """A condition minus its no-instruction reference on the same items at one round (``paired_tests.csv``)."""

    condition: str
    reference: str
    metric: str
    round: int
    change: PairedChange


@dataclass(frozen=True)
class MoralityChange:
    """One hidden-state morality measure of one condition at the first and the last round.

    Attributes:
        site, measure, layer: the ``probes/morality.csv`` rows (a band measure's layer is the band's first).
        layer_reason: how the layer was chosen, in words.
        first, last: the measure at ``first_round`` and ``last_round`` (``None``: no row).
    """

    condition: str
    site: str
    measure: str
    layer: int
    layer_reason: str
    first_round: int
    last_round: int
    first: TableEstimate | None
    last: TableEstimate | None

    @property
    def banded(self) -> bool:
        """Whether the measure is a layer-band mean (its ``layer`` is then only the band's first layer)."""
        return self.measure.startswith(BAND_PREFIX)


@dataclass(frozen=True)
class CategoryBias:
    """A BBQ bias score of one category and condition at one round (``results/bbq_categories.csv``)."""

    condition: str
    category: str
    metric: str
    round: int
    estimate: TableEstimate


Finding = TypeVar("Finding", "RoundChange", "ReferenceComparison", "MoralityChange", "CategoryBias")


@dataclass(frozen=True)
class SummaryPart(Generic[Finding]):
    """One part of the summary: its findings, or why there are none (``missing``: the command that makes them)."""

    findings: tuple[Finding, ...] = ()
    missing: str | None = None


@dataclass(frozen=True)
class RunSummary:
    """Everything the summary says about one run.

    Attributes:
        conditions: the run's condition list (design order).
        rounds: the rounds of ``results/behaviour.csv`` (empty when absent).
        level: the intervals' coverage (``[results] level``).
        rounds_part: :class:`RoundChange` findings.
        reference_part: :class:`ReferenceComparison` findings.
        morality_part: :class:`MoralityChange` findings.
        categories_part: :class:`CategoryBias` findings (last round).
        convergence_eps: the tolerance of the convergence rounds (``[results] convergence_eps``), if known.
        convergence_missing: why no convergence round is known (``results/convergence.csv`` absent), if so.
    """

    conditions: tuple[str, ...]
    rounds: tuple[int, ...]
    level: float
    rounds_part: SummaryPart[RoundChange]
    reference_part: SummaryPart[ReferenceComparison]
    morality_part: SummaryPart[MoralityChange]
    categories_part: SummaryPart[CategoryBias]
    convergence_eps: float | None
    convergence_missing: str | None = None


def results_settings(config: Mapping[str, Any] | None) -> tuple[float, int, int]:
    """``(level, n_boot, seed)`` of the run's ``[results]`` table, the stage's defaults where absent."""
    table = (config or {}).get("results", {})
    table = table if isinstance(table, dict) else {}
    return (
        float(table.get("level", DEFAULT_LEVEL)),
        int(table.get("n_boot", DEFAULT_BOOTSTRAPS)),
        int(table.get("seed", DEFAULT_SEED)),
    )


def headline_metrics(behaviour: Sequence[BehaviourMetric]) -> list[str]:
    """The metrics of ``behaviour`` that are headline metrics (task-prefixed ones too), in headline order."""
    present = dict.fromkeys(row.metric for row in behaviour)
    return sorted(
        (metric for metric in present if metric.rpartition("/")[2] in HEADLINE_METRICS),
        key=lambda metric: (HEADLINE_METRICS.index(metric.rpartition("/")[2]), metric),
    )


def _estimate(row: BehaviourMetric | MoralityLevel | None) -> TableEstimate | None:
    if row is None:
        return None
    reason = row.undefined_reason if isinstance(row, BehaviourMetric) else None
    value = row.value if row.value is not None and math.isfinite(row.value) else None  # nan: a blank morality cell
    if value is None:
        return TableEstimate(None, None, None, row.n, reason)
    return TableEstimate(value, row.ci_low, row.ci_high, row.n, reason)


def round_changes(
    behaviour: Sequence[BehaviourMetric],
    convergence: Sequence[ConvergenceRound],
    items: Sequence[ItemAnswer],
    conditions: Sequence[str],
    *,
    level: float = DEFAULT_LEVEL,
    n_boot: int = DEFAULT_BOOTSTRAPS,
    seed: int = DEFAULT_SEED,
) -> tuple[RoundChange, ...]:
    """Every headline metric of every condition (in ``conditions`` order) from the first to the last round.

    Rows of ``results/behaviour.csv``, ``results/convergence.csv`` and ``results/items.csv`` (for
    the paired accuracy change of the un-prefixed ``accuracy`` metric; ``items`` may be empty). Empty
    when the run has fewer than two rounds.
    """
    rounds = sorted({row.round for row in behaviour})
    if len(rounds) < 2:
        return ()
    first_round, last_round = rounds[0], rounds[-1]
    cells = {(row.condition, row.metric, row.round): row for row in behaviour}
    converged = {(row.condition, row.metric): row.convergence_round for row in convergence}
    correct: dict[tuple[str, int], dict[str, bool]] = {}
    for item in items:
        if item.correct is not None and item.round in (first_round, last_round):
            correct.setdefault((item.condition, item.round), {})[item.item_id] = item.correct
    changes = []
    for condition in conditions:
        for metric in headline_metrics(behaviour):
            first = cells.get((condition, metric, first_round))
            last = cells.get((condition, metric, last_round))
            if first is None and last is None:
                continue
            paired = None
            if metric == "accuracy":
                before = correct.get((condition, first_round), {})
                after = correct.get((condition, last_round), {})
                shared = [item_id for item_id in before if item_id in after]
                if shared:
                    differences = np.array([float(after[i]) - float(before[i]) for i in shared])
                    paired = paired_change(differences, level=level, n_boot=n_boot, seed=seed)
            changes.append(
                RoundChange(
                    condition=condition,
                    metric=metric,
                    first_round=first_round,
                    last_round=last_round,
                    first=_estimate(first),
                    last=_estimate(last),
                    paired=paired,
                    convergence_round=converged.get((condition, metric)),
                    convergence_listed=(condition, metric) in converged,
                )
            )
    return tuple(changes)


def reference_condition(condition: str, conditions: Sequence[str]) -> str | None:
    """The no-instruction condition of ``conditions`` with ``condition``'s CoT and feedback levels, if any.

    ``None`` for a no-instruction condition itself and for a name that is not a condition name.
    """
    try:
        levels = parse_condition_name(condition)
    except ConditionError:
        return None
    if levels["instruction"] == NO_INSTRUCTION:
        return None
    for other in conditions:
        try:
            other_levels = parse_condition_name(other)
        except ConditionError:
            continue
        if other_levels == {**levels, "instruction": NO_INSTRUCTION}:
            return other
    return None


def has_reference(conditions: Sequence[str]) -> bool:
    """Whether any condition of ``conditions`` is a no-instruction condition."""
    for condition in conditions:
        try:
            if parse_condition_name(condition)["instruction"] == NO_INSTRUCTION:
                return True
        except ConditionError:
            continue
    return False


def reference_comparisons(
    paired_tests: Sequence[PairedTest], conditions: Sequence[str], rounds: Sequence[int]
) -> tuple[ReferenceComparison, ...]:
    """Each instructed condition minus its no-instruction reference (:func:`reference_condition`) at ``rounds``.

    From the rows of ``results/paired_tests.csv`` (``condition_a - condition_b``); a row whose
    ``condition_a`` is the reference is turned round (difference and interval change sign; the
    p-value of a two-sided test is the same). In ``conditions`` order, then metric, then round.
    """
    by_pair = {(t.metric, t.round, t.condition_a, t.condition_b): t for t in paired_tests}
    metrics = list(dict.fromkeys(t.metric for t in paired_tests))
    found = []
    for condition in conditions:
        reference = reference_condition(condition, conditions)
        if reference is None:
            continue
        for metric in metrics:
            for round_ in rounds:
                test = by_pair.get((metric, round_, condition, reference))
                if test is not None:
                    change = PairedChange(test.difference, test.ci_low, test.ci_high, test.p_value, test.n)
                else:
                    test = by_pair.get((metric, round_, reference, condition))
                    if test is None:
                        continue
                    change = PairedChange(
                        -test.difference,
                        None if test.ci_high is None else -test.ci_high,
                        None if test.ci_low is None else -test.ci_low,
                        test.p_value,
                        test.n,
                    )
                found.append(ReferenceComparison(condition, reference, metric, round_, change))
    return tuple(found)


def best_probe_layer(layer_scores: Sequence[LayerScore], site: str) -> tuple[int, float] | None:
    """``(layer, accuracy)`` where the probe at ``site`` is most accurate (the lowest layer on ties), or ``None``.

    Rows of ``probes/layer_scores.csv`` with ``arm`` ``probe`` and ``metric`` ``accuracy`` (of the
    first token position listed for the site).
    """
    scores = [s for s in layer_scores if s.site == site and s.arm == "probe" and s.metric == "accuracy"]
    if not scores:
        return None
    position = scores[0].position
    best = max((s for s in scores if s.position == position), key=lambda s: (s.value, -s.layer))
    return best.layer, best.value


def morality_changes(
    morality: Sequence[MoralityLevel], layer_scores: Sequence[LayerScore], conditions: Sequence[str]
) -> tuple[MoralityChange, ...]:
    """Hidden-state morality at the first and the last round, per condition (``conditions`` order).

    Measures: every layer-band measure (``band_...``, one layer each) and, at each site with
    ``probe_probability`` rows, the probe probability at :func:`best_probe_layer` (the deepest
    layer when ``layer_scores`` has no probe accuracy for the site). Empty when ``morality`` holds
    fewer than two rounds.
    """
    rounds = sorted({row.round for row in morality})
    if len(rounds) < 2:
        return ()
    first_round, last_round = rounds[0], rounds[-1]
    cells = {(r.condition, r.site, r.measure, r.layer, r.round): r for r in morality}
    chosen: list[tuple[str, str, int, str]] = []
    for site, measure in dict.fromkeys((r.site, r.measure) for r in morality):
        layers = sorted({r.layer for r in morality if r.site == site and r.measure == measure})
        if measure.startswith(BAND_PREFIX):
            chosen.append((site, measure, layers[0], f"the mean over the layer band from layer {layers[0]}"))
        elif measure == PROBE_MEASURE:
            best = best_probe_layer(layer_scores, site)
            if best is not None and best[0] in layers:
                chosen.append((site, measure, best[0], f"the layer where the probe is most accurate ({best[1]:.3g})"))
            else:
                chosen.append((site, measure, layers[-1], "the deepest probed layer (no probe accuracy for the site)"))
    changes = []
    for condition in conditions:
        for site, measure, layer, reason in chosen:
            first = cells.get((condition, site, measure, layer, first_round))
            last = cells.get((condition, site, measure, layer, last_round))
            if first is None and last is None:
                continue
            changes.append(
                MoralityChange(
                    condition, site, measure, layer, reason, first_round, last_round, _estimate(first), _estimate(last)
                )
            )
    return tuple(changes)


def category_biases(categories: Sequence[BBQCategoryMetric]) -> tuple[CategoryBias, ...]:
    """The BBQ bias scores (:data:`BIAS_METRICS`) of every category and condition at the last round.

    In :func:`category_order` (``all`` first), then condition order of first appearance, then metric.
    """
    rows = [row for row in categories if row.metric in BIAS_METRICS]
    if not rows:
        return ()
    last_round = max(row.round for row in rows)
    order = {category: index for index, category in enumerate(category_order(rows))}
    at_last = sorted(
        (row for row in rows if row.round == last_round),
        key=lambda row: (order[row.category], BIAS_METRICS.index(row.metric)),
    )
    return tuple(
        CategoryBias(
            row.condition,
            row.category,
            row.metric,
            row.round,
            TableEstimate(row.value, row.ci_low, row.ci_high, row.n, row.undefined_reason),
        )
        for row in at_last
    )


def moved(first: TableEstimate | None, last: TableEstimate | None, paired: PairedChange | None = None) -> bool | None:
    """Whether a change is distinguishable from none by its intervals; ``None`` when they cannot say.

    With a paired change: its interval excludes 0. Otherwise: both rounds' intervals are known and
    do not overlap (a conservative reading: overlapping intervals can still differ).
    """
    if paired is not None:
        if paired.ci_low is None or paired.ci_high is None:
            return None
        return paired.ci_low > 0 or paired.ci_high < 0
    if first is None or last is None or not first.bounded or not last.bounded:
        return None
    assert first.ci_low is not None and first.ci_high is not None  # bounded
    assert last.ci_low is not None and last.ci_high is not None
    return last.ci_low > first.ci_high or last.ci_high < first.ci_low


def _part(findings: tuple[Finding, ...], missing: str | None) -> SummaryPart[Finding]:
    """The part of the summary with ``findings``, or none and why (``missing``)."""
    return SummaryPart((), missing) if missing is not None else SummaryPart(findings)


def summarise(results: RunResults) -> RunSummary:
    """The summary of a loaded run: each part's findings, or which command makes the table it needs."""
    conditions = results.conditions
    level, n_boot, seed = results_settings(results.config)
    results_table = (results.config or {}).get("results", {})
    eps = results_table.get("convergence_eps") if isinstance(results_table, dict) else None
    rounds = tuple(sorted({row.round for row in results.behaviour or ()}))
    one_round = None
    if len(rounds) == 1:
        one_round = f"the run has one round (round {rounds[0]}), so nothing changes between rounds"

    absent = results.absence("behaviour")
    if absent is None and one_round is not None:
        absent = one_round
    if absent is None and not headline_metrics(results.behaviour or ()):
        absent = "results/behaviour.csv holds none of the metrics " + ", ".join(HEADLINE_METRICS)
    found: tuple[RoundChange, ...] = ()
    if absent is None:
        found = round_changes(
            results.behaviour or (),
            results.convergence or (),
            results.items or (),
            conditions,
            level=level,
            n_boot=n_boot,
            seed=seed,
        )
    rounds_part = _part(found, absent)

    absent = results.absence("paired_tests")
    if absent is None and not has_reference(conditions):
        absent = 'the run has no no-instruction condition (add "none" to [protocol] instructions to have one)'
    compared = reference_comparisons(results.paired_tests or (), conditions, (rounds[0], rounds[-1]) if rounds else ())
    if absent is None and not compared:
        absent = "results/paired_tests.csv compares no condition with its no-instruction condition"
    reference_part = _part(compared, absent)

    absent = results.absence("morality")
    changes = morality_changes(results.morality or (), results.layer_scores or (), conditions) if absent is None else ()
    if absent is None and not changes:
        absent = "probes/morality.csv has fewer than two rounds"
    morality_part = _part(changes, absent)

    absent = results.absence("bbq_categories")
    biases = category_biases(results.bbq_categories or ()) if absent is None else ()
    if absent is None and not biases:
        absent = "results/bbq_categories.csv has no bias score rows (a run without BBQ items)"
    categories_part = _part(biases, absent)

    return RunSummary(
        conditions=conditions,
        rounds=rounds,
        level=level,
        rounds_part=rounds_part,
        reference_part=reference_part,
        morality_part=morality_part,
        categories_part=categories_part,
        convergence_eps=float(eps) if isinstance(eps, int | float) else None,
        convergence_missing=results.absence("convergence"),
    )
