"""Convergence figures: behaviour per round with the convergence round, and answer flips."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from reports.escaping import plotly_text
from reports.figures.round_series import add_round_series
from reports.figures.style import (
    ConditionStyle,
    export_height,
    grid_position,
    metric_panels,
    subplot_grid,
)
from reports.figures.uncertainty import UNCERTAINTY_METRICS
from workbench.run_tables import AnswerFlip, BehaviourMetric, ConvergenceRound

SANKEY_HEIGHT = 300
SANKEY_COLUMNS = 2

HEADLINE_METRICS = ("accuracy", "bias_score_ambiguous", "bias_score_disambiguated", "toxicity")
"""The metrics the research questions ask about, drawn (and summarised) first."""

DIAGNOSTIC_METRICS = ("unparsed_rate", "flip_rate")
"""Metrics that describe the answers rather than the behaviour, drawn last."""

NO_CONVERGENCE_MARK = ("unparsed_rate",)
"""Metrics whose convergence round means nothing (a rate of answers that did not parse): never starred."""


def _metric_rank(metric: str) -> int:
    name = metric.rpartition("/")[2]
    if name in HEADLINE_METRICS:
        return HEADLINE_METRICS.index(name)
    return len(HEADLINE_METRICS) + 1 if name in DIAGNOSTIC_METRICS else len(HEADLINE_METRICS)


def behaviour_metrics_of(behaviour: Sequence[BehaviourMetric]) -> list[str]:
    """Metrics of ``behaviour`` that are not uncertainty metrics: :data:`HEADLINE_METRICS` first, then
    the others in order of first appearance, :data:`DIAGNOSTIC_METRICS` last."""
    metrics = [metric for metric in dict.fromkeys(row.metric for row in behaviour) if metric not in UNCERTAINTY_METRICS]
    return sorted(metrics, key=_metric_rank)  # stable: first appearance within a rank


def marks_convergence(metric: str, convergence_round: int | None) -> bool:
    """Whether the figure stars this convergence round: a round after the first, of a metric where it means something.

    Round 0 means the metric never changed by more than the tolerance (said in hover text and the
    summary, not starred); :data:`NO_CONVERGENCE_MARK` metrics are never starred.
    """
    return (
        convergence_round is not None and convergence_round > 0 and metric.rpartition("/")[2] not in NO_CONVERGENCE_MARK
    )


def convergence_figure(
    behaviour: Sequence[BehaviourMetric],
    convergence: Sequence[ConvergenceRound] = (),
    *,
    conditions: Sequence[str] | None = None,
) -> go.Figure:
    """Behaviour per round: compact small multiples, one panel per metric, one line (with band) per condition.

    ``behaviour`` holds the rows of ``results/behaviour.csv`` (accuracy, bias score, toxicity,
    ...; uncertainty metrics are left to :func:`uncertainty_figure`), panels in
    :func:`behaviour_metrics_of` order, three to a row. ``conditions`` is the run's condition list
    (colours; default: those of ``behaviour``). A star marks the convergence round of each condition
    and metric listed in ``convergence`` (``results/convergence.csv``) where
    :func:`marks_convergence` says it means something, drawn at that round's value. An undefined
    value is a gap in its line (never a zero) and gets no star.
    """
    metrics = behaviour_metrics_of(behaviour)
    if not metrics:
        raise ValueError("behaviour table holds no behaviour metric (only uncertainty metrics)")
    style = ConditionStyle.of((row.condition for row in behaviour), conditions)
    present = style.ordered(row.condition for row in behaviour)
    converged = {(c.condition, c.metric): c.convergence_round for c in convergence}
    grid = metric_panels(metrics)
    fig = grid.figure
    star_in_legend = True
    for metric_index, metric in enumerate(metrics):
        row, col = grid.position(metric_index)
        for condition in present:
            points = [r for r in behaviour if r.metric == metric and r.condition == condition]
            if not points:
                continue
            add_round_series(fig, points, style=style, row=row, col=col, showlegend=metric_index == 0)
            round_ = converged.get((condition, metric))
            at_round = [p for p in points if p.round == round_ and p.value is not None]
            if at_round and marks_convergence(metric, round_):
                fig.add_trace(
                    go.Scatter(
                        x=[round_],
                        y=[at_round[0].value],
                        mode="markers",
                        marker={
                            "symbol": "star",
                            "size": 13,
                            "color": style.colour(condition),
                            "line": {"color": "black", "width": 1},
                        },
                        name="convergence round",
                        legendgroup="convergence round",
                        showlegend=star_in_legend,
                        hovertext=[
                            f"{style.hover(condition)}<br>{plotly_text(metric)} stops changing from round {round_}"
                        ],
                        hoverinfo="text",
                    ),
                    row=row,
                    col=col,
                )
                star_in_legend = False
        fig.update_xaxes(dtick=1, row=row, col=col)
        if grid.is_bottom(metric_index, len(metrics)):
            fig.update_xaxes(title_text="round", row=row, col=col)
    grid.lay_out("Behaviour per round")
    return fig


def answer_flips_figure(flips: Sequence[AnswerFlip], *, conditions: Sequence[str] | None = None) -> go.Figure:
    """Answer flips between rounds: one Sankey diagram per condition, two to a row.

    Nodes are (round, answer) pairs of ``results/flips.csv``; a link's width is the number of
    items that moved from one answer at ``round_from`` to another (or the same) at ``round_to``.
    Diagrams are titled by the condition's human label, in the order of ``conditions`` (the run's
    condition list; default: those of ``flips``).
    """
    if not flips:
        raise ValueError("flips table has no rows")
    style = ConditionStyle.of((flip.condition for flip in flips), conditions)
    present = style.ordered(flip.condition for flip in flips)
    rows, columns = subplot_grid(len(present), SANKEY_COLUMNS)
    fig = go.Figure()
    band = 1 / rows
    for index, condition in enumerate(present):
        row, col = grid_position(index, columns)
        links = [flip for flip in flips if flip.condition == condition]
        sources = {(f.round_from, f.answer_from) for f in links}
        nodes = sorted(sources | {(f.round_to, f.answer_to) for f in links})
        node_index = {node: i for i, node in enumerate(nodes)}
        node_x, node_y = _node_positions(nodes)
        top = 1 - (row - 1) * band
        left, width = (col - 1) / columns, 1 / columns
        fig.add_trace(
            go.Sankey(
                domain={
                    "x": [left + 0.02 * width, left + 0.98 * width],
                    "y": [top - band + 0.02 * band, top - 0.2 * band],
                },
                arrangement="fixed",
                node={
                    "label": [f"round {r}: {plotly_text(answer)}" for r, answer in nodes],
                    "x": node_x,
                    "y": node_y,
                    "pad": 10,
                    "color": style.colour(condition),
                },
                link={
                    "source": [node_index[(f.round_from, f.answer_from)] for f in links],
                    "target": [node_index[(f.round_to, f.answer_to)] for f in links],
                    "value": [f.count for f in links],
                },
                name=style.label(condition),
            )
        )
        fig.add_annotation(
            text=style.label(condition),
            hovertext=plotly_text(condition),
            x=left + width / 2,
            y=top - 0.17 * band,
            xref="paper",
            yref="paper",
            showarrow=False,
            xanchor="center",
            yanchor="bottom",
        )
    fig.update_layout(
        height=export_height(SANKEY_HEIGHT * rows + 80),
        title="Answer flips between rounds",
        margin={"t": 60, "b": 20, "l": 20, "r": 20},
    )
    return fig


def _node_positions(nodes: list[tuple[int, str]]) -> tuple[list[float], list[float]]:
    """Sankey node centres in (0, 1): one column per round (left to right), answers stacked
    top to bottom in sorted order within their round's column."""
    rounds = sorted({round_ for round_, _ in nodes})
    column = {round_: i for i, round_ in enumerate(rounds)}
    per_round = {round_: [answer for r, answer in nodes if r == round_] for round_ in rounds}
    x = [0.01 + 0.98 * column[r] / max(1, len(rounds) - 1) for r, _ in nodes]
    y = [0.01 + 0.98 * (per_round[r].index(answer) + 0.5) / len(per_round[r]) for r, answer in nodes]
    return x, y
