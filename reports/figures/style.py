"""Colours, labels, subplot grids, axis ticks and interval bands shared by the report's figures.

One colour per condition across every figure of a report: :class:`ConditionStyle` gives the
``i``-th condition of the run's condition list (:func:`condition_order`, the same list for every
figure) the ``i``-th colour of :data:`CONDITION_COLOURS`. Figures show a condition by its human
label (:func:`workbench.protocols.conditions.condition_label`) and keep the raw name in hover text.
Other categories (probe arms, checkpoints, steering directions) take :data:`OTHER_COLOURS`, a
different palette, so that they are never mistaken for a condition.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative, sample_colorscale, unlabel_rgb
from plotly.subplots import make_subplots

from reports.escaping import plotly_text
from workbench.protocols.conditions import (
    INSTRUCTIONS,
    ConditionError,
    condition_label,
    demonstration_level,
    parse_condition_name,
)

CONDITION_COLOURS = qualitative.Plotly
"""Colours of the conditions of a run with up to ten of them; :data:`MANY_CONDITION_COLOURS` beyond."""
MANY_CONDITION_COLOURS = qualitative.Dark24
OTHER_COLOURS = qualitative.Dark2

LABEL_SEPARATOR = " · "
"""What :func:`condition_label` puts between the instruction, CoT and feedback parts."""

METRIC_LABELS = {
    "accuracy": "accuracy",
    "accuracy_ambig": "accuracy (ambiguous)",
    "accuracy_disambig": "accuracy (disambiguated)",
    "unknown_rate": "'unknown' answers (ambiguous)",
    "unparsed_rate": "unparsed answers",
    "remapped_answer_rate": "answers following the remapped labels",
    "bias_score_ambiguous": "bias score (ambiguous)",
    "bias_score_disambiguated": "bias score (disambiguated)",
    "toxicity": "toxicity",
    "flip_rate": "answers changed since the previous round",
    "entropy": "option entropy (nats)",
    "ece": "expected calibration error",
    "calibration_error": "calibration error",
    "uncertainty": "uncertainty (nats)",
    "they_rate": "'they' rate",
    "he_rate": "'he' rate",
    "she_rate": "'she' rate",
    "self_distinguish_accuracy": "self-distinguish accuracy",
    "pairwise_distinguish_accuracy": "pairwise distinguish accuracy",
    "probe_probability": "probe probability (concept class)",
    "cosine": "cosine to the probe direction",
    "concept_activation": "concept activation (cosine)",
}
"""Readable names of the metrics and measures of the run's tables; others are shown as written."""


SITE_WORDS = {"attn_out": "attention output", "mlp_out": "MLP output"}
"""Sites named in the measures of ``probes/morality.csv`` (``band_cosine_<site>``, ``final_probe_cosine_<site>``)."""


MEASURE_WORDS = (("final_probe_cosine_", "cosine to the final-layer probe"), ("cosine_", "cosine to the concept"))


def _measure_label(name: str) -> str | None:
    """Readable name of a site-suffixed morality measure, or ``None`` when ``name`` is not one."""
    band = name.startswith("band_")
    base = name.removeprefix("band_")
    for prefix, words in MEASURE_WORDS:
        if base.startswith(prefix):
            site = base.removeprefix(prefix)
            label = f"{words}, {SITE_WORDS.get(site, site)}"
            return label + (" (layer-band mean)" if band else "")
    return None


def metric_label(metric: str) -> str:
    """Readable name of a metric or measure (``bias_score_ambiguous`` -> ``bias score (ambiguous)``), not escaped.

    A task-prefixed metric of a several-task run (``bbq/accuracy``) keeps its task:
    ``bbq: accuracy`` (only when what follows the ``/`` is a known metric); the site-suffixed morality
    measures are spelt out (``band_cosine_attn_out`` -> ``cosine to the concept, attention output
    (layer-band mean)``); an unknown metric is returned as written.
    """
    task, slash, name = metric.rpartition("/")
    if slash and (name in METRIC_LABELS or _measure_label(name) is not None):
        return f"{task}: {metric_label(name)}"
    return METRIC_LABELS.get(metric) or _measure_label(metric) or metric


