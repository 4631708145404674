"""Behavioural results of a run: per-record rows -> the tidy CSVs of ``results/`` (RUN_FOLDER.md).

A *record row* is one model answer: a dict with keys ``item_id``, ``condition`` (a
``Condition.name``), ``round`` (0-based), ``category``, ``task``, ``context_condition``,
``question_polarity``, ``predicted`` (option index or ``None`` = unparsed), ``gold``,
``target_index``, ``unknown_index``, ``option_probs`` (list of floats or ``None``), ``answer``
(generated text), ``prompt`` and ``toxicity`` (float or ``None``); optionally
``semantic_uncertainty`` (float), ``distinguish_correct`` (0/1) and ``pairwise_distinguish_accuracy``
(float), each ``None`` when not measured, and ``label_type`` (BBQ: ``"name"`` / ``"label"``).

Metrics of ``behaviour.csv`` (per condition and round; prefixed ``<task>/`` when rows hold several
tasks): ``accuracy`` and ``unparsed_rate`` (items with a gold answer); BBQ ``accuracy_ambig``,
``accuracy_disambig``, ``unknown_rate`` (ambiguous items), ``bias_score_ambiguous``,
``bias_score_disambiguated`` (every BBQ category pooled; ``bbq_categories.csv`` has them per
category with the proper-name templates split off, as BBQ's R script reports them); Winogender
``they_rate``, ``he_rate``, ``she_rate`` (from the answer text, by ``[results] winogender_rule``);
``toxicity`` (mean of scored outputs); ``entropy`` (mean option entropy, nats) and ``ece``
(option probabilities); ``uncertainty`` (paper 4's sample-based semantic uncertainty, nats);
``self_distinguish_accuracy`` (the stereotyped group named correctly);
``pairwise_distinguish_accuracy`` (last round of generation tasks: the more toxic of two own outputs
named correctly); ``remapped_answer_rate`` (runs with ``"remapped"`` demonstrations only, every
condition: answers naming the option the remapped label mapping gives the gold one,
:func:`workbench.protocols.demonstrations.remapped_index`); ``flip_rate`` (rounds
>= 1, against the previous round). Intervals are percentile bootstraps over items. Each row of an
accuracy-like metric also says how many answers were unparsed (``n_unparsed``); ``[results]
unparsed`` decides whether they are left out of the accuracies or counted wrong, ``[results]
bbq_convention`` how the bias scores aggregate (:class:`ResultsConfig`).

Undefined is a value, not an error: a metric that cannot be computed for a cell (a bias score when
every answer is "unknown", an accuracy when no answer parsed) is still a ``behaviour.csv`` row, with
an empty ``value`` (and empty bounds) and its ``undefined_reason`` (a phrase of
:mod:`workbench.metrics.undefined`); it is left out of ``convergence.csv``. Paired tests and
interaction contrasts use per-item outcomes and leave out the items without one.

``interactions.csv`` (:func:`design_effect_rows`) holds the 2x2x2 instruction x CoT x feedback effects
of each demonstration level that forms that design (named as :data:`statistics.EFFECTS`, with
``" @ demo=<k>-<labels>"`` at a level with demonstrations), then the demonstration factor's effects,
averaged over the instruction x CoT x feedback cells where both levels were run: each ``k`` against
none (``"demo=4-correct vs demo=0"``), each label kind against correct labels at the same ``k``
(``"demo=4-remapped vs demo=4-correct"``), and their interaction with the instruction
(``"instruction:(demo=4-correct vs demo=0)"``).
"""

from __future__ import annotations

import csv
import functools
import itertools
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.table import Table
from rich.text import Text

from workbench.config_tables import check_field_types
from workbench.experiment.records import RunRecord
from workbench.metrics import bbq, calibration, dynamics, options, statistics, undefined, winogender
from workbench.metrics.answers import UnparsedRule, option_letter
from workbench.protocols.conditions import ConditionError, condition_name, demonstration_level, parse_condition_name
from workbench.protocols.demonstrations import DEMONSTRATION_LABELS, remapped_index
from workbench.run_folder import RESULTS_STAGE, RunTable, tables_written_by

RECORD_KEYS: tuple[str, ...] = (
    "item_id",
    "condition",
    "round",
    "category",
    "task",
    "context_condition",
    "question_polarity",
    "predicted",
    "gold",
    "target_index",
    "unknown_index",
    "option_probs",
    "answer",
    "prompt",
    "toxicity",
)
"""The keys every record row has (the optional ones: ``semantic_uncertainty``, ``distinguish_correct``,
``pairwise_distinguish_accuracy``)."""
RESULT_TABLES: tuple[RunTable, ...] = tables_written_by(RESULTS_STAGE)
"""The tables of ``results/``, in file order (workbench/run_folder.py)."""
CSV_COLUMNS: dict[str, tuple[str, ...]] = {table.stem: table.columns for table in RESULT_TABLES}
"""Each results table's columns (its row type's fields, workbench/run_tables.py), by file stem."""


class RecordError(ValueError):
    """A record row that lacks a key or holds a value of the wrong kind."""


class ResultsConfigError(ValueError):
    """A ``[results]`` setting of the wrong type or outside its valid values."""


