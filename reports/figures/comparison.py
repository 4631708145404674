"""Figures of several runs side by side (``workbench compare``): behaviour per round, and per-layer
measures on a relative depth axis so that models of different depths line up.

Each run has one colour (:func:`reports.figures.style.category_colour`, the palette that is never a
condition's), the same in every figure of the comparison; conditions are panels, titled by their human
label. Run labels and every other table string are escaped for plotly here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

from reports.escaping import plotly_text
from reports.figures.round_series import add_round_line, interval_error_bars, interval_text, number_text
from reports.figures.style import (
    LEGEND_MARGIN_PX,
    ConditionStyle,
    add_band,
    category_colour,
    condition_panels,
    metric_label,
    panel_grid,
)
from workbench.run_tables import BehaviourMetric, LayerScore, MoralityLevel

DEPTH_AXIS_TITLE = "relative depth (layer / (layers − 1))"
PROBE_ARM = "probe"
CONTROL_ARM = "shuffled_labels"
"""The probe arm drawn solid in the probe-accuracy figure, and the control drawn dotted beside it."""


def relative_depth(layer: int, n_layers: int) -> float:
    """The depth of block ``layer`` of a model with ``n_layers`` blocks, in [0, 1]: ``layer / (n_layers - 1)``.

    The first block is at 0 and the last at 1, whatever the model's depth, so that two models' first and
    last blocks line up. A final-norm site (stored at layer ``n_layers``, after the last block) is at 1;
    a one-block model's only block is at 1.

    Raises:
        ValueError: ``n_layers`` < 1, or ``layer`` outside 0..``n_layers``.
    """
    if n_layers < 1:
        raise ValueError(f"a model has at least one layer, not {n_layers}")
    if not 0 <= layer <= n_layers:
        raise ValueError(f"layer {layer} does not exist in a model of {n_layers} layers (0..{n_layers})")
    if n_layers == 1:
        return 1.0
    return min(layer, n_layers - 1) / (n_layers - 1)


@dataclass(frozen=True)
class RunRows:
    """One run's rows for a comparison figure.

    Attributes:
        label: the run's label in the comparison (raw text; the figures escape it).
        behaviour: its ``results/behaviour.csv`` rows.
        morality: its ``probes/morality.csv`` rows.
        layer_scores: its ``probes/layer_scores.csv`` rows.
        n_layers: its model's number of blocks (``None``: unknown; the run is left out of depth figures).
    """

    label: str
    behaviour: tuple[BehaviourMetric, ...] = ()
    morality: tuple[MoralityLevel, ...] = ()
    layer_scores: tuple[LayerScore, ...] = ()
    n_layers: int | None = None


def compared_behaviour_figure(runs: Sequence[RunRows], metrics: Sequence[str], conditions: Sequence[str]) -> go.Figure:
    """Behaviour per round, run beside run: one panel per (metric, condition), one line per run.

    Panels are filled metric by metric (``metrics`` in order, each over ``conditions`` in order, one row
    per metric when there are at most four conditions); x is the round, each run's line has its 95% band
    where the table has intervals and gaps where a value is undefined (never a zero). One legend entry
    per run toggles it in every panel.
    """
    if not runs or not metrics or not conditions:
        raise ValueError("a comparison figure needs runs, metrics and conditions")
    panels = [(metric, condition) for metric in metrics for condition in conditions]
    grid = panel_grid(
        [f"{plotly_text(metric_label(metric))}<br>{ConditionStyle.panel_title(c)}" for metric, c in panels],
        max_columns=min(len(conditions), 4),
        panel_height=210,
        horizontal_spacing=0.05,
        gap_px=100,
        margin_px=LEGEND_MARGIN_PX["t"] + LEGEND_MARGIN_PX["b"],
    )
    fig = grid.figure
    for index, (metric, condition) in enumerate(panels):
        row, col = grid.position(index)
        for run_index, run in enumerate(runs):
            points = sorted(
                (r for r in run.behaviour if r.metric == metric and r.condition == condition), key=lambda r: r.round
            )
            if points:
                _add_run_series(fig, points, run.label, category_colour(run_index), row, col, index == 0)
        fig.update_xaxes(dtick=1, row=row, col=col)
        if grid.is_bottom(index, len(panels)):
            fig.update_xaxes(title_text="round", row=row, col=col)
    grid.lay_out("Behaviour per round, run beside run")
    return fig


def _add_run_series(
    fig: go.Figure, points: Sequence[BehaviourMetric], label: str, colour: str, row: int, col: int, legend: bool
) -> None:
    """One run's line of one metric and condition over rounds, with its band (as ``add_round_series``)."""
    name = plotly_text(label)
    add_round_line(
        fig,
        points,
        colour=colour,
        name=name,
        group=name,
        hover_head=f"{name}<br>{ConditionStyle.hover(points[0].condition)}",
        metric_text=plotly_text(metric_label(points[0].metric)),
        showlegend=legend,
        row=row,
        col=col,
    )