def _design_key(name: str) -> tuple[int, int, str, str, int, str]:
    """Sort key of a condition name: instruction in :data:`INSTRUCTIONS` order, then CoT, then feedback,
    then the number of demonstrations (numerically: 4 before 16).

    Names that are not condition names come after every condition name, in alphabetical order.
    """
    try:
        levels = parse_condition_name(name)
    except ConditionError:
        return (1, 0, "", "", 0, name)
    instruction = levels["instruction"]
    rank = INSTRUCTIONS.index(instruction) if instruction in INSTRUCTIONS else len(INSTRUCTIONS)
    k, _ = demonstration_level(levels)
    return (0, rank, instruction, levels["cot"] + levels["feedback"], k, name)


def condition_order(names: Iterable[str]) -> list[str]:
    """The distinct condition names of ``names`` in design order (no instruction first, then CoT off before on)."""
    return sorted(set(names), key=_design_key)


@dataclass(frozen=True)
class ConditionStyle:
    """The colour and labels of every condition of one run.

    Attributes:
        conditions: the run's condition names in design order; the ``i``-th has the ``i``-th colour.
    """

    conditions: tuple[str, ...]

    @classmethod
    def of(cls, names: Iterable[str], run_conditions: Sequence[str] | None = None) -> ConditionStyle:
        """The style of ``run_conditions`` (the run's list), or of ``names`` in design order when it is ``None``.

        Names of ``names`` that ``run_conditions`` lacks are appended in design order.
        """
        listed = list(run_conditions) if run_conditions is not None else []
        extra = condition_order(name for name in names if name not in set(listed))
        return cls(tuple(listed + extra))

    def ordered(self, names: Iterable[str]) -> list[str]:
        """The distinct names of ``names`` in the run's order."""
        present = set(names)
        return [name for name in self.conditions if name in present]

    def colour(self, name: str) -> str:
        """The hex colour of the condition ``name`` (one of :attr:`conditions`)."""
        palette = CONDITION_COLOURS if len(self.conditions) <= len(CONDITION_COLOURS) else MANY_CONDITION_COLOURS
        return palette[self.conditions.index(name) % len(palette)]

    @staticmethod
    def label(name: str) -> str:
        """The condition's human label, escaped for plotly (legend names)."""
        return plotly_text(condition_label(name))

    @staticmethod
    def panel_title(name: str) -> str:
        """The human label over two lines (instruction, then CoT and feedback), escaped: a narrow panel's title."""
        label = condition_label(name)
        first, separator, rest = label.partition(LABEL_SEPARATOR)
        return plotly_text(first) + ("<br>" + plotly_text(rest) if separator else "")

    @staticmethod
    def hover(name: str) -> str:
        """Hover text naming the condition: its human label and, when different, its raw name, escaped."""
        label = condition_label(name)
        return plotly_text(label) if label == name else f"{plotly_text(label)}<br>({plotly_text(name)})"


def category_colour(index: int) -> str:
    """A distinct hex colour for the ``index``-th category that is not a condition (arm, checkpoint, direction)."""
    return OTHER_COLOURS[index % len(OTHER_COLOURS)]


def translucent(colour: str, alpha: float = 0.2) -> str:
    """``colour`` as an ``rgba(...)`` string with opacity ``alpha`` (for confidence bands).

    ``colour`` is hex (``#636EFA``, the condition palettes) or ``rgb(r, g, b)`` (the category
    palette, Viridis samples).
    """
    if colour.startswith("rgb("):
        red, green, blue = unlabel_rgb(colour)
        return f"rgba({red:g},{green:g},{blue:g},{alpha})"
    red, green, blue = hex_to_rgb(colour)
    return f"rgba({red},{green},{blue},{alpha})"


class Bounded(Protocol):
    """A table row with a 95% interval (``ci_low``..``ci_high``, ``None`` when it is not known)."""

    @property
    def ci_low(self) -> float | None: ...

    @property
    def ci_high(self) -> float | None: ...


