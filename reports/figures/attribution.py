"""Head attribution: effect per layer and head, the heads selected for debiasing, and bias levels across checkpoints."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from reports.escaping import plotly_text
from reports.figures.round_series import interval_error_bars, interval_text, number_text
from reports.figures.style import category_colour, export_height, integer_dtick, panel_grid
from workbench.run_tables import BiasLevel, DebiasedHead, HeadEffect


def head_attribution_figure(heads: Sequence[HeadEffect]) -> go.Figure:
    """Layer x head heatmaps of attribution effects, one panel per (checkpoint, method).

    Rows of ``attribution/heads.csv``; x is the head index, y the layer, colour the effect on a
    diverging scale centred on zero and shared by all panels.
    """
    if not heads:
        raise ValueError("heads table has no rows")
    panels = list(dict.fromkeys((h.checkpoint, h.method) for h in heads))
    grid = panel_grid(
        [f"{plotly_text(c)} ({plotly_text(m)})" for c, m in panels],
        max_columns=2,
        panel_height=420,
        horizontal_spacing=0.08,
    )
    fig, height = grid.figure, grid.height
    for index, (checkpoint, method) in enumerate(panels):
        row, col = grid.position(index)
        effects = {(h.layer, h.head): h.effect for h in heads if h.checkpoint == checkpoint and h.method == method}
        layers = sorted({layer for layer, _ in effects})
        head_indices = sorted({head for _, head in effects})
        fig.add_trace(
            go.Heatmap(
                x=head_indices,
                y=layers,
                z=[[effects.get((layer, head)) for head in head_indices] for layer in layers],
                hovertext=[
                    [
                        f"layer {layer}, head {head}: effect "
                        + (f"{effects[(layer, head)]:.3g}" if (layer, head) in effects else "none")
                        for head in head_indices
                    ]
                    for layer in layers
                ],
                hoverinfo="text",
                coloraxis="coloraxis",
                name=f"{plotly_text(checkpoint)} ({plotly_text(method)})",
            ),
            row=row,
            col=col,
        )
        fig.update_xaxes(title_text="head", dtick=integer_dtick(len(head_indices)), row=row, col=col)
        fig.update_yaxes(title_text="layer", dtick=integer_dtick(len(layers)), row=row, col=col)
    fig.update_layout(
        coloraxis={"colorscale": "RdBu_r", "cmid": 0, "colorbar": {"title": {"text": "effect"}}},
        height=height,
        title="Head attribution",
    )
    return fig


def bias_levels_figure(levels: Sequence[BiasLevel]) -> go.Figure:
    """Bias measures compared across checkpoints: grouped bars with 95% intervals.

    Rows of ``attribution/bias_levels.csv``; x is the measure, one bar per checkpoint.
    """
    if not levels:
        raise ValueError("bias_levels table has no rows")
    checkpoints = list(dict.fromkeys(level.checkpoint for level in levels))
    fig = go.Figure()
    for index, checkpoint in enumerate(checkpoints):
        bars = [level for level in levels if level.checkpoint == checkpoint]
        fig.add_trace(
            go.Bar(
                x=[plotly_text(b.measure) for b in bars],
                y=[b.value for b in bars],
                marker={"color": category_colour(index)},
                error_y=interval_error_bars(
                    [b.value for b in bars], [b.ci_low for b in bars], [b.ci_high for b in bars]
                ),
                name=plotly_text(checkpoint),
                hovertext=[
                    f"{plotly_text(checkpoint)}: {plotly_text(b.measure)} = {number_text(b.value)}"
                    f"{interval_text(b.ci_low, b.ci_high)}, n = {b.n}"
                    for b in bars
                ],
                hoverinfo="text",
            )
        )
    fig.update_layout(
        barmode="group",
        xaxis_title="measure",
        yaxis_title="value",
        height=420,
        title="Bias level across checkpoints",
    )
    return fig


MAX_SELECTED_HEADS = 40
"""Most selected heads drawn (those with the largest drop); ``attribution/selected_heads.csv`` has them all."""


def selected_heads_figure(heads: Sequence[DebiasedHead], max_heads: int = MAX_SELECTED_HEADS) -> go.Figure:
    """The heads selected for ProSocialTuning: effect before and after debiasing, one row per head.

    Rows of ``attribution/selected_heads.csv``, largest ``drop`` (= |before| - |after|, the head's
    penalty weight) on top, at most ``max_heads`` of them. A grey segment joins each head's effect
    in the base checkpoint (filled marker) to its effect in the debiased one (open marker), in logits.
    """
    if not heads:
        raise ValueError("selected_heads table has no rows")
    ranked = sorted(heads, key=lambda h: -h.drop)[:max_heads]
    labels = [f"layer {h.layer}, head {h.head}" for h in ranked]
    fig = go.Figure()
    segment_x: list[float | None] = []
    segment_y: list[str | None] = []
    for head, label in zip(ranked, labels):
        segment_x += [head.effect_before, head.effect_after, None]
        segment_y += [label, label, None]
    fig.add_trace(
        go.Scatter(
            x=segment_x, y=segment_y, mode="lines", line={"color": "#bbbbbb"}, hoverinfo="skip", showlegend=False
        )
    )
    for name, values, symbol, colour in (
        ("effect before (base)", [h.effect_before for h in ranked], "circle", category_colour(0)),
        ("effect after (debiased)", [h.effect_after for h in ranked], "circle-open", category_colour(1)),
    ):
        fig.add_trace(
            go.Scatter(
                x=values,
                y=labels,
                mode="markers",
                marker={"symbol": symbol, "size": 9, "color": colour, "line": {"width": 2, "color": colour}},
                name=name,
                hovertext=[
                    f"{label}: before {h.effect_before:.3g}, after {h.effect_after:.3g}, drop {h.drop:.3g}"
                    for h, label in zip(ranked, labels)
                ],
                hoverinfo="text",
            )
        )
    fig.add_vline(x=0, line={"dash": "dot", "color": "grey"})
    shown = f"the {len(ranked)} of {len(heads)} with the largest drop" if len(ranked) < len(heads) else f"{len(heads)}"
    fig.update_layout(
        height=export_height(max(300, 24 * len(ranked) + 160)),
        title=f"Heads selected for debiasing ({shown})",
        xaxis_title="attribution effect (logits)",
        yaxis={"autorange": "reversed"},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0.0},
    )
    return fig
