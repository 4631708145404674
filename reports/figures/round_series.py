"""One metric of one condition drawn over rounds: a line with its confidence band."""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go

from reports.escaping import plotly_text
from reports.figures.style import ConditionStyle, add_band
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
    condition (label and raw name), the round, the value with its interval and ``n``. The line's
    legend group is the condition, so one legend entry toggles the condition in every subplot. The
    band and gaps are those of :func:`add_round_line`.
    """
    ordered = sorted(points, key=lambda point: point.round)
    name = ordered[0].condition
    add_round_line(
        fig,
        ordered,
        colour=style.colour(name),
        name=style.label(name),
        group=plotly_text(name),
        hover_head=style.hover(name),
        metric_text=plotly_text(ordered[0].metric),
        showlegend=showlegend,
        row=row,
        col=col,
    )


def add_round_line(
    fig: go.Figure,
    points: Sequence[BehaviourMetric],
    *,
    colour: str,
    name: str,
    group: str,
    hover_head: str,
    metric_text: str,
    showlegend: bool,
    row: int,
    col: int,
) -> None:
    """Add the line of ``points`` (one metric of one condition, ordered by round) to subplot ``(row, col)``.

    The line is drawn in ``colour`` with the legend name ``name`` in the legend group ``group``
    (escaped text); each point's hover text is ``hover_head``, then the round, ``metric_text`` and
    the value with its interval and ``n``. A translucent band (:func:`reports.figures.style.add_band`)
    spans ``ci_low``..``ci_high`` over each run of consecutive rounds where both are known (no band
    when none is). An undefined value (``value`` ``None``) is a gap in the line and in the band,
    never a zero; it is listed with its reason under the figure (see :mod:`reports.sections`).
    """
    rounds = [p.round for p in points]
    add_band(fig, rounds, points, colour=colour, group=group, row=row, col=col)
    fig.add_trace(
        go.Scatter(
            x=rounds,
            y=[p.value for p in points],
            mode="lines+markers",
            line={"color": colour, "width": 2},
            marker={"size": 5},
            connectgaps=False,
            name=name,
            legendgroup=group,
            showlegend=showlegend,
            hovertext=[
                f"{hover_head}<br>round {p.round}: {metric_text} = {plotly_text(p.value_text())}"
                f"{interval_text(p.ci_low, p.ci_high)}<br>n = {p.n}"
                for p in points
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
