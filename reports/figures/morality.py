"""Hidden-state morality: a layer x round heatmap per condition, and per-layer probe accuracy."""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reports.escaping import plotly_text
from reports.figures.round_series import interval_error_bars, interval_text, number_text
from reports.figures.style import (
    ConditionStyle,
    add_band,
    category_colour,
    condition_panels,
    export_height,
    integer_dtick,
    metric_label,
    round_colours,
)
from workbench.run_tables import LayerScore, MoralityLevel

PROBE_ARMS = ("probe", "shuffled_labels", "random_direction")


def morality_sites_of(morality: Sequence[MoralityLevel]) -> list[str]:
    """Sites of ``morality`` in order of first appearance."""
    return list(dict.fromkeys(row.site for row in morality))


def site_measure(
    morality: Sequence[MoralityLevel], site: str | None, measure: str
) -> tuple[str, str, list[MoralityLevel]]:
    """``(site, measure, rows)``: the rows of ``morality`` at ``site`` (default: the first site) for
    ``measure`` (falling back to the site's first measure when it has no ``measure`` rows).

    Raises:
        ValueError: ``morality`` is empty or has no row at ``site``.
    """
    if not morality:
        raise ValueError("morality table has no rows")
    site = site if site is not None else morality_sites_of(morality)[0]
    at_site = [row for row in morality if row.site == site]
    if not at_site:
        raise ValueError(f"morality table has no rows for site {site!r}")
    measures = list(dict.fromkeys(row.measure for row in at_site))
    measure = measure if measure in measures else measures[0]
    return site, measure, [row for row in at_site if row.measure == measure]


