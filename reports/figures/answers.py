"""Item answers: correctness of every item at every round, with the prompt and answer on hover."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reports.escaping import item_hover_text, plotly_text
from workbench.run_tables import ItemAnswer

MAX_ITEMS = 60


def item_answers_figure(items: Sequence[ItemAnswer], max_items: int = MAX_ITEMS) -> go.Figure:
    """Correct (1) / wrong (0) per item (y) and round (x): one heatmap panel per condition.

    Rows of ``results/items.csv``; only the first ``max_items`` item ids (file order) are drawn,
    so that the report stays light. Cells without a gold answer are left blank. Hover text shows
    the item, the escaped prompt excerpt and the escaped answer.
    """
    if not items:
        raise ValueError("items table has no rows")
    item_ids = list(dict.fromkeys(item.item_id for item in items))[:max_items]
    conditions = list(dict.fromkeys(item.condition for item in items))
    rounds = sorted({item.round for item in items})
    fig = make_subplots(
        rows=1,
        cols=len(conditions),
        shared_yaxes=True,
        horizontal_spacing=0.02 if len(conditions) > 4 else 0.04,
        subplot_titles=[plotly_text(condition) for condition in conditions],
    )
    for col, condition in enumerate(conditions, start=1):
        cell = {(i.item_id, i.round): i for i in items if i.condition == condition}
        fig.add_trace(
            go.Heatmap(
                x=rounds,
                y=[plotly_text(item_id) for item_id in item_ids],
                z=[[_correctness(cell.get((item_id, r))) for r in rounds] for item_id in item_ids],
                hovertext=[
                    [item_hover_text(cell[(item_id, r)]) if (item_id, r) in cell else "no answer" for r in rounds]
                    for item_id in item_ids
                ],
                hoverinfo="text",
                coloraxis="coloraxis",
                xgap=1,
                ygap=1,
                name=plotly_text(condition),
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="round", dtick=1, row=1, col=col)
    fig.update_yaxes(title_text="item", autorange="reversed", row=1, col=1)
    fig.update_layout(
        coloraxis={
            "colorscale": [[0, "#d62728"], [1, "#2ca02c"]],
            "cmin": 0,
            "cmax": 1,
            "colorbar": {
                "title": {"text": "correct"},
                "tickvals": [0, 1],
                "ticktext": ["wrong", "correct"],
            },
        },
        height=max(360, 16 * len(item_ids) + 180),
        title=f"Answers per item ({len(item_ids)} of {len(set(item.item_id for item in items))} items)",
    )
    return fig


def _correctness(item: ItemAnswer | None) -> float | None:
    if item is None or item.correct is None:
        return None
    return 1.0 if item.correct else 0.0
