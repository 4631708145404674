"""Colours, subplot grids and axis ticks shared by the report's figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative, sample_colorscale
from plotly.subplots import make_subplots

from reports.escaping import plotly_text

CONDITION_COLOURS = qualitative.Plotly


def category_colour(index: int) -> str:
    """A distinct hex colour for the ``index``-th category (condition, arm, checkpoint)."""
    return CONDITION_COLOURS[index % len(CONDITION_COLOURS)]


def translucent(hex_colour: str, alpha: float = 0.2) -> str:
    """``hex_colour`` as an ``rgba(...)`` string with opacity ``alpha`` (for confidence bands)."""
    red, green, blue = hex_to_rgb(hex_colour)
    return f"rgba({red},{green},{blue},{alpha})"


def round_colours(n_rounds: int) -> list[str]:
    """``n_rounds`` colours along Viridis, from the first round (dark) to the last (light)."""
    if n_rounds == 1:
        return sample_colorscale("Viridis", [0.0])
    return sample_colorscale("Viridis", [i / (n_rounds - 1) for i in range(n_rounds)])


def subplot_grid(n_panels: int, max_columns: int) -> tuple[int, int]:
    """``(rows, columns)`` of the smallest grid of ``n_panels`` with at most ``max_columns``."""
    columns = max(1, min(n_panels, max_columns))
    return max(1, math.ceil(n_panels / columns)), columns


def grid_position(index: int, columns: int) -> tuple[int, int]:
    """1-based ``(row, column)`` of the ``index``-th panel of a grid filled row by row."""
    return index // columns + 1, index % columns + 1


def integer_dtick(n_values: int) -> int:
    """Tick step for an axis of ``n_values`` consecutive integers (layers, heads, rounds):
    every value up to 31 of them, then about 16 ticks."""
    return max(1, n_values // 16)


def row_spacing(figure_height: int, gap_px: int = 110) -> float:
    """``vertical_spacing`` (a fraction of the figure height) that leaves ``gap_px`` pixels
    between subplot rows: room for an axis title and the next row's subplot title."""
    return gap_px / figure_height


@dataclass(frozen=True)
class PanelGrid:
    """A figure of panels filled row by row, with its column count and height in pixels."""

    figure: go.Figure
    columns: int
    height: int

    def position(self, index: int) -> tuple[int, int]:
        """1-based ``(row, column)`` of the ``index``-th panel."""
        return grid_position(index, self.columns)


def panel_grid(titles: Sequence[str], *, max_columns: int, panel_height: int, horizontal_spacing: float) -> PanelGrid:
    """One panel per (already escaped) title, at most ``max_columns`` wide, ``panel_height`` px per row."""
    rows, columns = subplot_grid(len(titles), max_columns)
    height = panel_height * rows + 80
    figure = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=list(titles),
        horizontal_spacing=horizontal_spacing,
        vertical_spacing=row_spacing(height),
    )
    return PanelGrid(figure, columns, height)


def metric_rows(metrics: Sequence[str]) -> go.Figure:
    """One subplot row per metric, sharing the round axis."""
    return make_subplots(
        rows=len(metrics),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=[plotly_text(metric) for metric in metrics],
    )
