"""Latent concept activation against uncertainty, item by item, over rounds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from reports.escaping import item_hover_text, plotly_text
from reports.figures.sampling import SAMPLE_SEED, sample_rows
from reports.figures.style import (
    ConditionStyle,
    condition_panels,
    round_colours,
)
from workbench.run_tables import ConceptUncertainty, ItemAnswer

MAX_POINTS = 2000
"""Most item x round points the figure draws; a larger table is drawn as a seeded random sample."""


def least_squares_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float] | None:
    """``(slope, intercept)`` of the least-squares line through the points, ``None`` when the
    ``x`` values do not vary (fewer than two distinct values)."""
    if len(set(x)) < 2:
        return None
    slope, intercept = np.polyfit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 1)
    return float(slope), float(intercept)


def concept_uncertainty_figure(
    concept: Sequence[ConceptUncertainty],
    items: Sequence[ItemAnswer] = (),
    *,
    conditions: Sequence[str] | None = None,
    max_points: int = MAX_POINTS,
    seed: int = SAMPLE_SEED,
) -> go.Figure:
    """Concept activation (y) against uncertainty (x): one panel per condition.

    Points are the item x round rows of ``probes/concept_uncertainty.csv``, coloured by round;
    the black line is the least-squares fit over all rounds of the panel, fitted on every measured
    row. At most ``max_points`` rows are drawn: a larger table is drawn as a random sample of that
    many rows (``seed``; the same rows on every build), which the title says. Hover text shows the
    item's prompt excerpt and answer from ``results/items.csv`` when ``items`` has them. Rows whose
    uncertainty was not measured (``None``) have no x and are left out; at least one row must have it.
    Panels are titled by the condition's human label, in the order of ``conditions`` (the run's list).
    """
    if not concept:
        raise ValueError("concept_uncertainty table has no rows")
    concept = measured_points(concept)
    if not concept:
        raise ValueError("concept_uncertainty table has no row with a measured uncertainty")
    drawn = sample_rows(concept, max_points, seed)
    drawn_keys = {(p.item_id, p.condition, p.round) for p in drawn}
    answers = {(a.item_id, a.condition, a.round): a for a in items if (a.item_id, a.condition, a.round) in drawn_keys}
    style = ConditionStyle.of((row.condition for row in concept), conditions)
    present = style.ordered(row.condition for row in concept)
    rounds = sorted({row.round for row in concept})
    colours = dict(zip(rounds, round_colours(len(rounds))))
    grid = condition_panels(present, panel_height=280, gap_px=100)
    fig = grid.figure
    fit_in_legend = True
    for index, condition in enumerate(present):
        row, col = grid.position(index)
        points = [p for p in concept if p.condition == condition]
        shown = [p for p in drawn if p.condition == condition]
        for round_ in rounds:
            at_round = [p for p in shown if p.round == round_]
            if not at_round:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[p.uncertainty for p in at_round],
                    y=[p.concept_activation for p in at_round],
                    mode="markers",
                    marker={"color": colours[round_], "size": 6, "opacity": 0.7},
                    name=f"round {round_}",
                    legendgroup=f"round {round_}",
                    showlegend=index == 0,
                    hovertext=[_point_hover(p, answers) for p in at_round],
                    hoverinfo="text",
                ),
                row=row,
                col=col,
            )
        uncertainties = [p.uncertainty for p in points if p.uncertainty is not None]  # all: points are measured
        fit = least_squares_line(uncertainties, [p.concept_activation for p in points])
        if fit is not None:
            slope, intercept = fit
            x_range = [min(uncertainties), max(uncertainties)]
            fig.add_trace(
                go.Scatter(
                    x=x_range,
                    y=[slope * x + intercept for x in x_range],
                    mode="lines",
                    line={"color": "black"},
                    name="least-squares fit",
                    legendgroup="least-squares fit",
                    showlegend=fit_in_legend,
                    hovertext=(
                        f"{style.hover(condition)}<br>slope {slope:.3g}, intercept {intercept:.3g}, "
                        f"fitted on {len(points)} points"
                    ),
                    hoverinfo="text",
                ),
                row=row,
                col=col,
            )
            fit_in_legend = False
        if grid.is_bottom(index, len(present)):
            fig.update_xaxes(title_text="uncertainty (mean token NLL)", row=row, col=col)
        if col == 1:
            fig.update_yaxes(title_text="concept activation (cosine)", row=row, col=col)
    title = "Latent concept vs. uncertainty"
    if len(drawn) < len(concept):
        title += f" (a random sample of {len(drawn)} of {len(concept)} points, seed {seed}; fits use all)"
    grid.lay_out(title)
    return fig


def measured_points(concept: Sequence[ConceptUncertainty]) -> list[ConceptUncertainty]:
    """The rows of ``concept`` whose uncertainty was measured, in order."""
    return [point for point in concept if point.uncertainty is not None]


def _point_hover(point: ConceptUncertainty, answers: dict[tuple[str, str, int], ItemAnswer]) -> str:
    values = f"uncertainty {point.uncertainty:.3g}, concept activation {point.concept_activation:.3g}"
    answer = answers.get((point.item_id, point.condition, point.round))
    if answer is None:
        condition = ConditionStyle.hover(point.condition)
        return f"item {plotly_text(point.item_id)}<br>{condition}, round {point.round}<br>{values}"
    return f"{item_hover_text(answer)}<br>{values}"
