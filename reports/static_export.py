"""Static figures for papers: PNG, SVG and PDF files of report figures, and a one-page PDF summary, through kaleido.

kaleido (1.x) draws each figure with plotly.js in a headless Chrome or Chromium that it finds on the
machine (``$BROWSER_PATH``, else the usual names on ``PATH``); one browser session draws every file of
one export. The summary is itself a plotly figure the size of an A4 landscape page: the run's title
and facts as text, and up to :data:`SUMMARY_PANELS` report figures drawn into it as SVG images (vector
in the PDF). The HTML report never needs kaleido or Chrome.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import html
from collections.abc import Collection, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from reports.escaping import plotly_text
from workbench.run_folder import REPORT_FIGURES, REPORT_SUMMARY

EXPORT_FORMATS = ("png", "svg", "pdf")
"""File formats of one exported figure."""

SUMMARY = "summary"
"""The export choice that writes the one-page PDF summary."""

EXPORT_CHOICES = (*EXPORT_FORMATS, SUMMARY)
"""What ``workbench report --export`` takes (comma-separated); all of them by default."""


EXPORT_WIDTH_PX = 1200
"""Width of an exported figure in layout pixels (its height is the figure's own, :data:`DEFAULT_HEIGHT_PX` if unset)."""

DEFAULT_HEIGHT_PX = 500
PNG_SCALE = 2
"""PNG pixels per layout pixel (2: about 200 dpi at print size); SVG and PDF are vector."""

SUMMARY_PAGE_PX = (1123, 794)
"""The summary page, width x height in CSS pixels: A4 landscape (297 x 210 mm at 96 px per inch)."""

SUMMARY_PANELS = 4
SUMMARY_PANEL_PX = (800, 421)
"""Up to four figures, 2 x 2, each drawn at this size and scaled into its box (the box's aspect ratio)."""

SUMMARY_OMITTED_LINES = 5
"""Omitted figures named at the foot of the summary; more are counted."""

MISSING_KALEIDO = (
    "static export needs the optional package 'kaleido' (1.x), which is not installed: "
    "install it (pip install kaleido==1.5.1) or use the HTML report"
)
MISSING_CHROME = (
    "static export needs Chrome or Chromium, which kaleido did not find ({detail}): install it "
    "(Debian/Ubuntu: apt-get install chromium; anywhere: kaleido_get_chrome), or set BROWSER_PATH to its executable"
)


class StaticExporterMissingError(ImportError):
    """kaleido, or the Chrome it drives, is not installed; the message says how to install it."""


@dataclass(frozen=True)
class StaticFigure:
    """One figure to export.

    Attributes:
        anchor: its name in the report (``convergence``), the exported files' stem.
        title: its title as plain text (not escaped).
        figure: the plotly figure.
    """

    anchor: str
    title: str
    figure: go.Figure


@dataclass(frozen=True)
class SummaryPage:
    """What the one-page summary shows (plain text; escaped when drawn).

    Attributes:
        title: the page title.
        facts: one line each under the title (model, data, ...).
        figures: the figures drawn on the page, at most :data:`SUMMARY_PANELS` of them, in order.
        omitted: one line per figure of the report that could not be drawn, with why.
        footer: a last line (where the full report and the figure files are).
    """

    title: str
    facts: tuple[str, ...]
    figures: tuple[StaticFigure, ...]
    omitted: tuple[str, ...]
    footer: str


def parse_export_choices(text: str) -> tuple[str, ...]:
    """The export choices of a comma-separated ``text`` (``"png,pdf"``), in :data:`EXPORT_CHOICES` order.

    Raises:
        ValueError: an empty list or an unknown choice (the message lists the valid ones).
    """
    chosen = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [choice for choice in chosen if choice not in EXPORT_CHOICES]
    if unknown or not chosen:
        raise ValueError(
            f"--export {text!r}: {'unknown ' + ', '.join(unknown) if unknown else 'nothing chosen'}; "
            f"use a comma-separated list of {', '.join(EXPORT_CHOICES)}"
        )
    return tuple(choice for choice in EXPORT_CHOICES if choice in chosen)


def export_size(figure: go.Figure) -> tuple[int, int]:
    """``(width, height)`` in layout pixels an exported ``figure`` is drawn at."""
    height = figure.layout.height
    return EXPORT_WIDTH_PX, int(height) if height else DEFAULT_HEIGHT_PX


def export_figure(fig: go.Figure, path: Path) -> Path:
    """Write ``fig`` as a static image to ``path`` (format from its suffix: ``.png``, ``.svg`` or ``.pdf``).

    Starts a browser for this one file; :func:`export_static` draws many in one session. Returns ``path``.

    Raises:
        ValueError: another suffix.
        StaticExporterMissingError: kaleido or Chrome is missing.
    """
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in EXPORT_FORMATS:
        raise ValueError(
            f"{path}: cannot export a figure as {path.suffix or 'a file without suffix'}; "
            f"use one of {', '.join('.' + name for name in EXPORT_FORMATS)}"
        )
    width, height = export_size(fig)
    _run(_draw([(fig, path, _options(suffix, width, height))], summary=None, summary_path=None))
    return path


def export_static(
    figures: Sequence[StaticFigure], folder: Path, choices: Collection[str], summary: SummaryPage | None
) -> list[Path]:
    """Write every figure in every chosen format into ``folder/figures/``, and ``folder/summary.pdf``.

    Args:
        figures: the figures to export (``figures/<anchor>.<format>``).
        folder: the report folder.
        choices: a subset of :data:`EXPORT_CHOICES`; :data:`SUMMARY` writes the summary from ``summary``.
        summary: the summary page (required when :data:`SUMMARY` is chosen).

    Returns:
        The written files: figure by figure in ``choices`` order, then the summary.

    Raises:
        StaticExporterMissingError: kaleido or Chrome is missing (nothing is written).
    """
    formats = [name for name in EXPORT_FORMATS if name in choices]
    jobs: list[tuple[go.Figure, Path, dict[str, Any]]] = []
    for entry in figures:
        width, height = export_size(entry.figure)
        for name in formats:
            jobs.append(
                (entry.figure, folder / REPORT_FIGURES / f"{entry.anchor}.{name}", _options(name, width, height))
            )
    page = summary if SUMMARY in choices else None
    if SUMMARY in choices and summary is None:
        raise ValueError("export_static: the summary was chosen but no SummaryPage was given")
    summary_path = folder / REPORT_SUMMARY if page is not None else None
    _run(_draw(jobs, summary=page, summary_path=summary_path))
    return [path for _, path, _ in jobs] + ([summary_path] if summary_path is not None else [])


def summary_figure(page: SummaryPage, panels: Sequence[bytes]) -> go.Figure:
    """The summary page as one plotly figure: text annotations and ``panels`` (SVG files) as layout images."""
    width, height = SUMMARY_PAGE_PX
    figure = go.Figure()
    figure.update_layout(
        width=width,
        height=height,
        margin={"l": 0, "r": 0, "t": 0, "b": 0},
        paper_bgcolor="white",
        plot_bgcolor="white",
        xaxis={"visible": False, "range": [0, 1]},
        yaxis={"visible": False, "range": [0, 1]},
        showlegend=False,
    )
    left, top = 0.03, 0.965

    def text(y: float, content: str, size: int, *, x: float = left, colour: str = "#222") -> None:
        figure.add_annotation(
            text=content,
            x=x,
            y=y,
            xref="paper",
            yref="paper",
            xanchor="left",
            yanchor="top",
            align="left",
            showarrow=False,
            font={"size": size, "color": colour},
        )

    text(top, f"<b>{plotly_text(page.title)}</b>", 20)
    text(top - 0.045, "<br>".join(plotly_text(fact, 160) for fact in page.facts), 11, colour="#444")
    grid_top, cell_height, cell_width = 0.80, 0.345, 0.47
    for index, (entry, svg) in enumerate(zip(page.figures[:SUMMARY_PANELS], panels)):
        row, column = divmod(index, 2)
        x = left + column * (cell_width + 0.02)
        y = grid_top - row * (cell_height + 0.02)
        text(y, f"<b>{plotly_text(entry.title, 90)}</b>", 12, x=x)
        figure.add_layout_image(
            source="data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii"),
            xref="paper",
            yref="paper",
            x=x,
            y=y - 0.03,
            sizex=cell_width,
            sizey=cell_height - 0.03,
            xanchor="left",
            yanchor="top",
            sizing="contain",
        )
    if not page.figures:
        text(grid_top, "No figure of this run could be drawn.", 12, colour="#a33")
    foot = [plotly_text(line, 170) for line in page.omitted[:SUMMARY_OMITTED_LINES]]
    if len(page.omitted) > SUMMARY_OMITTED_LINES:
        foot.append(f"and {len(page.omitted) - SUMMARY_OMITTED_LINES} more figures not drawn")
    lines = ["Not drawn: " + foot[0], *foot[1:]] if foot else []
    lines.append(plotly_text(page.footer, 170))
    figure.add_annotation(
        text="<br>".join(lines),
        x=left,
        y=0.015,
        xref="paper",
        yref="paper",
        xanchor="left",
        yanchor="bottom",
        align="left",
        showarrow=False,
        font={"size": 9, "color": "#666"},
    )
    return figure


