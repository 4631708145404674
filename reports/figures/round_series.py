"""One metric of one condition drawn over rounds: a line with its confidence band."""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go

from reports.escaping import plotly_text
from reports.figures.style import ConditionStyle, translucent
from workbench.run_tables import BehaviourMetric


def add_round_series(
    fig: go.Figure,
    points: Sequence[BehaviourMetric],
    *,
    style: ConditionStyle,
    row: int,
    col: int,
    showlegend: bool,
) -> None:
    """Add the line of ``points`` (one metric, one condition) to subplot ``(row, col)``.

    The line takes the condition's colour and human label from ``style``; its hover text names the
    condition (label and raw name), the round, the value with its interval and ``n``. A translucent
    band spans ``ci_low``..``ci_high`` over each run of consecutive rounds where both are known (no
    band when none is). An undefined value (``value`` ``None``) is a gap in the line and in the band,
    never a zero; it is listed with its reason under the figure (see :mod:`reports.sections`). The
    line's legend group is the condition, so one legend entry toggles the condition in every subplot.
    """
    ordered = sorted(points, key=lambda point: point.round)
    name = ordered[0].condition
    condition = plotly_text(name)
    colour = style.colour(name)
    metric = plotly_text(ordered[0].metric)
    band_x, band_y = band_polygons(ordered)
    if band_x:
        fig.add_trace(
            go.Scatter(
                x=band_x,
                y=band_y,
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
            line={"color": colour, "width": 2},
            marker={"size": 5},
            connectgaps=False,
            name=style.label(name),
            legendgroup=condition,
            showlegend=showlegend,
            hovertext=[
                f"{style.hover(name)}<br>round {p.round}: {metric} = {plotly_text(p.value_text())}"
                f"{interval_text(p.ci_low, p.ci_high)}<br>n = {p.n}"
                for p in ordered
            ],
            hoverinfo="text",
        ),
        row=row,
        col=col,
    )


def band_polygons(points: Sequence[BehaviourMetric]) -> tuple[list[int | None], list[float | None]]:
    """``x``, ``y`` of the confidence band of ``points`` (ordered by round) for a ``fill="toself"`` trace.

    One closed polygon (``ci_high`` forwards, then ``ci_low`` backwards) per run of consecutive
    points with a known interval; runs are separated by ``None`` so that plotly fills each apart
    and an undefined value or a missing interval breaks the band. Empty lists when no point has an
    interval.
    """
    runs: list[list[BehaviourMetric]] = [[]]
    for point in points:
        if point.ci_low is not None and point.ci_high is not None:
            runs[-1].append(point)
        elif runs[-1]:
            runs.append([])
    x: list[int | None] = []
    y: list[float | None] = []
    for run in (r for r in runs if r):
        if x:
            x.append(None)
            y.append(None)
        x += [p.round for p in run] + [p.round for p in reversed(run)]
        y += [p.ci_high for p in run] + [p.ci_low for p in reversed(run)]
    return x, y


def interval_text(ci_low: float | None, ci_high: float | None) -> str:
    """`` [low, high]`` for hover text, or an empty string when the interval is not known."""
    if ci_low is None or ci_high is None:
        return ""
    return f" [{ci_low:.3g}, {ci_high:.3g}]"


def interval_error_bars(
    values: Sequence[float], lows: Sequence[float | None], highs: Sequence[float | None]
) -> dict[str, object]:
    """plotly ``error_x`` / ``error_y`` of asymmetric intervals around ``values``, in their unit.

    A point whose interval is not known (either bound ``None``) gets bars of length 0.
    """
    intervals = [(value, low, high) for value, low, high in zip(values, lows, highs)]
    return {
        "type": "data",
        "symmetric": False,
        "array": [high - value if low is not None and high is not None else 0 for value, low, high in intervals],
        "arrayminus": [value - low if low is not None and high is not None else 0 for value, low, high in intervals],
    }


def number_text(value: float | None, spec: str = ".3g") -> str:
    """``value`` formatted with ``spec`` for hover text, ``"undefined"`` for ``None`` or nan."""
    if value is None or math.isnan(value):
        return "undefined"
    return format(value, spec)
