"""Steering check: the option distribution after adding the probe direction, beside a random direction."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from reports.escaping import plotly_text
from reports.figures.style import LEGEND_MARGIN_PX, category_colour, panel_grid
from workbench.run_tables import SteeringEffect

DIRECTIONS = ("probe", "random")
"""The steering arms of ``probes/steering.csv``: the probe's unit direction and a seeded random one."""

METRIC_TITLES = {
    "unknown_rate": "'unknown' answers",
    "mean_prob_target": "probability of the stereotyped answer",
    "mean_prob_unknown": "probability of 'unknown'",
    "accuracy": "accuracy",
}


def steering_figure(steering: Sequence[SteeringEffect]) -> go.Figure:
    """Option-distribution metrics (y, in [0, 1]) against the steering multiple ``alpha`` (x).

    Rows of ``probes/steering.csv``; one panel per metric, one line per direction and steered layer:
    the probe direction solid, the random direction (the same norm) dashed and grey-toned. A probe
    direction whose line moves more than the random one is one the model's answers depend on.
    ``alpha`` = 0 is the unsteered model (both lines meet there).
    """
    if not steering:
        raise ValueError("steering table has no rows")
    metrics = list(dict.fromkeys(row.metric for row in steering))
    arms = list(dict.fromkeys((row.site, row.layer) for row in steering))
    directions = sorted(
        {row.direction for row in steering},
        key=lambda d: DIRECTIONS.index(d) if d in DIRECTIONS else len(DIRECTIONS),
    )
    grid = panel_grid(
        [plotly_text(METRIC_TITLES.get(metric, metric)) for metric in metrics],
        max_columns=4,
        panel_height=260,
        horizontal_spacing=0.05,
        gap_px=90,
        margin_px=LEGEND_MARGIN_PX["t"] + LEGEND_MARGIN_PX["b"],
    )
    fig = grid.figure
    for metric_index, metric in enumerate(metrics):
        row, col = grid.position(metric_index)
        for arm_index, (site, layer) in enumerate(arms):
            for direction in directions:
                points = sorted(
                    (
                        r
                        for r in steering
                        if r.metric == metric and (r.site, r.layer) == (site, layer) and r.direction == direction
                    ),
                    key=lambda r: r.alpha,
                )
                if not points:
                    continue
                name = f"{plotly_text(direction)} direction, layer {layer}" + (
                    f" ({plotly_text(site)})" if len({s for s, _ in arms}) > 1 else ""
                )
                fig.add_trace(
                    go.Scatter(
                        x=[p.alpha for p in points],
                        y=[p.value for p in points],
                        mode="lines+markers",
                        line={
                            "color": category_colour(arm_index) if direction == "probe" else "#888888",
                            "dash": "solid" if direction == "probe" else "dash",
                        },
                        marker={"size": 6},
                        name=name,
                        legendgroup=name,
                        showlegend=metric_index == 0,
                        hovertext=[
                            f"{name}<br>alpha {p.alpha:g}: {plotly_text(metric)} = {p.value:.3g}" for p in points
                        ],
                        hoverinfo="text",
                    ),
                    row=row,
                    col=col,
                )
        fig.update_yaxes(range=[0, 1.02], row=row, col=col)
        if grid.is_bottom(metric_index, len(metrics)):
            fig.update_xaxes(title_text="alpha (multiple of the unit direction)", row=row, col=col)
    grid.lay_out("Steering: probe direction vs. random direction")
    return fig
