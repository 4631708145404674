"""Uncertainty figures: entropy and calibration error per round, and reliability diagrams."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from reports.escaping import plotly_text
from reports.figures.layout import category_colour, metric_rows, panel_grid, round_colours
from reports.figures.round_series import add_round_series
from workbench.run_tables import BehaviourMetric, CalibrationBin

# Metric names of results/behaviour.csv that measure the model's uncertainty rather than its
# behaviour: semantic entropy / mean token NLL and expected calibration error.
UNCERTAINTY_METRICS = ("uncertainty", "entropy", "ece", "calibration_error")


def uncertainty_metrics_of(behaviour: Sequence[BehaviourMetric]) -> list[str]:
    """The uncertainty metrics present in ``behaviour``, in :data:`UNCERTAINTY_METRICS` order."""
    present = {row.metric for row in behaviour}
    return [metric for metric in UNCERTAINTY_METRICS if metric in present]


def uncertainty_figure(behaviour: Sequence[BehaviourMetric]) -> go.Figure:
    """Uncertainty metrics per round: one subplot row per metric, one line per condition.

    ``behaviour`` holds the rows of ``results/behaviour.csv``; only the metrics of
    :data:`UNCERTAINTY_METRICS` are drawn (at least one must be present). An undefined value is a
    gap in its line, never a zero.
    """
    metrics = uncertainty_metrics_of(behaviour)
    if not metrics:
        raise ValueError("behaviour table holds none of the uncertainty metrics " + ", ".join(UNCERTAINTY_METRICS))
    conditions = list(dict.fromkeys(row.condition for row in behaviour))
    fig = metric_rows(metrics)
    for metric_index, metric in enumerate(metrics, start=1):
        for condition_index, condition in enumerate(conditions):
            points = [r for r in behaviour if r.metric == metric and r.condition == condition]
            if points:
                add_round_series(
                    fig,
                    points,
                    colour=category_colour(condition_index),
                    row=metric_index,
                    col=1,
                    showlegend=metric_index == 1,
                )
        fig.update_yaxes(title_text=plotly_text(metric), row=metric_index, col=1)
    fig.update_xaxes(title_text="round", dtick=1, row=len(metrics), col=1)
    fig.update_layout(height=280 * len(metrics) + 120, title="Uncertainty per round")
    return fig


def reliability_figure(calibration: Sequence[CalibrationBin]) -> go.Figure:
    """Reliability diagrams: one panel per condition, one line per round.

    Each point is one confidence bin of ``results/calibration.csv``: mean confidence (x) against
    accuracy (y), both in [0, 1]; the dashed diagonal is perfect calibration.
    """
    if not calibration:
        raise ValueError("calibration table has no rows")
    conditions = list(dict.fromkeys(row.condition for row in calibration))
    rounds = sorted({row.round for row in calibration})
    colours = dict(zip(rounds, round_colours(len(rounds))))
    grid = panel_grid(
        [plotly_text(condition) for condition in conditions], max_columns=3, panel_height=360, horizontal_spacing=0.06
    )
    fig, height = grid.figure, grid.height
    for index, condition in enumerate(conditions):
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
                    name=f"round {round_}",
                    legendgroup=f"round {round_}",
                    showlegend=index == 0,
                    hovertext=[
                        f"{plotly_text(condition)}, round {round_}<br>"
                        f"bin [{b.bin_low:.2f}, {b.bin_high:.2f}): confidence "
                        f"{b.mean_confidence:.3f}, accuracy {b.accuracy:.3f}, {b.count} items"
                        for b in bins
                    ],
                    hoverinfo="text",
                ),
                row=row,
                col=col,
            )
        fig.update_xaxes(title_text="mean confidence", range=[0, 1], row=row, col=col)
        fig.update_yaxes(title_text="accuracy", range=[0, 1], row=row, col=col)
    fig.update_layout(height=height, title="Reliability diagrams")
    return fig
