"""The report's figures chosen from a run's tables, each with its reading guide or the reason
it is left out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from reports.escaping import escape_html
from reports.figures import (
    answer_flips_figure,
    bias_levels_figure,
    concept_uncertainty_figure,
    convergence_figure,
    head_attribution_figure,
    interactions_figure,
    item_answers_figure,
    morality_figure,
    reliability_figure,
    uncertainty_figure,
)
from reports.figures.concept import measured_points
from reports.figures.convergence import behaviour_metrics_of
from reports.figures.morality import morality_sites_of
from reports.figures.uncertainty import UNCERTAINTY_METRICS, uncertainty_metrics_of
from reports.run_results import REPORT_TABLES, RunResults
from workbench.run_tables import BehaviourMetric


@dataclass(frozen=True)
class ReportFigure:
    """One entry of the report: a figure and how to read it, or why it is left out.

    ``title``, ``reading_guide``, ``note`` and ``omitted_because`` are HTML-safe (escaped)
    strings. Exactly one of ``figure`` and ``omitted_because`` is set; ``note`` says what part
    of a drawn figure is missing, if any. ``undefined`` holds the drawn rows whose value is
    undefined (gaps in the figure), which the page lists with their reasons.
    """

    anchor: str
    title: str
    reading_guide: str
    figure: go.Figure | None = None
    omitted_because: str | None = None
    note: str | None = None
    undefined: tuple[BehaviourMetric, ...] = ()


def table_absence(results: RunResults, name: str) -> str | None:
    """Why the table ``name`` of :data:`REPORT_TABLES` cannot be drawn, or ``None`` if it has rows."""
    table = REPORT_TABLES[name]
    rows = getattr(results, name)
    if rows is None:
        return f"{table.path} not found (run `{table.stage}` on this run first)"
    if not rows:
        return f"{table.path} has no rows"
    return None


def report_figures(results: RunResults) -> list[ReportFigure]:
    """Every figure of the report, in reading order, drawn from ``results`` where possible."""
    return [
        _convergence(results),
        _flips(results),
        _uncertainty(results),
        _reliability(results),
        *_morality(results),
        _interactions(results),
        _concept(results),
        _heads(results),
        _bias_levels(results),
        _answers(results),
    ]


def _omitted(anchor: str, title: str, guide: str, reason: str) -> ReportFigure:
    return ReportFigure(anchor, title, guide, omitted_because=escape_html(reason))


def _from_table(
    results: RunResults,
    table: str,
    anchor: str,
    title: str,
    guide: str,
    draw: Callable[[Any], go.Figure],
    why_absent: str = "",
) -> ReportFigure:
    """The figure ``draw`` makes from one table's rows, or the reason (plus ``why_absent``) it is left out."""
    absent = table_absence(results, table)
    if absent is not None:
        return _omitted(anchor, title, guide, absent + why_absent)
    return ReportFigure(anchor, title, guide, draw(getattr(results, table)))


def _convergence(results: RunResults) -> ReportFigure:
    anchor, title = "convergence", "Behaviour per round and convergence"
    guide = (
        "Each line is one condition's metric (accuracy, bias score, toxicity) per round with its "
        "95% band; a star marks the round from which the metric stops changing."
    )
    absent = table_absence(results, "behaviour")
    if absent is not None:
        return _omitted(anchor, title, guide, absent)
    if not behaviour_metrics_of(results.behaviour or ()):
        return _omitted(anchor, title, guide, "results/behaviour.csv holds only uncertainty metrics")
    missing_rounds = table_absence(results, "convergence")
    metrics = set(behaviour_metrics_of(results.behaviour or ()))
    return ReportFigure(
        anchor,
        title,
        guide,
        convergence_figure(results.behaviour or (), results.convergence or ()),
        note=None if missing_rounds is None else escape_html(f"No convergence round is marked: {missing_rounds}."),
        undefined=undefined_rows(results.behaviour or (), metrics),
    )


def _flips(results: RunResults) -> ReportFigure:
    anchor, title = "flips", "Answer flips between rounds"
    guide = (
        "Bands carry items from their answer at one round to their answer at the next; bands "
        "that cross between answers are items that changed their mind."
    )
    return _from_table(
        results, "flips", anchor, title, guide, answer_flips_figure, " (a run with one round has no flips)"
    )


def _uncertainty(results: RunResults) -> ReportFigure:
    anchor, title = "uncertainty", "Uncertainty and calibration error per round"
    guide = (
        "Each line is one condition's uncertainty (mean token NLL) or expected calibration "
        "error per round with its 95% band; falling lines mean the model grows surer."
    )
    absent = table_absence(results, "behaviour")
    if absent is not None:
        return _omitted(anchor, title, guide, absent)
    if not uncertainty_metrics_of(results.behaviour or ()):
        return _omitted(
            anchor,
            title,
            guide,
            "results/behaviour.csv holds none of the metrics " + ", ".join(UNCERTAINTY_METRICS),
        )
    return ReportFigure(
        anchor,
        title,
        guide,
        uncertainty_figure(results.behaviour or ()),
        undefined=undefined_rows(results.behaviour or (), set(uncertainty_metrics_of(results.behaviour or ()))),
    )