def band_polygons(x: Sequence[float], rows: Sequence[Bounded]) -> tuple[list[float | None], list[float | None]]:
    """``x``, ``y`` of the confidence band of ``rows`` (drawn at ``x``, in axis order) for a ``fill="toself"`` trace.

    One closed polygon (``ci_high`` forwards, then ``ci_low`` backwards) per run of consecutive rows
    with both bounds known; runs are separated by ``None`` so that plotly fills each apart and a row
    without an interval breaks the band. Empty lists when no row has an interval.
    """
    runs: list[list[tuple[float, float, float]]] = [[]]
    for at, row in zip(x, rows, strict=True):
        if row.ci_low is not None and row.ci_high is not None:
            runs[-1].append((at, row.ci_low, row.ci_high))
        elif runs[-1]:
            runs.append([])
    band_x: list[float | None] = []
    band_y: list[float | None] = []
    for run in (r for r in runs if r):
        if band_x:
            band_x.append(None)
            band_y.append(None)
        band_x += [at for at, _, _ in run] + [at for at, _, _ in reversed(run)]
        band_y += [high for _, _, high in run] + [low for _, low, _ in reversed(run)]
    return band_x, band_y


def add_band(
    fig: go.Figure,
    x: Sequence[float],
    rows: Sequence[Bounded],
    *,
    colour: str,
    group: str,
    row: int,
    col: int,
    alpha: float = 0.2,
) -> None:
    """Add the translucent 95% band of ``rows`` (:func:`band_polygons`) to subplot ``(row, col)``, if they have one.

    The band takes ``colour`` at opacity ``alpha``, has no hover text and no legend entry of its
    own, and joins the legend group ``group`` (escaped text) of its line, so that the line's
    legend entry toggles both.
    """
    band_x, band_y = band_polygons(x, rows)
    if not band_x:
        return
    fig.add_trace(
        go.Scatter(
            x=band_x,
            y=band_y,
            mode="lines",
            fill="toself",
            fillcolor=translucent(colour, alpha),
            line={"width": 0},
            hoverinfo="skip",
            legendgroup=group,
            showlegend=False,
            name=f"{group} 95% interval",
        ),
        row=row,
        col=col,
    )


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


HEIGHT_STEP_PX = 20
"""Figure heights are whole multiples of this: Chrome sizes a PDF page to 1/25 inch at best, and 20 px
(15 pt) keeps every exported page within 0.12 pt of the figure's height."""


def export_height(height_px: float) -> int:
    """``height_px`` rounded up to a whole :data:`HEIGHT_STEP_PX` (every figure's layout height)."""
    return int(math.ceil(height_px / HEIGHT_STEP_PX) * HEIGHT_STEP_PX)


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
    """A figure of panels filled row by row, with its column count, row count and height in pixels."""

    figure: go.Figure
    columns: int
    height: int
    rows: int = 1

    def position(self, index: int) -> tuple[int, int]:
        """1-based ``(row, column)`` of the ``index``-th panel."""
        return grid_position(index, self.columns)

    def is_bottom(self, index: int, n_panels: int) -> bool:
        """Whether the ``index``-th of ``n_panels`` panels has no panel below it (its x axis carries the title)."""
        return index + self.columns >= n_panels

    def lay_out(self, title: str, **layout: object) -> None:
        """Give the figure its height, ``title`` (escaped) at the top and the legend above the panels.

        The margins are :data:`LEGEND_MARGIN_PX` (build the grid with room for them, as
        :func:`condition_panels` does); ``layout`` adds layout properties or replaces these.
        """
        defaults: dict[str, object] = {
            "height": self.height,
            "title": top_title(title, self.height),
            "legend": legend_above(self.height),
            "margin": LEGEND_MARGIN_PX,
        }
        self.figure.update_layout(**{**defaults, **layout})


