"""Item answers: correctness of every item at every round, with the prompt and answer on hover."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reports.escaping import item_hover_text, plotly_text
from reports.figures.sampling import SAMPLE_SEED, sample_rows
from reports.figures.style import ConditionStyle, export_height
from workbench.run_tables import ItemAnswer

MAX_ITEMS = 60
"""Most items the figure draws; a run with more is drawn as a seeded random sample of item ids."""


def item_answers_figure(
    items: Sequence[ItemAnswer],
    max_items: int = MAX_ITEMS,
    *,
    conditions: Sequence[str] | None = None,
    seed: int = SAMPLE_SEED,
) -> go.Figure:
    """Correct (1) / wrong (0) per item (y) and round (x): one heatmap panel per condition.

    Rows of ``results/items.csv``. A run with at most ``max_items`` item ids draws them all, in
    file order; a larger one draws a random sample of ``max_items`` of them (``seed``: the same
    items on every build, in file order), which the title says, so that the report stays light
    (``results/items.csv`` has every answer). Cells without a gold answer are left blank. Hover
    text shows the item, the escaped prompt excerpt and the escaped answer. Panels are titled by
    the condition's human label, in the order of ``conditions`` (the run's condition list).
    """
    if not items:
        raise ValueError("items table has no rows")
    all_ids = list(dict.fromkeys(item.item_id for item in items))
    item_ids = sample_rows(all_ids, max_items, seed)
    shown = set(item_ids)
    style = ConditionStyle.of((item.condition for item in items), conditions)
    present = style.ordered(item.condition for item in items)
    rounds = sorted({item.round for item in items})
    fig = make_subplots(
        rows=1,
        cols=len(present),
        shared_yaxes=True,
        horizontal_spacing=0.02 if len(present) > 4 else 0.04,
        subplot_titles=[style.panel_title(condition) for condition in present],
    )
    for col, condition in enumerate(present, start=1):
        cell = {(i.item_id, i.round): i for i in items if i.condition == condition and i.item_id in shown}
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
                name=style.label(condition),
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="round", dtick=1, row=1, col=col)
    fig.update_yaxes(title_text="item", autorange="reversed", row=1, col=1)
    if len(item_ids) < len(all_ids):
        shown_text = f"a random sample of {len(item_ids)} of {len(all_ids)} items, seed {seed}"
    else:
        shown_text = f"all {len(all_ids)} items" if len(all_ids) > 1 else "1 item"
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
        height=export_height(max(360, 16 * len(item_ids) + 200)),
        title=f"Answers per item ({shown_text})",
        margin={"t": 110},
    )
    return fig


def _correctness(item: ItemAnswer | None) -> float | None:
    if item is None or item.correct is None:
        return None
    return 1.0 if item.correct else 0.0
