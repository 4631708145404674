"""The figures of a comparison page, chosen from the runs' tables, each with its reading guide or the
reason it is left out (:class:`reports.sections.ReportFigure`, as on a run's report).

Every string from a run is escaped here for the page (titles, notes, reasons) or by the figure
functions of :mod:`reports.figures.comparison` for plotly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from reports.compare import ComparedRun, Comparison
from reports.compare_tables import compared_metrics
from reports.escaping import escape_html
from reports.figures.attribution import bias_levels_figure
from reports.figures.comparison import (
    RunRows,
    compared_behaviour_figure,
    compared_morality_figure,
    compared_probe_accuracy_figure,
)
from reports.sections import ReportFigure
from reports.summary import BAND_PREFIX, PROBE_MEASURE


def _run_rows(comparison: Comparison) -> list[RunRows]:
    return [
        RunRows(
            run.label,
            run.results.behaviour or (),
            run.results.morality or (),
            run.results.layer_scores or (),
            run.n_layers,
        )
        for run in comparison.runs
    ]


def comparison_figures(comparison: Comparison) -> list[ReportFigure]:
    """Every figure of the comparison page, in reading order, drawn where the runs' tables allow."""
    return [
        _behaviour(comparison),
        _bias_levels(comparison),
        *_morality(comparison),
        _probe_accuracy(comparison),
    ]


def _omitted(anchor: str, title: str, guide: str, reason: str) -> ReportFigure:
    return ReportFigure(anchor, title, guide, omitted_because=escape_html(reason))


def _behaviour(comparison: Comparison) -> ReportFigure:
    anchor, title = "behaviour", "Behaviour per round, run beside run"
    guide = (
        "One panel per key metric (rows) and condition shared by every run (columns); each line is one run "
        "per round, in the run's colour, with its 95% band. Undefined values are gaps, never zeros."
    )
    metrics = compared_metrics([run.results.behaviour or () for run in comparison.runs])
    if not metrics:
        return _omitted(anchor, title, guide, "no behaviour metric is in every run's results/behaviour.csv")
    figure = compared_behaviour_figure(_run_rows(comparison), metrics, comparison.conditions)
    return ReportFigure(anchor, title, escape_html(guide), figure)


def _missing_note(runs: Sequence[ComparedRun], table: str) -> str | None:
    """``Not drawn for <run> (<reason>); ...`` for the runs without rows of ``table``, or ``None``."""
    absent = [(run.label, run.results.absence(table)) for run in runs]
    missing = [f"{label} ({reason})" for label, reason in absent if reason is not None]
    return escape_html("Not drawn for " + "; ".join(missing) + ".") if missing else None


def _bias_levels(comparison: Comparison) -> ReportFigure:
    anchor, title = "bias-levels", "Bias levels per run and checkpoint"
    guide = "Bars compare each bias measure across every run's checkpoints (run · checkpoint), with 95% intervals."
    levels = [
        dataclasses.replace(level, checkpoint=f"{run.label} · {level.checkpoint}")
        for run in comparison.runs
        for level in run.results.bias_levels or ()
    ]
    if not levels:
        reasons = "; ".join(f"{run.label}: {run.results.absence('bias_levels')}" for run in comparison.runs)
        return _omitted(anchor, title, guide, reasons)
    figure = bias_levels_figure(levels)
    figure.update_layout(title="Bias levels per run and checkpoint")
    return ReportFigure(anchor, title, escape_html(guide), figure, note=_missing_note(comparison.runs, "bias_levels"))


def _depth_note(comparison: Comparison, table: str) -> str | None:
    parts = []
    missing = _missing_note(comparison.runs, table)
    if missing is not None:
        parts.append(missing)
    for run in comparison.runs:
        if run.n_layers is None and run.results.absence(table) is None:
            parts.append(escape_html(f"Not drawn for {run.label}: its model's depth is unknown ({run.depth_unknown})."))
    return " ".join(parts) or None


def _site_measure(comparison: Comparison, site: str) -> str:
    """The measure drawn at ``site``: the probe probability when a run has it there, else the first per-layer one."""
    measures = [
        row.measure
        for run in comparison.runs
        for row in run.results.morality or ()
        if row.site == site and not row.measure.startswith(BAND_PREFIX)
    ]
    return PROBE_MEASURE if PROBE_MEASURE in measures else measures[0]


def _morality(comparison: Comparison) -> list[ReportFigure]:
    title = "Hidden-state morality by relative depth"
    guide = (
        "Morality per layer with the layer on a relative depth axis, layer / (layers − 1): every model's first "
        "block at 0 and its last at 1, so models of different depths line up. One panel per shared condition; "
        "one colour per run; solid: the run's last round with its 95% band, dotted: its first round."
    )
    known = [run for run in comparison.runs if run.n_layers is not None and run.results.absence("morality") is None]
    sites = list(
        dict.fromkeys(
            row.site for run in known for row in run.results.morality or () if not row.measure.startswith(BAND_PREFIX)
        )
    )
    if not sites:
        reasons = "; ".join(
            f"{run.label}: {run.results.absence('morality') or f'depth unknown ({run.depth_unknown})'}"
            for run in comparison.runs
        )
        return [_omitted("depth-morality-0", title, guide, reasons)]
    figures = []
    for index, site in enumerate(sites):
        measure = _site_measure(comparison, site)
        figure = compared_morality_figure(_run_rows(comparison), site, measure, comparison.conditions)
        figures.append(
            ReportFigure(
                f"depth-morality-{index}",
                f"{title} ({escape_html(site)})",
                escape_html(guide),
                figure,
                note=_depth_note(comparison, "morality"),
                subject=site,
            )
        )
    return figures


def _probe_accuracy(comparison: Comparison) -> ReportFigure:
    anchor, title = "depth-probe-accuracy", "Probe accuracy by relative depth"
    guide = (
        "Accuracy of the morality probe per layer on the relative depth axis (as above), one panel per site, "
        "one colour per run, with 95% error bars; the dotted line of the same colour is the shuffled-labels "
        "control, the accuracy a probe reaches without the concept."
    )
    known = [run for run in comparison.runs if run.n_layers is not None]
    sites = list(
        dict.fromkeys(s.site for run in known for s in run.results.layer_scores or () if s.metric == "accuracy")
    )
    if not sites:
        reasons = "; ".join(
            f"{run.label}: {run.results.absence('layer_scores') or f'depth unknown ({run.depth_unknown})'}"
            for run in comparison.runs
        )
        return _omitted(anchor, title, guide, reasons)
    figure = compared_probe_accuracy_figure(_run_rows(comparison), sites)
    return ReportFigure(anchor, title, escape_html(guide), figure, note=_depth_note(comparison, "layer_scores"))
