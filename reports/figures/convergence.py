"""Convergence figures: behaviour per round with the convergence round, and answer flips."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from reports.escaping import plotly_text
from reports.figures.layout import category_colour, metric_rows
from reports.figures.round_series import add_round_series
from reports.figures.uncertainty import UNCERTAINTY_METRICS
from workbench.run_tables import AnswerFlip, BehaviourMetric, ConvergenceRound

SANKEY_HEIGHT = 320


def behaviour_metrics_of(behaviour: Sequence[BehaviourMetric]) -> list[str]:
    """Metrics of ``behaviour`` that are not uncertainty metrics, in order of first appearance."""
    metrics = dict.fromkeys(row.metric for row in behaviour)
    return [metric for metric in metrics if metric not in UNCERTAINTY_METRICS]


def convergence_figure(behaviour: Sequence[BehaviourMetric], convergence: Sequence[ConvergenceRound] = ()) -> go.Figure:
    """Behaviour per round: one subplot row per metric, one line (with band) per condition.

    ``behaviour`` holds the rows of ``results/behaviour.csv`` (accuracy, bias score, toxicity,
    ...; uncertainty metrics are left to :func:`uncertainty_figure`). A star marks the
    convergence round of each condition and metric listed in ``convergence``
    (``results/convergence.csv``), drawn at that round's value. An undefined value is a gap in
    its line (never a zero) and gets no star.
    """
    metrics = behaviour_metrics_of(behaviour)
    if not metrics:
        raise ValueError("behaviour table holds no behaviour metric (only uncertainty metrics)")
    conditions = list(dict.fromkeys(row.condition for row in behaviour))
    converged = {(c.condition, c.metric): c.convergence_round for c in convergence}
    fig = metric_rows(metrics)
    star_in_legend = True
    for metric_index, metric in enumerate(metrics, start=1):
        for condition_index, condition in enumerate(conditions):
            points = [r for r in behaviour if r.metric == metric and r.condition == condition]
            if not points:
                continue
            colour = category_colour(condition_index)
            add_round_series(
                fig,
                points,
                colour=colour,
                row=metric_index,
                col=1,
                showlegend=metric_index == 1,
            )
            round_ = converged.get((condition, metric))
            at_round = [p for p in points if p.round == round_ and p.value is not None]
            if at_round:
                fig.add_trace(
                    go.Scatter(
                        x=[round_],
                        y=[at_round[0].value],
                        mode="markers",
                        marker={
                            "symbol": "star",
                            "size": 16,
                            "color": colour,
                            "line": {"color": "black", "width": 1},
                        },
                        name="convergence round",
                        legendgroup="convergence round",
                        showlegend=star_in_legend,
                        hovertext=[f"{plotly_text(condition)}: {plotly_text(metric)} converged at round {round_}"],
                        hoverinfo="text",
                    ),
                    row=metric_index,
                    col=1,
                )
                star_in_legend = False
        fig.update_yaxes(title_text=plotly_text(metric), row=metric_index, col=1)
    fig.update_xaxes(title_text="round", dtick=1, row=len(metrics), col=1)
    fig.update_layout(height=280 * len(metrics) + 120, title="Behaviour per round")
    return fig


def answer_flips_figure(flips: Sequence[AnswerFlip]) -> go.Figure:
    """Answer flips between rounds: one Sankey diagram per condition, stacked vertically.

    Nodes are (round, answer) pairs of ``results/flips.csv``; a link's width is the number of
    items that moved from one answer at ``round_from`` to another (or the same) at ``round_to``.
    """
    if not flips:
        raise ValueError("flips table has no rows")
    conditions = list(dict.fromkeys(flip.condition for flip in flips))
    fig = go.Figure()
    band = 1 / len(conditions)
    for index, condition in enumerate(conditions):
        links = [flip for flip in flips if flip.condition == condition]
        sources = {(f.round_from, f.answer_from) for f in links}
        nodes = sorted(sources | {(f.round_to, f.answer_to) for f in links})
        node_index = {node: i for i, node in enumerate(nodes)}
        node_x, node_y = _node_positions(nodes)
        top = 1 - index * band
        fig.add_trace(
            go.Sankey(
                domain={"x": [0, 1], "y": [top - band + 0.02 * band, top - 0.14 * band]},
                arrangement="fixed",
                node={
                    "label": [f"round {r}: {plotly_text(answer)}" for r, answer in nodes],
                    "x": node_x,
                    "y": node_y,
                    "pad": 12,
                },
                link={
                    "source": [node_index[(f.round_from, f.answer_from)] for f in links],
                    "target": [node_index[(f.round_to, f.answer_to)] for f in links],
                    "value": [f.count for f in links],
                },
                name=plotly_text(condition),
            )
        )
        fig.add_annotation(
            text=plotly_text(condition),
            x=0.5,
            y=top - 0.12 * band,
            xref="paper",
            yref="paper",
            showarrow=False,
            yanchor="bottom",
        )
    fig.update_layout(height=SANKEY_HEIGHT * len(conditions) + 80, title="Answer flips between rounds")
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