def plain_title(escaped: str) -> str:
    """A report title (HTML-escaped, :class:`reports.sections.ReportFigure`) as plain text."""
    return html.unescape(escaped)


def _options(name: str, width: int, height: int) -> dict[str, Any]:
    return {"format": name, "width": width, "height": height, "scale": PNG_SCALE if name == "png" else 1}


async def _draw(
    jobs: Sequence[tuple[go.Figure, Path, dict[str, Any]]], summary: SummaryPage | None, summary_path: Path | None
) -> None:
    """Draw every job, then the summary, in one kaleido browser session."""
    try:
        import kaleido
        from kaleido.errors import ChromeNotFoundError
    except ImportError:
        raise StaticExporterMissingError(MISSING_KALEIDO) from None
    try:
        browser = kaleido.Kaleido(n=1, mathjax=False)  # MathJax would be fetched from a CDN: the figures use none
    except ChromeNotFoundError as error:
        raise StaticExporterMissingError(MISSING_CHROME.format(detail=" ".join(str(error).split())[:200])) from None
    for path in {path.parent for _, path, _ in jobs} | ({summary_path.parent} if summary_path else set()):
        path.mkdir(parents=True, exist_ok=True)
    async with browser:
        if jobs:
            await browser.write_fig_from_object(
                [{"fig": figure, "path": path, "opts": options} for figure, path, options in jobs],
                cancel_on_error=True,
            )
        if summary is not None and summary_path is not None:
            width, height = SUMMARY_PANEL_PX
            panels = [
                await browser.calc_fig(entry.figure, opts=_options("svg", width, height))
                for entry in summary.figures[:SUMMARY_PANELS]
            ]
            page_width, page_height = SUMMARY_PAGE_PX
            await browser.write_fig(
                summary_figure(summary, panels),
                path=summary_path,
                opts=_options("pdf", page_width, page_height),
                cancel_on_error=True,
            )


def _run(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to completion in a thread of its own, so that it works inside a running loop (Jupyter) too."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, work).result()