def undefined_rows(behaviour: Sequence[BehaviourMetric], metrics: set[str]) -> tuple[BehaviourMetric, ...]:
    """The rows of ``behaviour`` for ``metrics`` whose value is undefined, in file order."""
    return tuple(row for row in behaviour if row.metric in metrics and not row.defined)


def _reliability(results: RunResults) -> ReportFigure:
    anchor, title = "reliability", "Reliability diagrams"
    guide = (
        "Accuracy against mean confidence per confidence bin, one line per round; points on the "
        "dashed diagonal are perfectly calibrated, points below it are overconfident."
    )
    return _from_table(results, "calibration", anchor, title, guide, reliability_figure)


def _morality(results: RunResults) -> list[ReportFigure]:
    guide = (
        "Colour is the morality level of the hidden state per layer (y) and round (x) in each "
        "condition; the last panel shows per-layer probe accuracy beside its shuffled-label and "
        "random-direction controls, which should stay near chance."
    )
    absent = table_absence(results, "morality")
    if absent is not None:
        return [_omitted("morality", "Morality level of hidden states", guide, absent)]
    missing_scores = table_absence(results, "layer_scores")
    note = None if missing_scores is None else escape_html(f"No probe accuracy panel: {missing_scores}.")
    return [
        ReportFigure(
            f"morality-{index}",
            f"Morality level of hidden states at {escape_html(site)}",
            guide,
            morality_figure(results.morality or (), results.layer_scores or (), site=site),
            note=note,
        )
        for index, site in enumerate(morality_sites_of(results.morality or ()))
    ]


def _interactions(results: RunResults) -> ReportFigure:
    anchor, title = "interactions", "Component interactions (instruction x CoT x feedback)"
    guide = (
        "Each point is a main effect or interaction contrast with its 95% interval, on behaviour "
        "and on hidden-state morality; intervals that cross the dotted zero line are not "
        "distinguishable from no effect."
    )
    behaviour_absent = table_absence(results, "behaviour_interactions")
    hidden_absent = table_absence(results, "probe_interactions")
    if behaviour_absent is not None and hidden_absent is not None:
        return _omitted(anchor, title, guide, f"{behaviour_absent}; {hidden_absent}")
    missing = [reason for reason in (behaviour_absent, hidden_absent) if reason is not None]
    return ReportFigure(
        anchor,
        title,
        guide,
        interactions_figure(results.behaviour_interactions or (), results.probe_interactions or ()),
        note=escape_html(f"Only one side is drawn: {missing[0]}.") if missing else None,
    )


def _concept(results: RunResults) -> ReportFigure:
    anchor, title = "concept", "Latent concept vs. uncertainty"
    guide = (
        "Each point is one item at one round (colour: round); the black line is the "
        "least-squares fit, whose slope says how concept activation moves with uncertainty."
    )
    absent = table_absence(results, "concept_uncertainty")
    if absent is not None:
        return _omitted(anchor, title, guide, absent)
    concept = results.concept_uncertainty or ()
    unmeasured = len(concept) - len(measured_points(concept))
    if unmeasured == len(concept):
        return _omitted(
            anchor, title, guide, "probes/concept_uncertainty.csv has no measured uncertainty (every cell is empty)"
        )
    return ReportFigure(
        anchor,
        title,
        guide,
        concept_uncertainty_figure(concept, results.items or ()),
        note=escape_html(f"{unmeasured} of {len(concept)} records have no measured uncertainty and are not drawn.")
        if unmeasured
        else None,
    )


def _heads(results: RunResults) -> ReportFigure:
    anchor, title = "heads", "Head attribution"
    guide = (
        "Colour is each attention head's attribution effect (red raises, blue lowers the "
        "outcome); the most saturated cells are the heads to ablate first."
    )
    return _from_table(results, "heads", anchor, title, guide, head_attribution_figure)


def _bias_levels(results: RunResults) -> ReportFigure:
    anchor, title = "bias-levels", "Bias level across checkpoints"
    guide = "Bars compare each bias measure across checkpoints, with 95% intervals."
    return _from_table(results, "bias_levels", anchor, title, guide, bias_levels_figure)


def _answers(results: RunResults) -> ReportFigure:
    anchor, title = "answers", "Answers per item"
    guide = (
        "Green cells are correct answers, red ones wrong, per item (y) and round (x); hover a "
        "cell for the prompt excerpt and the answer."
    )
    return _from_table(results, "items", anchor, title, guide, item_answers_figure)