def compared_morality_figure(runs: Sequence[RunRows], site: str, measure: str, conditions: Sequence[str]) -> go.Figure:
    """Hidden-state morality per layer on the relative depth axis, run beside run, one panel per condition.

    Rows of each run's ``probes/morality.csv`` at ``site`` for ``measure`` (runs without such rows, or
    without a known depth, draw nothing). Per run: its last round as a solid line with its 95% band and
    its first round dotted, both in the run's colour; x is :func:`relative_depth`, so a 2-layer and a
    30-layer model share the axis; every panel shares the y axis. Hover text names the run, the layer
    and its depth, the round, the value with its interval and n.
    """
    drawn = [run for run in runs if run.n_layers is not None]
    if not drawn or not conditions:
        raise ValueError("a depth figure needs runs of known depth and conditions")
    grid = condition_panels(conditions, panel_height=240, horizontal_spacing=0.04, shared_yaxes=True)
    fig = grid.figure
    for index, condition in enumerate(conditions):
        row, col = grid.position(index)
        for run_index, run in enumerate(runs):
            if run.n_layers is None:
                continue
            levels = [r for r in run.morality if r.site == site and r.measure == measure and r.condition == condition]
            rounds = sorted({r.round for r in levels})
            for round_ in dict.fromkeys((rounds[-1], rounds[0]) if rounds else ()):
                line = sorted((r for r in levels if r.round == round_), key=lambda r: r.layer)
                last = round_ == rounds[-1]
                _add_depth_line(fig, run, run_index, line, last=last, legend=index == 0 and last, row=row, col=col)
        fig.update_xaxes(range=[-0.03, 1.03], row=row, col=col)
        if grid.is_bottom(index, len(conditions)):
            fig.update_xaxes(title_text=DEPTH_AXIS_TITLE, row=row, col=col)
        if col == 1:
            fig.update_yaxes(title_text=plotly_text(metric_label(measure)), row=row, col=col)
    title = f"{plotly_text(metric_label(measure))} at {plotly_text(site)}, last round (first round dotted)"
    grid.lay_out(title)
    return fig


def _add_depth_line(
    fig: go.Figure,
    run: RunRows,
    run_index: int,
    line: Sequence[MoralityLevel],
    *,
    last: bool,
    legend: bool,
    row: int,
    col: int,
) -> None:
    """One run's morality over layers at one round: solid with its band (the last round), or dotted (the first)."""
    assert run.n_layers is not None
    if not line:
        return
    colour, name = category_colour(run_index), plotly_text(run.label)
    depths = [relative_depth(r.layer, run.n_layers) for r in line]
    if last:
        add_band(fig, depths, line, colour=colour, group=name, row=row, col=col, alpha=0.15)
    fig.add_trace(
        go.Scatter(
            x=depths,
            y=[r.value if math.isfinite(r.value) else None for r in line],
            mode="lines+markers",
            line={"color": colour, "width": 2 if last else 1.5, "dash": "solid" if last else "dot"},
            marker={"size": 5 if last else 4},
            name=name if last else f"{name}, round {line[0].round}",
            legendgroup=name,
            showlegend=legend,
            hovertext=[
                f"{name}<br>{ConditionStyle.hover(r.condition)}<br>layer {r.layer} of {run.n_layers} "
                f"(depth {depth:.2f}), round {r.round}: {number_text(r.value)}"
                f"{interval_text(r.ci_low, r.ci_high)}, n = {r.n}"
                for depth, r in zip(depths, line)
            ],
            hoverinfo="text",
        ),
        row=row,
        col=col,
    )