@dataclass(frozen=True)
class ResultsConfig:
    """How the tables are computed (the ``[results]`` table of a run configuration).

    Attributes:
        n_boot: bootstrap resamples per interval.
        seed: seed of every bootstrap and permutation draw.
        level: interval coverage.
        convergence_eps: eps of :func:`workbench.metrics.dynamics.convergence_round`, in metric units.
        convergence_stable_rounds: how many sub-eps changes must follow the convergence round (1:
            one change into the last round suffices; at least 1).
        n_bins, binning: calibration bins (see :mod:`workbench.metrics.calibration`).
        n_permutations: random sign flips of the paired test when there are more than 16 items.
        excerpt_chars: characters kept from the end of each prompt in ``items.csv``.
        unparsed: what an unparsed answer is in every accuracy (``accuracy``, ``accuracy_ambig``,
            ``accuracy_disambig``, ``unknown_rate``, the per-item ``correct`` of ``items.csv`` and the
            paired tests): ``"excluded"`` (default; left out of the denominator, as paper 2's dropped
            dialogues) or ``"wrong"`` (counted as a wrong answer: paper 4's denominator of every
            item). Either way each table row says how many answers were unparsed (``n_unparsed``).
            The BBQ bias scores follow their convention's own rule instead (``bbq_convention``).
        bbq_convention: how the BBQ bias scores aggregate (:data:`workbench.metrics.bbq.BBQ_CONVENTIONS`):
            ``"r_script"`` (default; BBQ's authors and the papers), ``"lm_eval"`` or ``"helm"``.
        winogender_rule: how a Winogender answer is read and counted
            (:data:`workbench.metrics.winogender.WINOGENDER_RULES`): ``"first_pronoun"`` (default,
            ours) or ``"starts_with_they"`` (paper 4's rule and denominator).
    """

    n_boot: int = 1000
    seed: int = 0
    level: float = 0.95
    convergence_eps: float = 0.01
    convergence_stable_rounds: int = 1
    n_bins: int = 10
    binning: calibration.Binning = "uniform"
    n_permutations: int = 10000
    excerpt_chars: int = 160
    unparsed: UnparsedRule = "excluded"
    bbq_convention: bbq.BBQConvention = "r_script"
    winogender_rule: winogender.WinogenderRule = "first_pronoun"

    def __post_init__(self) -> None:
        check_field_types(self, "results", ResultsConfigError)
        if self.convergence_stable_rounds < 1:
            raise ResultsConfigError(
                f"[results] convergence_stable_rounds = {self.convergence_stable_rounds} must be at least 1"
            )


