"""One metric of one condition drawn over rounds: a line with its confidence band."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from reports.escaping import escape_text
from reports.figures.layout import translucent
from reports.tables import BehaviourMetric


def add_round_series(
    fig: go.Figure,
    points: Sequence[BehaviourMetric],
    *,
    colour: str,
    row: int,
    col: int,
    showlegend: bool,
) -> None:
    """Add the line of ``points`` (one metric, one condition) to subplot ``(row, col)``.

    A translucent band spans ``ci_low``..``ci_high`` over the rounds where both are known (no band
    when none is). The line's legend group is the condition, so one legend entry toggles the
    condition in every subplot.
    """
    ordered = sorted(points, key=lambda point: point.round)
    condition = escape_text(ordered[0].condition)
    metric = escape_text(ordered[0].metric)
    with_interval = [p for p in ordered if p.ci_low is not None and p.ci_high is not None]
    if with_interval:
        fig.add_trace(
            go.Scatter(
                x=[p.round for p in with_interval] + [p.round for p in reversed(with_interval)],
                y=[p.ci_high for p in with_interval] + [p.ci_low for p in reversed(with_interval)],
                mode="lines",
                fill="toself",
                fillcolor=translucent(colour),
                line={"width": 0},
                hoverinfo="skip",
                legendgroup=condition,
                showlegend=False,
                name=f"{condition} 95% interval",
            ),
            row=row,
            col=col,
        )
    fig.add_trace(
        go.Scatter(
            x=[p.round for p in ordered],
            y=[p.value for p in ordered],
            mode="lines+markers",
            line={"color": colour},
            name=condition,
            legendgroup=condition,
            showlegend=showlegend,
            hovertext=[
                f"{condition}<br>round {p.round}: {metric} = {p.value:.3g}"
                f"{interval_text(p.ci_low, p.ci_high)}<br>n = {p.n}"
                for p in ordered
            ],
            hoverinfo="text",
        ),
        row=row,
        col=col,
    )


def interval_text(ci_low: float | None, ci_high: float | None) -> str:
    """`` [low, high]`` for hover text, or an empty string when the interval is not known."""
    if ci_low is None or ci_high is None:
        return ""
    return f" [{ci_low:.3g}, {ci_high:.3g}]"
