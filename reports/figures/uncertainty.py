"""Uncertainty figures: entropy and calibration error per round, and reliability diagrams."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from reports.figures.round_series import add_round_series
from reports.figures.style import (
    ConditionStyle,
    condition_panels,
    metric_panels,
    round_colours,
)
from workbench.run_tables import BehaviourMetric, CalibrationBin

# Metric names of results/behaviour.csv that measure the model's uncertainty rather than its
# behaviour: semantic entropy / mean token NLL and expected calibration error.
UNCERTAINTY_METRICS = ("uncertainty", "entropy", "ece", "calibration_error")


def uncertainty_metrics_of(behaviour: Sequence[BehaviourMetric]) -> list[str]:
    """The uncertainty metrics present in ``behaviour``, in :data:`UNCERTAINTY_METRICS` order."""
    present = {row.metric for row in behaviour}
    return [metric for metric in UNCERTAINTY_METRICS if metric in present]


def uncertainty_figure(behaviour: Sequence[BehaviourMetric], *, conditions: Sequence[str] | None = None) -> go.Figure:
    """Uncertainty metrics per round: small multiples, one panel per metric, one line per condition.

    ``behaviour`` holds the rows of ``results/behaviour.csv``; only the metrics of
    :data:`UNCERTAINTY_METRICS` are drawn (at least one must be present). ``conditions`` is the
    run's condition list (colours). An undefined value is a gap in its line, never a zero.
    """
    metrics = uncertainty_metrics_of(behaviour)
    if not metrics:
        raise ValueError("behaviour table holds none of the uncertainty metrics " + ", ".join(UNCERTAINTY_METRICS))
    style = ConditionStyle.of((row.condition for row in behaviour), conditions)
    present = style.ordered(row.condition for row in behaviour if row.metric in metrics)
    grid = metric_panels(metrics)
    fig = grid.figure
    for metric_index, metric in enumerate(metrics):
        row, col = grid.position(metric_index)
        for condition in present:
            points = [r for r in behaviour if r.metric == metric and r.condition == condition]
            if points:
                add_round_series(fig, points, style=style, row=row, col=col, showlegend=metric_index == 0)
        fig.update_xaxes(dtick=1, row=row, col=col)
        if grid.is_bottom(metric_index, len(metrics)):
            fig.update_xaxes(title_text="round", row=row, col=col)
    grid.lay_out("Uncertainty per round")
    return fig


def reliability_figure(calibration: Sequence[CalibrationBin], *, conditions: Sequence[str] | None = None) -> go.Figure:
    """Reliability diagrams: one panel per condition (titled by its human label), one line per round.

    Each point is one confidence bin of ``results/calibration.csv``: mean confidence (x) against
    accuracy (y), both in [0, 1]; the dashed diagonal is perfect calibration. Panels follow
    ``conditions`` (the run's condition list; default: those of ``calibration``).
    """
    if not calibration:
        raise ValueError("calibration table has no rows")
    style = ConditionStyle.of((row.condition for row in calibration), conditions)
    present = style.ordered(row.condition for row in calibration)
    rounds = sorted({row.round for row in calibration})
    colours = dict(zip(rounds, round_colours(len(rounds))))
    grid = condition_panels(present, panel_height=260)
    fig = grid.figure
    for index, condition in enumerate(present):
        row, col = grid.position(index)
        fig.add_trace(
            go.Scatter(
                x=[0, 1],
                y=[0, 1],
                mode="lines",
                line={"dash": "dash", "color": "grey"},
                name="perfect calibration",
                legendgroup="perfect calibration",
                showlegend=index == 0,
                hoverinfo="skip",
            ),
            row=row,
            col=col,
        )
        for round_ in rounds:
            bins = sorted(
                (b for b in calibration if b.condition == condition and b.round == round_),
                key=lambda b: b.bin_low,
            )
            if not bins:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[b.mean_confidence for b in bins],
                    y=[b.accuracy for b in bins],
                    mode="lines+markers",
                    line={"color": colours[round_]},
                    marker={"size": 5},
                    name=f"round {round_}",
                    legendgroup=f"round {round_}",
                    showlegend=index == 0,
                    hovertext=[
                        f"{style.hover(condition)}<br>round {round_}, "
                        f"bin [{b.bin_low:.2f}, {b.bin_high:.2f}): confidence "
                        f"{b.mean_confidence:.3f}, accuracy {b.accuracy:.3f}, {b.count} items"
                        for b in bins
                    ],
                    hoverinfo="text",
                ),
                row=row,
                col=col,
            )
        fig.update_xaxes(range=[0, 1], row=row, col=col)
        fig.update_yaxes(range=[0, 1], row=row, col=col)
        if grid.is_bottom(index, len(present)):
            fig.update_xaxes(title_text="mean confidence", row=row, col=col)
        if col == 1:
            fig.update_yaxes(title_text="accuracy", row=row, col=col)
    grid.lay_out("Reliability diagrams")
    return fig