@dataclass
class ResultTables:
    """The rows of each results CSV, keyed by file stem (``"behaviour"``, ``"flips"``, ...)."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {k: [] for k in CSV_COLUMNS})


def record_row(record: RunRecord) -> dict[str, Any]:
    """The record row of one decoded cache record (:mod:`workbench.experiment.records`)."""
    return {
        "item_id": record.item_id,
        "condition": record.condition,
        "round": record.round,
        "category": record.category,
        "task": record.task,
        "context_condition": record.context_condition,
        "question_polarity": record.question_polarity,
        "predicted": record.predicted,
        "gold": record.gold,
        "target_index": record.target_index,
        "unknown_index": record.unknown_index,
        "option_probs": None if record.option_probs is None else list(record.option_probs),
        "answer": record.answer,
        "prompt": record.prompt,
        "toxicity": record.toxicity,
        "semantic_uncertainty": record.semantic_uncertainty,
        "pairwise_distinguish_accuracy": record.pairwise_distinguish_accuracy,
        "distinguish_correct": record.distinguish_correct,
        # BBQ's names/labels split; the record schema does not carry it yet (rows without it are not split)
        "label_type": record.label_type,
    }


def _validate(rows: Sequence[dict[str, Any]]) -> None:
    for index, row in enumerate(rows):
        missing = [k for k in RECORD_KEYS if k not in row]
        if missing:
            raise RecordError(f"record row {index} lacks keys {missing}; every row needs {list(RECORD_KEYS)}")
        parse_condition_name(row["condition"])


def _correct(row: dict[str, Any], unparsed: UnparsedRule = "excluded") -> float:
    """1.0 / 0.0; nan without gold; an unparsed answer nan (``"excluded"``) or 0.0 (``"wrong"``)."""
    if row["gold"] is None:
        return float("nan")
    if row["predicted"] is None:
        return float("nan") if unparsed == "excluded" else 0.0
    return float(row["predicted"] == row["gold"])


def _index_array(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return bbq.as_index_array([r[key] for r in rows])


def _estimate_over_items(
    rows: Sized, statistic: Callable[[np.ndarray], float], config: ResultsConfig
) -> statistics.Estimate:
    """Bootstrap ``statistic`` of ``rows`` (given an index array into them) over the rows."""
    indices = np.arange(len(rows), dtype=float)
    return statistics.bootstrap_ci(
        indices, lambda idx: statistic(idx.astype(int)), config.n_boot, config.seed, config.level
    )


@dataclass(frozen=True)
class _Metric:
    """One metric of one cell: its estimate and, for metrics of option answers, how many were unparsed."""

    estimate: statistics.Estimate
    n_unparsed: int | None = None


def _mean(values: np.ndarray, config: ResultsConfig) -> statistics.Estimate:
    return statistics.bootstrap_ci(values, np.mean, config.n_boot, config.seed, config.level)


def _remapped(row: dict[str, Any], unparsed: UnparsedRule = "excluded") -> float:
    """1.0 when the answer names the remapped label mapping's option for the gold one, else 0.0; nan without
    gold or option probabilities (the option count); an unparsed answer as in :func:`_correct`."""
    if row["gold"] is None or row["option_probs"] is None:
        return float("nan")
    if row["predicted"] is None:
        return float("nan") if unparsed == "excluded" else 0.0
    return float(row["predicted"] == remapped_index(int(row["gold"]), len(row["option_probs"])))


def _behaviour_metrics(
    rows: Sequence[dict[str, Any]], config: ResultsConfig, remapping: bool = False
) -> dict[str, _Metric]:
    """Every applicable metric of one (task, condition, round) group; ``remapping`` adds ``remapped_answer_rate``."""
    metrics: dict[str, _Metric] = {}
    gold_rows = [r for r in rows if r["gold"] is not None]
    if gold_rows:
        correct = np.array([_correct(r, config.unparsed) for r in gold_rows])
        n_unparsed = sum(r["predicted"] is None for r in gold_rows)
        metrics["accuracy"] = _Metric(
            _mean(correct[np.isfinite(correct)], config).explained(undefined.NO_PARSED_ANSWER), n_unparsed
        )
        unparsed = np.array([float(r["predicted"] is None) for r in gold_rows])
        metrics["unparsed_rate"] = _Metric(_mean(unparsed, config), n_unparsed)
        remapped = np.array([_remapped(r, config.unparsed) for r in gold_rows])
        if remapping and remapped.size:
            metrics["remapped_answer_rate"] = _Metric(
                _mean(remapped[np.isfinite(remapped)], config).explained(undefined.NO_PARSED_ANSWER), n_unparsed
            )
    task = rows[0]["task"]
    if task == "bbq":
        metrics.update(_bbq_metrics(rows, config))
    if task == "winogender":
        metrics.update(_winogender_metrics(rows, config))
    scored = np.array([r["toxicity"] for r in rows if r["toxicity"] is not None], dtype=float)
    if scored.size:
        metrics["toxicity"] = _Metric(_mean(scored, config))
    sampled = np.array(
        [r.get("semantic_uncertainty") for r in rows if r.get("semantic_uncertainty") is not None], dtype=float
    )
    if sampled.size:
        metrics["uncertainty"] = _Metric(_mean(sampled, config))
    distinguished = np.array(
        [r["distinguish_correct"] for r in rows if r.get("distinguish_correct") is not None], dtype=float
    )
    if distinguished.size:
        metrics["self_distinguish_accuracy"] = _Metric(_mean(distinguished, config))
    pairwise = np.array(
        [r["pairwise_distinguish_accuracy"] for r in rows if r.get("pairwise_distinguish_accuracy") is not None],
        dtype=float,
    )
    if pairwise.size:
        metrics["pairwise_distinguish_accuracy"] = _Metric(_mean(pairwise, config))
    with_probs = [r for r in rows if r["option_probs"] is not None]
    if with_probs:
        entropy = options.option_entropy(np.array([r["option_probs"] for r in with_probs], dtype=float))
        metrics["entropy"] = _Metric(_mean(entropy, config))
    calibrated = [r for r in rows if r["option_probs"] is not None and r["gold"] is not None]
    if calibrated:
        probs = np.array([r["option_probs"] for r in calibrated], dtype=float)
        hit = probs.argmax(axis=1) == np.array([r["gold"] for r in calibrated])
        conf = probs.max(axis=1)
        metrics["ece"] = _Metric(
            _estimate_over_items(
                calibrated,
                lambda idx: calibration.expected_calibration_error(conf[idx], hit[idx], config.n_bins, config.binning),
                config,
            )
        )
    return metrics


def _winogender_metrics(rows: Sequence[dict[str, Any]], config: ResultsConfig) -> dict[str, _Metric]:
    """``they_rate`` (and, for ``"first_pronoun"``, ``he_rate`` / ``she_rate``) by ``config.winogender_rule``.

    ``n_unparsed``: answers the rule finds no pronoun in (``"first_pronoun"``: left out of the
    rates; ``"starts_with_they"``: counted, as not "they").
    """
    rule = config.winogender_rule
    pronouns = [winogender.pronoun_of(r["answer"] or "", rule) for r in rows]
    counted = [p for p in pronouns if p is not None] if rule == "first_pronoun" else pronouns
    n_unread = sum(p is None for p in pronouns)

    def rate_of(pronoun: str) -> Callable[[np.ndarray], float]:
        return lambda idx: winogender.pronoun_rates([counted[int(i)] for i in idx], rule)[pronoun]

    return {  # resampled over the answers the rates count
        f"{pronoun}_rate": _Metric(
            _estimate_over_items(counted, rate_of(pronoun), config).explained(undefined.NO_PRONOUN), n_unread
        )
        for pronoun in winogender.RATED_PRONOUNS[rule]
    }


def _bbq_metrics(rows: Sequence[dict[str, Any]], config: ResultsConfig) -> dict[str, _Metric]:
    """BBQ's accuracies by context, the unknown rate and the two bias scores of a set of rows.

    Accuracies follow ``config.unparsed``; bias scores ``config.bbq_convention``, resampled over
    the context's items (``"r_script"``, ``"lm_eval"``) or over every row (``"helm"``, whose
    ``s_AMB`` reads the accuracy of all items).
    """
    metrics: dict[str, _Metric] = {}
    predicted, gold = _index_array(rows, "predicted"), _index_array(rows, "gold")
    target, unknown = _index_array(rows, "target_index"), _index_array(rows, "unknown_index")
    context = np.array([r["context_condition"] for r in rows])
    convention = config.bbq_convention
    for condition in bbq.CONTEXTS:
        subset = np.flatnonzero(context == condition)
        if subset.size == 0:
            continue
        p, g, t, u, c = predicted[subset], gold[subset], target[subset], unknown[subset], context[subset]
        n_unparsed = int((p < 0).sum())
        counted = np.flatnonzero(p >= 0) if config.unparsed == "excluded" else np.arange(p.size)
        accuracy = functools.partial(bbq.accuracy, unparsed=config.unparsed)
        metrics[f"accuracy_{condition}"] = _Metric(  # resampled over the items the accuracy counts
            _estimate_over_items(
                [rows[int(i)] for i in subset[counted]], _on_subset(accuracy, p[counted], g[counted]), config
            ).explained(undefined.NO_PARSED_ANSWER),
            n_unparsed,
        )
        sub_rows = [rows[int(i)] for i in subset]
        if condition == "ambig":
            metrics["unknown_rate"] = _Metric(
                _estimate_over_items(
                    sub_rows, _on_subset(functools.partial(bbq.unknown_rate, unparsed=config.unparsed), p, u), config
                ).explained(undefined.NO_PARSED_ANSWER),
                n_unparsed,
            )
        score = functools.partial(bbq.bias_score, condition, convention=convention)
        if convention == "helm":
            bias = _estimate_over_items(rows, _on_subset(score, predicted, gold, target, unknown, context), config)
        else:
            bias = _estimate_over_items(sub_rows, _on_subset(score, p, g, t, u, c), config)
        why_no_bias_score = bbq.bias_score_undefined_reason(p, t, u, convention) or undefined.NOT_COMPUTABLE
        name = "bias_score_ambiguous" if condition == "ambig" else "bias_score_disambiguated"
        metrics[name] = _Metric(bias.explained(why_no_bias_score), n_unparsed)
    return metrics


def _on_subset(statistic: Callable[..., float], *columns: np.ndarray) -> Callable[[np.ndarray], float]:
    """``statistic`` of ``columns`` (arrays [n] of one cell) restricted to an index array of their rows."""
    return lambda idx: statistic(*(column[idx] for column in columns))


def _groups(rows: Iterable[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    grouped: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(tuple(row[k] for k in keys), []).append(row)
    return dict(sorted(grouped.items(), key=lambda kv: tuple(str(v) for v in kv[0])))


def _blank_if_nan(value: float) -> float | str:
    return "" if value is None or not np.isfinite(value) else value


def compute_results(rows: Sequence[dict[str, Any]], config: ResultsConfig = ResultsConfig()) -> ResultTables:
    """All results tables from record rows (see the module docstring for the row format)."""
    _validate(rows)
    result = ResultTables()
    tables = result.tables
    several_tasks = len({r["task"] for r in rows}) > 1
    remapping = any(
        parse_condition_name(condition).get("demonstration_labels") == "remapped"
        for condition in {r["condition"] for r in rows}
    )
    series: dict[tuple[str, str], dict[int, float]] = {}
    grouped = _groups(rows, "task", "condition", "round")
    for (task, condition, round_index), group in grouped.items():
        metrics = _behaviour_metrics(group, config, remapping)
        previous = grouped.get((task, condition, round_index - 1), [])
        if previous:
            before = {r["item_id"]: r["predicted"] for r in previous}
            pairs = [(before[r["item_id"]], r["predicted"]) for r in group if r["item_id"] in before]
            changed = np.array([float(a != b) for a, b in pairs if a is not None and b is not None])
            metrics["flip_rate"] = _Metric(_mean(changed, config).explained(undefined.NO_PAIRED_ANSWER))
        for metric, measured in metrics.items():
            name = f"{task}/{metric}" if several_tasks else metric
            tables["behaviour"].append(
                {"condition": condition, "round": round_index, "metric": name} | _cells(measured)
            )
            series.setdefault((condition, name), {})[round_index] = measured.estimate.estimate
    for (condition, metric), values in sorted(series.items()):
        ordered = [values[r] for r in sorted(values)]
        if len(ordered) < 2 or not np.all(np.isfinite(ordered)):
            continue  # an undefined round leaves the series without a convergence round
        converged = dynamics.convergence_round(ordered, config.convergence_eps, config.convergence_stable_rounds)
        tables["convergence"].append(
            {
                "condition": condition,
                "metric": metric,
                "convergence_round": "" if converged is None else sorted(values)[converged],
            }
        )
    tables["flips"] = _flip_rows(rows)
    tables["calibration"] = _calibration_rows(rows, config)
    tables["paired_tests"] = _paired_rows(rows, config)
    tables["interactions"] = _interaction_rows(rows, config)
    tables["bbq_categories"] = _bbq_category_rows(rows, config)
    tables["items"] = [
        {
            "item_id": r["item_id"],
            "condition": r["condition"],
            "round": r["round"],
            "prompt_excerpt": _excerpt(r["prompt"] or "", config.excerpt_chars),
            "answer": r["answer"],
            "predicted": option_letter(r["predicted"]) if r["gold"] is not None or r["predicted"] is not None else "",
            "correct": "" if np.isnan(_correct(r, config.unparsed)) else int(_correct(r, config.unparsed)),
        }
        for r in rows
    ]
    return result


def _cells(measured: _Metric) -> dict[str, Any]:
    """The ``value`` ... ``n_unparsed`` cells of one metric (``BehaviourMetric`` / ``BBQCategoryMetric``)."""
    cells = measured.estimate.csv_cells()
    return {
        "value": cells["value"],
        "ci_low": cells["ci_low"],
        "ci_high": cells["ci_high"],
        "n": measured.estimate.n,
        "undefined_reason": cells["undefined_reason"],
        "n_unparsed": "" if measured.n_unparsed is None else measured.n_unparsed,
    }


POOLED_CATEGORY = "all"
"""The ``category`` of ``bbq_categories.csv`` rows that pool every BBQ item of a condition and round."""


def bbq_category(row: dict[str, Any]) -> str:
    """A BBQ row's group in the R script tables: ``"<category> (names)"`` for proper-name templates, else its category.

    ``label_type`` (``"name"`` / ``"label"``) is optional in a record row; a row without it keeps its category.
    """
    return f"{row['category']} (names)" if row.get("label_type") == "name" else str(row["category"])


def _bbq_category_rows(rows: Sequence[dict[str, Any]], config: ResultsConfig) -> list[dict[str, Any]]:
    """The BBQ metrics of each category (names split off) and of all categories pooled, per condition and round."""
    out = []
    bbq_rows = [r for r in rows if r["task"] == "bbq"]
    for (condition, round_index), cell in _groups(bbq_rows, "condition", "round").items():
        by_category = {POOLED_CATEGORY: cell} | {
            category: [r for r in cell if bbq_category(r) == category] for category in sorted(map(bbq_category, cell))
        }
        for category, group in by_category.items():
            for metric, measured in _bbq_metrics(group, config).items():
                out.append(
                    {
                        "condition": condition,
                        "round": round_index,
                        "category": category,
                        "metric": metric,
                        "unparsed": config.unparsed,
                        "convention": config.bbq_convention,
                    }
                    | _cells(measured)
                )
    return out


def _excerpt(prompt: str, chars: int) -> str:
    return prompt if len(prompt) <= chars else "…" + prompt[-chars:]


def _flip_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for (condition,), group in _groups(rows, "condition").items():
        by_round = _groups(group, "round")
        rounds = sorted(r for (r,) in by_round)
        for r_from, r_to in itertools.pairwise(rounds):
            before = {row["item_id"]: row["predicted"] for row in by_round[(r_from,)]}
            pairs = [
                (before[row["item_id"]], row["predicted"]) for row in by_round[(r_to,)] if row["item_id"] in before
            ]
            if not pairs:
                continue
            counts = dynamics.transition_counts([a for a, _ in pairs], [b for _, b in pairs])
            for (a, b), count in sorted(counts.items()):
                out.append(
                    {
                        "condition": condition,
                        "round_from": r_from,
                        "round_to": r_to,
                        "answer_from": a,
                        "answer_to": b,
                        "count": count,
                    }
                )
    return out


def _calibration_rows(rows: Sequence[dict[str, Any]], config: ResultsConfig) -> list[dict[str, Any]]:
    out = []
    for (condition, round_index), group in _groups(rows, "condition", "round").items():
        scored = [r for r in group if r["option_probs"] is not None and r["gold"] is not None]
        if not scored:
            continue
        probs = np.array([r["option_probs"] for r in scored], dtype=float)
        hit = probs.argmax(axis=1) == np.array([r["gold"] for r in scored])
        for b in calibration.reliability_bins(probs.max(axis=1), hit, config.n_bins, config.binning):
            out.append(
                {
                    "condition": condition,
                    "round": round_index,
                    "bin_low": b.low,
                    "bin_high": b.high,
                    "mean_confidence": b.mean_confidence,
                    "accuracy": b.accuracy,
                    "count": b.count,
                }
            )
    return out


def _per_item(rows: Iterable[dict[str, Any]], value: Callable[[dict[str, Any]], float]) -> dict[str, float]:
    return {r["item_id"]: value(r) for r in rows}


def _outcomes(unparsed: UnparsedRule) -> dict[str, Callable[[dict[str, Any]], float]]:
    return {
        "accuracy": lambda r: _correct(r, unparsed),
        "toxicity": lambda r: float("nan") if r["toxicity"] is None else float(r["toxicity"]),
    }


def _paired_rows(rows: Sequence[dict[str, Any]], config: ResultsConfig) -> list[dict[str, Any]]:
    out = []
    conditions = sorted({r["condition"] for r in rows})
    by_cell = _groups(rows, "condition", "round")
    rounds = sorted({r["round"] for r in rows})
    for metric, value in _outcomes(config.unparsed).items():
        for round_index in rounds:
            for a, b in itertools.combinations(conditions, 2):
                cells_a = {r["item_id"]: r for r in by_cell.get((a, round_index), [])}
                cells_b = {r["item_id"]: r for r in by_cell.get((b, round_index), [])}
                values_a = _per_item(cells_a.values(), value)
                values_b = _per_item(cells_b.values(), value)
                shared = [
                    i
                    for i in sorted(set(values_a) & set(values_b))
                    if np.isfinite(values_a[i]) and np.isfinite(values_b[i])
                ]
                if not shared:
                    continue
                x = np.array([values_a[i] for i in shared])
                y = np.array([values_b[i] for i in shared])
                both = set(cells_a) & set(cells_b)
                unparsed = {
                    i
                    for i in both
                    if cells_a[i]["gold"] is not None and None in (cells_a[i]["predicted"], cells_b[i]["predicted"])
                }
                estimate = statistics.paired_difference(x, y, config.n_boot, config.seed, config.level)
                p_value = statistics.sign_flip_p_value(x - y, config.n_permutations, config.seed)
                out.append(
                    {
                        "metric": metric,
                        "round": round_index,
                        "condition_a": a,
                        "condition_b": b,
                        "difference": estimate.estimate,
                        "ci_low": _blank_if_nan(estimate.ci_low),
                        "ci_high": _blank_if_nan(estimate.ci_high),
                        "p_value": p_value,
                        "n": estimate.n,
                        "n_unparsed": len(unparsed) if metric == "accuracy" else "",
                    }
                )
    return out


DemonstrationLevel = tuple[int, str | None]
"""``(k, labels)`` of a condition: ``(0, None)`` without demonstrations."""
NO_DEMONSTRATIONS: DemonstrationLevel = (0, None)


def factorial_levels(
    conditions: Iterable[str], demonstrations: DemonstrationLevel = NO_DEMONSTRATIONS
) -> dict[str, tuple[str, str]] | None:
    """Low and high level of each factor when the ``conditions`` at demonstration level ``demonstrations``
    (default: those without demonstrations) form a full 2x2x2 design, else ``None``.

    The instruction's low level is ``"none"`` when present, otherwise the alphabetically first.
    """
    parsed = [p for p in map(parse_condition_name, conditions) if demonstration_level(p) == demonstrations]
    cells = {(p["instruction"], p["cot"], p["feedback"]) for p in parsed}
    instructions = sorted({c[0] for c in cells}, key=lambda level: (level != "none", level))
    if len(instructions) != 2 or len(cells) != 8:
        return None
    if {c[1] for c in cells} != {"off", "on"} or {c[2] for c in cells} != {"off", "on"}:
        return None
    return {"instruction": (instructions[0], instructions[1]), "cot": ("off", "on"), "feedback": ("off", "on")}


def _interaction_rows(rows: Sequence[dict[str, Any]], config: ResultsConfig) -> list[dict[str, Any]]:
    out = []
    by_cell = _groups(rows, "condition", "round")
    for metric, value in _outcomes(config.unparsed).items():
        cells = {
            (condition, round_index): _per_item(group, value) for (condition, round_index), group in by_cell.items()
        }
        out.extend(design_effect_rows(cells, metric, config.n_boot, config.seed, config.level))
    return out


def _effect_row(outcome: str, effect: str, estimate: statistics.Estimate) -> dict[str, Any]:
    return {
        "outcome": outcome,
        "effect": effect,
        "estimate": estimate.estimate,
        "ci_low": _blank_if_nan(estimate.ci_low),
        "ci_high": _blank_if_nan(estimate.ci_high),
    }


def _demonstration_part(level: DemonstrationLevel) -> str:
    """``(4, "correct")`` -> ``"demo=4-correct"``; ``(0, None)`` -> ``"demo=0"``."""
    k, labels = level
    return "demo=0" if k == 0 else f"demo={k}-{labels}"


def _level_order(level: DemonstrationLevel) -> tuple[int, int]:
    k, labels = level
    return k, DEMONSTRATION_LABELS.index(labels) if labels in DEMONSTRATION_LABELS else -1


def design_effect_rows(
    cells: dict[tuple[str, int], dict[str, float]],
    outcome: str,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[dict[str, Any]]:
    """The ``interactions.csv`` rows of one outcome (module docstring), round by round.

    Args:
        cells: ``(condition name, round) -> {item_id: outcome}`` (nan = no outcome; such items are
            left out of the effects that need them). Every name must be a condition name.
        outcome: the outcome's name; rows are ``<outcome>@round<k>``.
    Returns:
        rows with ``outcome``, ``effect``, ``estimate``, ``ci_low``, ``ci_high`` (blank bounds when
        not computable). Without demonstrations: the 2x2x2 effects when the conditions form that
        design, else nothing.
    """
    parsed = {condition: parse_condition_name(condition) for condition, _ in cells}
    levels = sorted({demonstration_level(p) for p in parsed.values()}, key=_level_order)
    out = []
    for round_index in sorted({r for _, r in cells}):
        at_round = {c: values for (c, r), values in cells.items() if r == round_index}
        name = f"{outcome}@round{round_index}"
        for demo in levels:
            suffix = "" if demo == NO_DEMONSTRATIONS else f" @ {_demonstration_part(demo)}"
            for effect, estimate in _factorial_effects_at(at_round, demo, n_boot, seed, level).items():
                out.append(_effect_row(name, effect + suffix, estimate))
        for high in levels:
            k, labels = high
            references = [NO_DEMONSTRATIONS] if k else []
            references += [(k, "correct")] if k and labels != "correct" else []
            for low in references:
                if low not in levels:
                    continue
                contrast = f"{_demonstration_part(high)} vs {_demonstration_part(low)}"
                for effect, estimate in _demonstration_contrasts(at_round, parsed, high, low, n_boot, seed, level):
                    out.append(_effect_row(name, f"{effect}({contrast})" if effect else contrast, estimate))
    return out


def _factorial_effects_at(
    cells: dict[str, dict[str, float]], demo: DemonstrationLevel, n_boot: int, seed: int, level: float
) -> dict[str, statistics.Estimate]:
    """The 2x2x2 effects of the conditions at demonstration level ``demo`` (one round's ``cells``), or none."""
    levels = factorial_levels(cells, demo)
    if levels is None:
        return {}
    per_cell = {}
    for i, c, f in itertools.product((0, 1), repeat=3):
        name = condition_name(levels["instruction"][i], levels["cot"][c], levels["feedback"][f], *demo)
        per_cell[(i, c, f)] = cells.get(name, {})
    items = sorted(set.intersection(*(set(v) for v in per_cell.values())))
    if not items:
        return {}
    outcomes = np.full((len(items), 2, 2, 2), np.nan)
    for (i, c, f), values in per_cell.items():
        outcomes[:, i, c, f] = [values[item] for item in items]
    if not np.isfinite(outcomes).all(axis=(1, 2, 3)).any():
        return {}
    return statistics.factorial_effects(outcomes, n_boot, seed, level)


def _demonstration_contrasts(
    cells: dict[str, dict[str, float]],
    parsed: dict[str, dict[str, str]],
    high: DemonstrationLevel,
    low: DemonstrationLevel,
    n_boot: int,
    seed: int,
    level: float,
) -> list[tuple[str, statistics.Estimate]]:
    """Demonstration level ``high`` against ``low`` in one round's ``cells``: the main effect over the
    instruction x CoT x feedback cells run at both levels (effect name ``""``), then its interaction with
    each instruction against the low one (``"instruction:"``, or ``"instruction=<level>:"`` with more
    than two instruction levels)."""
    triples = sorted(
        {(p["instruction"], p["cot"], p["feedback"]) for c, p in parsed.items() if c in cells},
        key=lambda triple: (triple[0] != "none", triple),
    )
    paired = [
        (condition_name(*triple, *high), condition_name(*triple, *low))
        for triple in triples
        if condition_name(*triple, *high) in cells and condition_name(*triple, *low) in cells
    ]
    out = []
    main = _contrast([name for pair in paired for name in pair], [1.0, -1.0] * len(paired), cells, n_boot, seed, level)
    if main is None:
        return []
    out.append(("", main))
    instructions = list(dict.fromkeys(triple[0] for triple in triples))
    low_instruction = instructions[0]
    for other in instructions[1:]:
        names: list[str] = []
        signs: list[float] = []
        for cot, feedback in sorted({(triple[1], triple[2]) for triple in triples}):
            quad = [
                condition_name(instruction, cot, feedback, *demo)
                for instruction in (other, low_instruction)
                for demo in (high, low)
            ]
            if all(name in cells for name in quad):
                names.extend(quad)
                signs.extend([1.0, -1.0, -1.0, 1.0])
        interaction = _contrast(names, signs, cells, n_boot, seed, level)
        if interaction is not None:
            out.append(("instruction:" if len(instructions) == 2 else f"instruction={other}:", interaction))
    return out


def _contrast(
    names: Sequence[str],
    signs: Sequence[float],
    cells: dict[str, dict[str, float]],
    n_boot: int,
    seed: int,
    level: float,
) -> statistics.Estimate | None:
    """:func:`statistics.weighted_contrast` of the cells ``names`` over the items every cell has, with
    weights ``signs / (len(names) / 2)``: for a main effect over m (high, low) pairs that is ``±1/m``,
    for an interaction over m (high, low) x (high, low) quadruples ``±1/(2m)``, as that function
    documents. ``None`` without cells, shared items or a complete item."""
    if not names:
        return None
    items = sorted(set.intersection(*(set(cells[name]) for name in names)))
    outcomes = np.array([[cells[name][item] for name in names] for item in items], dtype=float).reshape(len(items), -1)
    if not items or not np.isfinite(outcomes).all(axis=1).any():
        return None
    weights = np.asarray(signs, dtype=float) / (len(names) / 2)
    return statistics.weighted_contrast(outcomes, weights, n_boot, seed, level)


def write_results(result: ResultTables, results_dir: Path) -> list[Path]:
    """Write every table of :data:`RESULT_TABLES` into ``results_dir`` (header row, csv quoting); returns paths."""
    results_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in RESULT_TABLES:
        path = results_dir / table.file_name
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=table.columns)
            writer.writeheader()
            writer.writerows(result.tables[table.stem])
        paths.append(path)
    return paths