def compared_probe_accuracy_figure(runs: Sequence[RunRows], sites: Sequence[str]) -> go.Figure:
    """Probe accuracy per layer on the relative depth axis, run beside run, one panel per site.

    Rows of each run's ``probes/layer_scores.csv`` with ``metric`` ``accuracy`` at the first token
    position listed for the site: the probe (solid, with 95% error bars) and its shuffled-labels control
    (dotted), both in the run's colour. Runs without a known depth draw nothing.
    """
    if not sites or not any(run.n_layers is not None for run in runs):
        raise ValueError("a depth figure needs runs of known depth and sites")
    grid = panel_grid(
        [plotly_text(site) for site in sites],
        max_columns=3,
        panel_height=320,
        horizontal_spacing=0.06,
        gap_px=90,
        margin_px=LEGEND_MARGIN_PX["t"] + LEGEND_MARGIN_PX["b"],
        shared_yaxes=True,
    )
    fig = grid.figure
    for index, site in enumerate(sites):
        row, col = grid.position(index)
        for run_index, run in enumerate(runs):
            if run.n_layers is None:
                continue
            scores = [s for s in run.layer_scores if s.site == site and s.metric == "accuracy"]
            if not scores:
                continue
            position = scores[0].position
            for arm in (PROBE_ARM, CONTROL_ARM):
                line = sorted((s for s in scores if s.arm == arm and s.position == position), key=lambda s: s.layer)
                if line:
                    _add_accuracy_line(fig, run, run_index, line, index == 0, row=row, col=col)
        fig.update_xaxes(range=[-0.03, 1.03], row=row, col=col)
        if grid.is_bottom(index, len(sites)):
            fig.update_xaxes(title_text=DEPTH_AXIS_TITLE, row=row, col=col)
        if col == 1:
            fig.update_yaxes(title_text="probe accuracy", range=[0, 1.02], row=row, col=col)
    grid.lay_out("Probe accuracy by relative depth (dotted: shuffled-labels control)")
    return fig


def _add_accuracy_line(
    fig: go.Figure, run: RunRows, run_index: int, line: Sequence[LayerScore], legend: bool, *, row: int, col: int
) -> None:
    assert run.n_layers is not None
    n_layers = run.n_layers
    probe = line[0].arm == PROBE_ARM
    name = plotly_text(run.label) if probe else f"{plotly_text(run.label)}, {plotly_text(line[0].arm)}"
    depths = [relative_depth(s.layer, n_layers) for s in line]
    fig.add_trace(
        go.Scatter(
            x=depths,
            y=[s.value for s in line],
            mode="lines+markers",
            line={"color": category_colour(run_index), "dash": "solid" if probe else "dot", "width": 2 if probe else 1},
            marker={"size": 5 if probe else 3},
            error_y=interval_error_bars([s.value for s in line], [s.ci_low for s in line], [s.ci_high for s in line])
            if probe
            else None,
            name=name,
            legendgroup=plotly_text(run.label),
            showlegend=legend and probe,
            hovertext=[
                f"{name}<br>layer {s.layer} of {n_layers} (depth {depth:.2f}): accuracy "
                f"{number_text(s.value, '.3f')}{interval_text(s.ci_low, s.ci_high)}"
                for depth, s in zip(depths, line)
            ],
            hoverinfo="text",
        ),
        row=row,
        col=col,
    )