def morality_figure(
    morality: Sequence[MoralityLevel],
    layer_scores: Sequence[LayerScore] = (),
    *,
    site: str | None = None,
    measure: str = "probe_probability",
    conditions: Sequence[str] | None = None,
) -> go.Figure:
    """Morality level per layer and round at one site, with probe accuracy per layer beside it.

    One heatmap per condition (x: round, y: layer, colour: ``measure`` of ``probes/morality.csv``,
    one colour scale shared by all; panels titled by the condition's human label, in the order of
    ``conditions``, the run's condition list); a last panel on the same layer axis draws the accuracy
    of the probe and of its controls (``shuffled_labels``, ``random_direction``) from
    ``probes/layer_scores.csv``, with 95% intervals, when ``layer_scores`` has rows for the site.
    ``site`` defaults to the first site of ``morality``; ``measure`` falls back to the first
    measure present when the asked one is absent.
    """
    site, measure, levels = site_measure(morality, site, measure)
    style = ConditionStyle.of((row.condition for row in levels), conditions)
    present = style.ordered(row.condition for row in levels)
    rounds = sorted({row.round for row in levels})
    layers = sorted({row.layer for row in levels})
    accuracy = [s for s in layer_scores if s.site == site and s.metric == "accuracy"]
    n_panels = len(present) + (1 if accuracy else 0)
    titles = [style.panel_title(condition) for condition in present]
    if accuracy:
        titles.append("probe accuracy<br>and controls")
    fig = make_subplots(
        rows=1,
        cols=n_panels,
        shared_yaxes=True,
        horizontal_spacing=0.02 if n_panels > 4 else 0.05,
        subplot_titles=titles,
    )
    values = [row.value for row in levels if math.isfinite(row.value)] or [0.0]  # nan: a blank cell
    for col, condition in enumerate(present, start=1):
        cell = {(r.layer, r.round): r for r in levels if r.condition == condition}
        fig.add_trace(
            go.Heatmap(
                x=rounds,
                y=layers,
                z=[[_value(cell.get((layer, r))) for r in rounds] for layer in layers],
                hovertext=[[_level_hover(cell.get((layer, r)), layer, r) for r in rounds] for layer in layers],
                hoverinfo="text",
                coloraxis="coloraxis",
                name=style.label(condition),
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="round", dtick=1, row=1, col=col)
    if accuracy:
        _add_probe_accuracy(fig, accuracy, col=n_panels)
    fig.update_yaxes(title_text="layer", dtick=integer_dtick(len(layers)), row=1, col=1)
    fig.update_layout(
        coloraxis={
            "colorscale": "RdBu_r",
            "cmin": min(values),
            "cmax": max(values),
            "colorbar": {"title": {"text": plotly_text(metric_label(measure))}, "x": 1.02},
        },
        height=export_height(max(420, 16 * len(layers) + 220)),
        title=f"Morality level ({plotly_text(metric_label(measure))}) at {plotly_text(site)}",
        legend={"orientation": "h", "y": -0.2},
        margin={"t": 110},
    )
    return fig


def layer_profile_figure(
    morality: Sequence[MoralityLevel],
    *,
    site: str | None = None,
    measure: str = "probe_probability",
    conditions: Sequence[str] | None = None,
) -> go.Figure:
    """The papers' layer profile: morality (y) per layer (x), one line per round, one panel per condition.

    Rows of ``probes/morality.csv`` at ``site`` for ``measure`` (defaults and fallbacks as in
    :func:`morality_figure`); every panel shares the y axis. Lines are coloured by round (Viridis,
    round 0 darkest); the first and the last round carry their 95% band where the table has
    intervals (every round's interval is in the hover text). Panels are titled by the condition's
    human label, in the order of ``conditions`` (the run's condition list).
    """
    site, measure, levels = site_measure(morality, site, measure)
    style = ConditionStyle.of((row.condition for row in levels), conditions)
    present = style.ordered(row.condition for row in levels)
    rounds = sorted({row.round for row in levels})
    banded = {rounds[0], rounds[-1]}
    colours = dict(zip(rounds, round_colours(len(rounds))))
    grid = condition_panels(present, panel_height=240, horizontal_spacing=0.04, shared_yaxes=True)
    fig = grid.figure
    for index, condition in enumerate(present):
        row, col = grid.position(index)
        for round_ in rounds:
            line = sorted((r for r in levels if r.condition == condition and r.round == round_), key=lambda r: r.layer)
            if not line:
                continue
            colour, layers = colours[round_], [r.layer for r in line]
            if round_ in banded:
                add_band(fig, layers, line, colour=colour, group=f"round {round_}", row=row, col=col, alpha=0.15)
            fig.add_trace(
                go.Scatter(
                    x=layers,
                    y=[r.value if math.isfinite(r.value) else None for r in line],
                    mode="lines",
                    line={"color": colour, "width": 2},
                    name=f"round {round_}",
                    legendgroup=f"round {round_}",
                    showlegend=index == 0,
                    hovertext=[_level_hover(r, r.layer, r.round) for r in line],
                    hoverinfo="text",
                ),
                row=row,
                col=col,
            )
        if grid.is_bottom(index, len(present)):
            fig.update_xaxes(title_text="layer", row=row, col=col)
        if col == 1:
            fig.update_yaxes(title_text=plotly_text(metric_label(measure)), row=row, col=col)
    grid.lay_out(f"Layer profile of {plotly_text(metric_label(measure))} at {plotly_text(site)}")
    return fig


def _value(level: MoralityLevel | None) -> float | None:
    return None if level is None else level.value


def _level_hover(level: MoralityLevel | None, layer: int, round_: int) -> str:
    if level is None:
        return f"layer {layer}, round {round_}: no value"
    return (
        f"{ConditionStyle.hover(level.condition)}<br>layer {layer}, round {round_}: "
        f"{number_text(level.value)}{interval_text(level.ci_low, level.ci_high)}, n = {level.n}"
    )


def _add_probe_accuracy(fig: go.Figure, accuracy: Sequence[LayerScore], *, col: int) -> None:
    """Per-layer accuracy lines (x: accuracy, y: layer), one per arm and token position."""
    arms = list(dict.fromkeys(score.arm for score in accuracy))
    arms.sort(key=lambda arm: PROBE_ARMS.index(arm) if arm in PROBE_ARMS else len(PROBE_ARMS))
    positions = list(dict.fromkeys(score.position for score in accuracy))
    for arm_index, arm in enumerate(arms):
        for position in positions:
            scores = sorted(
                (s for s in accuracy if s.arm == arm and s.position == position),
                key=lambda s: s.layer,
            )
            if not scores:
                continue
            label = plotly_text(arm if len(positions) == 1 else f"{arm} ({position})")
            fig.add_trace(
                go.Scatter(
                    x=[s.value for s in scores],
                    y=[s.layer for s in scores],
                    mode="lines+markers",
                    line={
                        "color": category_colour(arm_index),
                        "dash": "solid" if arm == "probe" else "dot",
                    },
                    error_x=interval_error_bars(
                        [s.value for s in scores], [s.ci_low for s in scores], [s.ci_high for s in scores]
                    ),
                    name=label,
                    hovertext=[
                        f"{label}, layer {s.layer}: accuracy {number_text(s.value, '.3f')}"
                        f"{interval_text(s.ci_low, s.ci_high)}"
                        for s in scores
                    ],
                    hoverinfo="text",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="accuracy", range=[0, 1.02], row=1, col=col)