# Keys of a condition name (``instr=<level>+cot=<on|off>+fb=<on|off>``) and the factor each names.
CONDITION_NAME_KEYS: tuple[tuple[str, str], ...] = (("instr", "instruction"), ("cot", "cot"), ("fb", "feedback"))
# The optional fourth key (``+demo=<k>-<labels>``): a column of its own when the conditions' levels of it differ.
DEMONSTRATION_KEY = "demo"
# Factor columns of :func:`format_results_table` keep levels up to this many characters on one line.
MAX_LEVEL_WIDTH = 16


def format_results_table(behaviour: Sequence[dict[str, Any]], metric: str = "accuracy") -> Table:
    """A rich table of one metric: a row per condition, a column per round, cells ``value [low, high]``.

    Readable at 80 columns: a condition is shown as one column per factor whose level varies over
    the conditions, headed by the key of the condition name (``instr``, ``cot``, ``fb``, and ``demo``
    for conditions with in-context demonstrations, whose level reads ``0`` for a name without a demo
    part); the caption gives the name's pattern with the levels every condition shares filled in (e.g.
    ``instr=<instr>+cot=<cot>+fb=off``), so each full name can be read off its row. Every column
    wraps (``overflow="fold"``) instead of cutting text with an ellipsis. An undefined value
    (empty ``value`` in ``behaviour.csv``) reads ``undefined (<reason>)``; a round the metric has
    no row for reads ``–``.
    """
    selected = [r for r in behaviour if r["metric"] == metric]
    rounds = sorted({int(r["round"]) for r in selected})
    grouped = _groups(selected, "condition")
    conditions = [condition for (condition,) in grouped]
    factors = _condition_factors(conditions)
    # no outer edge or edge padding, one space between columns: five rounds of ``0.250 [0.000,
    # 0.750]`` cells then wrap in about 11 characters each at 80 columns
    table = Table(
        title=f"{metric} per condition and round",
        box=box.SIMPLE,
        collapse_padding=True,
        show_edge=False,
        pad_edge=False,
    )
    if factors is None:
        table.add_column("condition", overflow="fold")
    else:
        keys, levels, caption = factors
        table.caption = caption
        for index, key in enumerate(keys):
            widest = max([len(key)] + [len(condition_levels[index]) for condition_levels in levels.values()])
            table.add_column(key, overflow="fold", width=min(widest, MAX_LEVEL_WIDTH))
    for round_index in rounds:
        table.add_column(f"round {round_index}", justify="right", overflow="fold")
    for condition, group in zip(conditions, grouped.values(), strict=True):
        cells = {int(r["round"]): r for r in group}
        label = [Text(condition)] if factors is None else [Text(level) for level in factors[1][condition]]
        table.add_row(*label, *(_cell(cells.get(r)) for r in rounds))
    return table


