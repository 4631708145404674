"""BBQ bias scores per category, as BBQ's authors report them, per condition and round."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from reports.escaping import plotly_text
from reports.figures.round_series import interval_error_bars, interval_text
from reports.figures.style import (
    LEGEND_MARGIN_PX,
    LEGEND_OFFSET_PX,
    ConditionStyle,
    forest_panels,
    top_title,
)
from workbench.run_tables import BBQCategoryMetric

BIAS_METRICS = ("bias_score_ambiguous", "bias_score_disambiguated")
"""The per-category metrics the figure draws (``bbq_categories.csv`` also has accuracies)."""

ALL_CATEGORIES = "all"
"""The ``category`` of the rows that pool every BBQ item of a cell."""

ROW_HEIGHT_PX = 34
CONDITION_SPREAD = 0.5
"""How much of a category's row the conditions' markers spread over."""


def category_order(rows: Sequence[BBQCategoryMetric]) -> list[str]:
    """Categories of ``rows``: ``all`` first, then each category followed by its ``(names)`` variant, alphabetically."""
    categories = {row.category for row in rows} - {ALL_CATEGORIES}
    ordered = sorted(categories, key=lambda c: (c.removesuffix(" (names)"), c.endswith(" (names)")))
    return ([ALL_CATEGORIES] if any(row.category == ALL_CATEGORIES for row in rows) else []) + ordered


def bbq_categories_figure(
    categories: Sequence[BBQCategoryMetric], *, conditions: Sequence[str] | None = None
) -> go.Figure:
    """Bias scores per BBQ category (y) with 95% intervals (x), one marker per condition; a round selector.

    Rows of ``results/bbq_categories.csv`` whose metric is one of :data:`BIAS_METRICS` (one panel
    each). Within a category's row the conditions sit side by side, in the run's order
    (``conditions``), each in its colour; undefined values are left out (``bbq_categories.csv``
    gives their reason). The last round is shown first; the buttons above the panels switch rounds.
    """
    rows = [row for row in categories if row.metric in BIAS_METRICS]
    if not rows:
        raise ValueError("bbq_categories table has no bias score rows")
    metrics = [metric for metric in BIAS_METRICS if any(row.metric == metric for row in rows)]
    style = ConditionStyle.of((row.condition for row in rows), conditions)
    present = style.ordered(row.condition for row in rows)
    ordered_categories = category_order(rows)
    position = {category: index for index, category in enumerate(ordered_categories)}
    rounds = sorted({row.round for row in rows})
    step = CONDITION_SPREAD / max(1, len(present) - 1)
    grid = forest_panels(metrics, panel_height=ROW_HEIGHT_PX * len(ordered_categories) + 40)
    fig = grid.figure
    trace_rounds: list[int] = []
    for round_ in rounds:
        for metric_index, metric in enumerate(metrics):
            row, col = grid.position(metric_index)
            for condition_index, condition in enumerate(present):
                cells = [
                    r
                    for r in rows
                    if r.metric == metric and r.condition == condition and r.round == round_ and r.value is not None
                ]
                if not cells:
                    continue
                offset = (condition_index - (len(present) - 1) / 2) * step if len(present) > 1 else 0.0
                values = [r.value for r in cells if r.value is not None]
                fig.add_trace(
                    go.Scatter(
                        x=values,
                        y=[position[r.category] + offset for r in cells],
                        mode="markers",
                        marker={"color": style.colour(condition), "size": 8},
                        error_x=interval_error_bars(values, [r.ci_low for r in cells], [r.ci_high for r in cells]),
                        name=style.label(condition),
                        legendgroup=plotly_text(condition),
                        showlegend=metric_index == 0,
                        visible=round_ == rounds[-1],
                        hovertext=[_hover(r) for r in cells],
                        hoverinfo="text",
                    ),
                    row=row,
                    col=col,
                )
                trace_rounds.append(round_)
        for metric_index in range(len(metrics)):
            row, col = grid.position(metric_index)
            fig.update_yaxes(
                tickvals=list(range(len(ordered_categories))),
                ticktext=[plotly_text(c) for c in ordered_categories] if col == 1 else None,
                autorange="reversed",
                row=row,
                col=col,
            )
            fig.update_xaxes(title_text="bias score", row=row, col=col)
    for metric_index in range(len(metrics)):
        row, col = grid.position(metric_index)
        fig.add_vline(x=0, line={"dash": "dot", "color": "grey"}, row=row, col=col)
    plot_height = max(1, grid.height - LEGEND_MARGIN_PX["t"] - LEGEND_MARGIN_PX["b"])  # buttons sit in paper units
    buttons = [
        {
            "label": f"round {round_}",
            "method": "update",
            "args": [
                {"visible": [shown == round_ for shown in trace_rounds]},
                {"title": top_title(f"BBQ bias score per category, round {round_}", grid.height)},
            ],
        }
        for round_ in rounds
    ]
    grid.lay_out(
        f"BBQ bias score per category, round {rounds[-1]}",
        updatemenus=[
            {
                "type": "buttons",
                "direction": "left",
                "active": len(rounds) - 1,
                "buttons": buttons,
                "x": 1.0,
                "xanchor": "right",
                "y": 1 + (LEGEND_MARGIN_PX["t"] - LEGEND_OFFSET_PX) / plot_height,
                "yanchor": "top",
                "showactive": True,
            }
        ]
        if len(rounds) > 1
        else [],
    )
    return fig


def _hover(row: BBQCategoryMetric) -> str:
    return (
        f"{ConditionStyle.hover(row.condition)}<br>{plotly_text(row.category)}, round {row.round}: "
        f"{plotly_text(row.metric)} = {row.value:.3g}{interval_text(row.ci_low, row.ci_high)}, n = {row.n}"
        f" ({plotly_text(row.convention)} convention, unparsed {plotly_text(row.unparsed)})"
    )
