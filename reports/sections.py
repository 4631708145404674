"""The report's figures chosen from a run's tables, each with its reading guide or the reason
it is left out.

Every figure that shows conditions gets the run's condition list (:attr:`RunResults.conditions`),
so that a condition has the same colour, and the same place, in every figure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from reports.escaping import escape_html
from reports.figures import (
    answer_flips_figure,
    bbq_categories_figure,
    bias_levels_figure,
    concept_uncertainty_figure,
    convergence_figure,
    head_attribution_figure,
    interactions_figure,
    item_answers_figure,
    layer_profile_figure,
    morality_figure,
    paired_tests_figure,
    reliability_figure,
    selected_heads_figure,
    steering_figure,
    uncertainty_figure,
)
from reports.figures.answers import MAX_ITEMS
from reports.figures.categories import BIAS_METRICS
from reports.figures.concept import MAX_POINTS, measured_points
from reports.figures.convergence import NO_CONVERGENCE_MARK, behaviour_metrics_of
from reports.figures.morality import morality_sites_of, site_measure
from reports.figures.sampling import SAMPLE_SEED
from reports.figures.uncertainty import UNCERTAINTY_METRICS, uncertainty_metrics_of
from reports.run_results import RunResults
from workbench.run_tables import BehaviourMetric


@dataclass(frozen=True)
class ReportFigure:
    """One entry of the report: a figure and how to read it, or why it is left out.

    ``title``, ``reading_guide``, ``note`` and ``omitted_because`` are HTML-safe (escaped)
    strings. Exactly one of ``figure`` and ``omitted_because`` is set; ``note`` says what part
    of a drawn figure is missing, if any. ``undefined`` holds the drawn rows whose value is
    undefined (gaps in the figure), which the page lists with their reasons. ``subject`` is
    what the figure is of when the report has several of its kind (a morality figure's site).
    """

    anchor: str
    title: str
    reading_guide: str
    figure: go.Figure | None = None
    omitted_because: str | None = None
    note: str | None = None
    undefined: tuple[BehaviourMetric, ...] = ()
    subject: str | None = None


def report_figures(results: RunResults) -> list[ReportFigure]:
    """Every figure of the report, in reading order, drawn from ``results`` where possible."""
    return [
        _convergence(results),
        _paired_tests(results),
        _bbq_categories(results),
        _flips(results),
        _uncertainty(results),
        _reliability(results),
        *_layer_profiles(results),
        *_morality(results),
        _interactions(results),
        _concept(results),
        _steering(results),
        _heads(results),
        _selected_heads(results),
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
    absent = results.absence(table)
    if absent is not None:
        return _omitted(anchor, title, guide, absent + why_absent)
    return ReportFigure(anchor, title, guide, draw(getattr(results, table)))


def _convergence(results: RunResults) -> ReportFigure:
    anchor, title = "convergence", "Behaviour per round and convergence"
    guide = (
        "One panel per metric (accuracy, bias scores, toxicity first); each line is one condition per round "
        "with its 95% band. A star marks the round from which the metric stops changing, when that is after "
        f"round 0 (round 0 means it never changed; {', '.join(NO_CONVERGENCE_MARK)} is never starred)."
    )
    absent = results.absence("behaviour")
    if absent is not None:
        return _omitted(anchor, title, guide, absent)
    if not behaviour_metrics_of(results.behaviour or ()):
        return _omitted(anchor, title, guide, "results/behaviour.csv holds only uncertainty metrics")
    missing_rounds = results.absence("convergence")
    metrics = set(behaviour_metrics_of(results.behaviour or ()))
    return ReportFigure(
        anchor,
        title,
        guide,
        convergence_figure(results.behaviour or (), results.convergence or (), conditions=results.conditions),
        note=None if missing_rounds is None else escape_html(f"No convergence round is marked: {missing_rounds}."),
        undefined=undefined_rows(results.behaviour or (), metrics),
    )


def _paired_tests(results: RunResults) -> ReportFigure:
    anchor, title = "paired-tests", "Paired tests between conditions"
    guide = (
        "Each row is a pair of conditions one factor apart (later minus earlier condition: instructed minus "
        "no instruction, CoT minus no CoT, ...), each marker one round's mean difference on the items both "
        "answered, with its 95% bootstrap interval; markers whose interval crosses the dotted zero line are "
        "not distinguishable from no difference. Hover for the sign-flip p-value and n; every pair is in "
        "results/paired_tests.csv."
    )
    return _from_table(
        results,
        "paired_tests",
        anchor,
        title,
        guide,
        lambda rows: paired_tests_figure(rows, conditions=results.conditions),
        " (a run with one condition has no paired tests)",
    )


def _bbq_categories(results: RunResults) -> ReportFigure:
    anchor, title = "bbq-categories", "BBQ bias score per category"
    guide = (
        "Bias scores per BBQ category as BBQ's authors compute them (ambiguous and disambiguated contexts), "
        "one marker per condition with its 95% interval; 'all' pools every category, '(names)' rows are the "
        "proper-name templates. 0 is no bias; the buttons switch rounds (the last round is shown first)."
    )
    absent = results.absence("bbq_categories")
    if absent is not None:
        return _omitted(anchor, title, guide, absent)
    rows = results.bbq_categories or ()
    if not any(row.metric in BIAS_METRICS for row in rows):
        return _omitted(anchor, title, guide, "results/bbq_categories.csv has no bias score rows")
    return ReportFigure(anchor, title, guide, bbq_categories_figure(rows, conditions=results.conditions))


def _flips(results: RunResults) -> ReportFigure:
    anchor, title = "flips", "Answer flips between rounds"
    guide = (
        "Bands carry items from their answer at one round to their answer at the next; bands "
        "that cross between answers are items that changed their mind."
    )
    return _from_table(
        results,
        "flips",
        anchor,
        title,
        guide,
        lambda rows: answer_flips_figure(rows, conditions=results.conditions),
        " (a run with one round has no flips)",
    )


def _uncertainty(results: RunResults) -> ReportFigure:
    anchor, title = "uncertainty", "Uncertainty and calibration error per round"
    guide = (
        "Each line is one condition's uncertainty (mean token NLL) or expected calibration "
        "error per round with its 95% band; falling lines mean the model grows surer."
    )
    absent = results.absence("behaviour")
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
        uncertainty_figure(results.behaviour or (), conditions=results.conditions),
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
    return _from_table(
        results,
        "calibration",
        anchor,
        title,
        guide,
        lambda rows: reliability_figure(rows, conditions=results.conditions),
    )


def _layer_profiles(results: RunResults) -> list[ReportFigure]:
    """One layer profile per site of ``probes/morality.csv`` whose measure has more than one layer."""
    guide = (
        "As in the papers' figures: morality of the hidden state (y) per layer (x), one line per round "
        "(dark: round 0, light: the last round), one panel per condition, the y axis shared. The first and "
        "last rounds carry their 95% bands; hover any point for its interval and n."
    )
    absent = results.absence("morality")
    if absent is not None:
        return [_omitted("layer-profile", "Layer profile of hidden-state morality", guide, absent)]
    morality = results.morality or ()
    entries = []
    for index, site in enumerate(morality_sites_of(morality)):
        _, _, levels = site_measure(morality, site, "probe_probability")
        if len({row.layer for row in levels}) < 2:
            continue  # a layer-band measure: one value per round, drawn in the morality figure
        entries.append(
            ReportFigure(
                f"layer-profile-{index}",
                f"Layer profile of hidden-state morality at {escape_html(site)}",
                guide,
                layer_profile_figure(morality, site=site, conditions=results.conditions),
                subject=site,
            )
        )
    return entries


def _morality(results: RunResults) -> list[ReportFigure]:
    guide = (
        "Colour is the morality level of the hidden state per layer (y) and round (x) in each "
        "condition; the last panel shows per-layer probe accuracy beside its shuffled-label and "
        "random-direction controls, which should stay near chance."
    )
    absent = results.absence("morality")
    if absent is not None:
        return [_omitted("morality", "Morality level of hidden states", guide, absent)]
    missing_scores = results.absence("layer_scores")
    note = None if missing_scores is None else escape_html(f"No probe accuracy panel: {missing_scores}.")
    return [
        ReportFigure(
            f"morality-{index}",
            f"Morality level of hidden states at {escape_html(site)}",
            guide,
            morality_figure(
                results.morality or (), results.layer_scores or (), site=site, conditions=results.conditions
            ),
            note=note,
            subject=site,
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
    behaviour_absent = results.absence("behaviour_interactions")
    hidden_absent = results.absence("probe_interactions")
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
        "least-squares fit, whose slope says how concept activation moves with uncertainty. "
        f"A run with more than {MAX_POINTS} points draws a random sample of {MAX_POINTS} (seed {SAMPLE_SEED}); "
        "the fits use every point."
    )
    absent = results.absence("concept_uncertainty")
    if absent is not None:
        return _omitted(anchor, title, guide, absent)
    concept = results.concept_uncertainty or ()
    measured = measured_points(concept)
    unmeasured = len(concept) - len(measured)
    if unmeasured == len(concept):
        return _omitted(
            anchor, title, guide, "probes/concept_uncertainty.csv has no measured uncertainty (every cell is empty)"
        )
    notes = []
    if unmeasured:
        notes.append(f"{unmeasured} of {len(concept)} records have no measured uncertainty and are not drawn.")
    if len(measured) > MAX_POINTS:
        notes.append(
            f"Drawn: a random sample of {MAX_POINTS} of the {len(measured)} measured points (seed {SAMPLE_SEED}, "
            "the same on every build); probes/concept_uncertainty.csv has them all."
        )
    return ReportFigure(
        anchor,
        title,
        guide,
        concept_uncertainty_figure(concept, results.items or (), conditions=results.conditions),
        note=escape_html(" ".join(notes)) if notes else None,
    )


def _steering(results: RunResults) -> ReportFigure:
    anchor, title = "steering", "Steering: probe direction vs. random direction"
    guide = (
        "Each panel is one property of the answer options per steering multiple alpha (0: unsteered); solid "
        "lines add the probe's direction, dashed grey lines a random direction of the same norm. A probe line "
        "that moves while the random one stays flat says the answers depend on the probe's direction."
    )
    return _from_table(
        results,
        "steering",
        anchor,
        title,
        guide,
        steering_figure,
        " (set [probe] steering = true to write it)",
    )


def _heads(results: RunResults) -> ReportFigure:
    anchor, title = "heads", "Head attribution"
    guide = (
        "Colour is each attention head's attribution effect (red raises, blue lowers the "
        "outcome); the most saturated cells are the heads to ablate first."
    )
    return _from_table(results, "heads", anchor, title, guide, head_attribution_figure)


def _selected_heads(results: RunResults) -> ReportFigure:
    anchor, title = "selected-heads", "Heads selected for debiasing"
    guide = (
        "Each row is a head whose |effect| fell from the base to the debiased checkpoint, the largest drop on "
        "top: the filled marker is its effect before, the open marker after (logits); the drop weighs its "
        "ProSocialTuning penalty."
    )
    return _from_table(
        results,
        "selected_heads",
        anchor,
        title,
        guide,
        selected_heads_figure,
        " (run `workbench attribute` with a debiased checkpoint)",
    )


def _bias_levels(results: RunResults) -> ReportFigure:
    anchor, title = "bias-levels", "Bias level across checkpoints"
    guide = "Bars compare each bias measure across checkpoints, with 95% intervals."
    return _from_table(results, "bias_levels", anchor, title, guide, bias_levels_figure)


def _answers(results: RunResults) -> ReportFigure:
    anchor, title = "answers", "Answers per item"
    guide = (
        "Green cells are correct answers, red ones wrong, per item (y) and round (x); hover a "
        f"cell for the prompt excerpt and the answer. A run with more than {MAX_ITEMS} items draws a random "
        f"sample of {MAX_ITEMS} of them (seed {SAMPLE_SEED}, the same on every build)."
    )
    absent = results.absence("items")
    if absent is not None:
        return _omitted(anchor, title, guide, absent)
    items = results.items or ()
    n_items = len({item.item_id for item in items})
    note = (
        escape_html(
            f"Drawn: a random sample of {MAX_ITEMS} of the {n_items} items (seed {SAMPLE_SEED}); "
            "results/items.csv has every answer."
        )
        if n_items > MAX_ITEMS
        else None
    )
    return ReportFigure(anchor, title, guide, item_answers_figure(items, conditions=results.conditions), note=note)