def _condition_factors(conditions: Sequence[str]) -> tuple[list[str], dict[str, list[str]], str] | None:
    """The name keys of the factors that vary over ``conditions`` (every key when none varies), each
    condition's levels of them, and the caption pattern of the full names; ``None`` when a name does
    not parse."""
    try:
        parsed = {condition: parse_condition_name(condition) for condition in conditions}
    except ConditionError:
        return None
    for levels_of in parsed.values():
        levels_of[DEMONSTRATION_KEY] = _demonstration_part(demonstration_level(levels_of)).removeprefix("demo=")
    name_keys = [*CONDITION_NAME_KEYS, (DEMONSTRATION_KEY, DEMONSTRATION_KEY)]
    varying = [key for key, factor in name_keys if len({p[factor] for p in parsed.values()}) > 1]
    keys = varying or [key for key, _ in CONDITION_NAME_KEYS]
    factor_of = dict(name_keys)
    levels = {condition: [p[factor_of[key]] for key in keys] for condition, p in parsed.items()}
    first = next(iter(parsed.values()), None)
    shown = [
        f"{key}=<{key}>" if key in keys or first is None else f"{key}={first[factor]}"
        for key, factor in CONDITION_NAME_KEYS
    ]
    if DEMONSTRATION_KEY in keys:
        shown.append(f"{DEMONSTRATION_KEY}=<{DEMONSTRATION_KEY}> (none for demo 0)")
    elif first is not None and first[DEMONSTRATION_KEY] != "0":
        shown.append(f"{DEMONSTRATION_KEY}={first[DEMONSTRATION_KEY]}")
    return keys, levels, f"condition = {'+'.join(shown)}"


def _cell(row: dict[str, Any] | None) -> Text:
    if row is None:
        return Text("–")
    if row["value"] == "" or row["value"] is None:
        return Text(undefined.undefined_text(row.get("undefined_reason") or None))
    text = f"{float(row['value']):.3f}"
    if row["ci_low"] != "" and row["ci_high"] != "":
        text += f" [{float(row['ci_low']):.3f}, {float(row['ci_high']):.3f}]"
    return Text(text)