def panel_grid(
    titles: Sequence[str],
    *,
    max_columns: int,
    panel_height: int,
    horizontal_spacing: float,
    gap_px: int = 110,
    margin_px: int = 80,
    shared_xaxes: bool = False,
    shared_yaxes: bool = False,
) -> PanelGrid:
    """One panel per (already escaped) title, at most ``max_columns`` wide, ``panel_height`` px per row.

    ``gap_px`` is left between rows (room for the next row's title, and an axis title unless the x
    axes are shared), ``margin_px`` for the figure's title and legend.
    """
    rows, columns = subplot_grid(len(titles), max_columns)
    height = export_height(panel_height * rows + gap_px * (rows - 1) + margin_px)
    figure = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=list(titles),
        horizontal_spacing=horizontal_spacing,
        vertical_spacing=row_spacing(height, gap_px) if rows > 1 else 0.0,
        shared_xaxes=shared_xaxes,
        shared_yaxes="all" if shared_yaxes else False,
    )
    return PanelGrid(figure, columns, height, rows)


def condition_panels(
    conditions: Sequence[str],
    *,
    panel_height: int,
    horizontal_spacing: float = 0.05,
    gap_px: int = 90,
    shared_yaxes: bool = False,
) -> PanelGrid:
    """One panel per condition, titled by its two-line human label (:meth:`ConditionStyle.panel_title`).

    At most four panels a row, ``panel_height`` px each, with room above them for the figure's title
    and legend (:meth:`PanelGrid.lay_out`).
    """
    return panel_grid(
        [ConditionStyle.panel_title(condition) for condition in conditions],
        max_columns=4,
        panel_height=panel_height,
        horizontal_spacing=horizontal_spacing,
        gap_px=gap_px,
        margin_px=LEGEND_MARGIN_PX["t"] + LEGEND_MARGIN_PX["b"],
        shared_yaxes=shared_yaxes,
    )


def forest_panels(metrics: Sequence[str], *, panel_height: int) -> PanelGrid:
    """Forest-plot panels: one per metric (titled by :func:`metric_label`), two a row, ``panel_height`` px high.

    The panels share their y axis of rows (categories, condition pairs); room is left above them for
    the figure's title and legend (:meth:`PanelGrid.lay_out`) and 40 px more, where the BBQ category
    figure puts its round buttons.
    """
    return panel_grid(
        [plotly_text(metric_label(metric)) for metric in metrics],
        max_columns=2,
        panel_height=panel_height,
        horizontal_spacing=0.04,
        margin_px=LEGEND_MARGIN_PX["t"] + LEGEND_MARGIN_PX["b"] + 40,
        shared_yaxes=True,
    )


def metric_panels(metrics: Sequence[str], *, max_columns: int = 3, panel_height: int = 210) -> PanelGrid:
    """Compact small multiples: one panel per metric (titled by :func:`metric_label`), sharing the round axis."""
    return panel_grid(
        [plotly_text(metric_label(metric)) for metric in metrics],
        max_columns=max_columns,
        panel_height=panel_height,
        horizontal_spacing=0.06,
        gap_px=60,
        margin_px=LEGEND_MARGIN_PX["t"] + LEGEND_MARGIN_PX["b"],
    )


LEGEND_MARGIN_PX = {"t": 150, "b": 50, "l": 60, "r": 30}
"""Figure margins that leave room above the panels for the title, a legend of up to three lines and
two-line panel titles (:func:`legend_above`, :func:`top_title`)."""

TITLE_OFFSET_PX = 10
LEGEND_OFFSET_PX = 42
"""Distances from the figure's top edge to its title and to its legend."""


def top_title(text: str, height: int) -> dict[str, object]:
    """A figure title ``TITLE_OFFSET_PX`` below the top edge of a figure ``height`` px high (escaped ``text``)."""
    return {"text": text, "yref": "container", "y": 1 - TITLE_OFFSET_PX / height, "yanchor": "top"}


def legend_above(height: int) -> dict[str, object]:
    """A horizontal legend under the title and above the panels of a figure ``height`` px high.

    It leaves the panels the figure's full width; use with :data:`LEGEND_MARGIN_PX` and :func:`top_title`.
    """
    return {
        "orientation": "h",
        "yref": "container",
        "y": 1 - LEGEND_OFFSET_PX / height,
        "yanchor": "top",
        "x": 0.0,
        "xanchor": "left",
    }
