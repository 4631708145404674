"""``workbench report``: the self-contained HTML report of one run folder, its static export, and its live view.

- :func:`build_report` writes ``index.html`` from the run folder's tables.
- :func:`export_report` writes every drawn figure as PNG / SVG / PDF and a one-page PDF summary
  (:mod:`reports.static_export`, through kaleido and Chrome).
- :func:`watch_report` (``--watch``) rebuilds the page from the cache of a run that is still writing:
  whenever more records are committed it computes the behavioural tables from them (as
  ``workbench results`` would, into a scratch folder: the run folder's own ``results/`` is not touched)
  and writes a page that says how many records it shows and reloads itself. It returns once the run
  has closed its cache, and refuses, in one line, a cache marked as being written whose writer is gone.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import plotly.offline

from activations_cache import CacheFormatError, gone_writer, open_cache
from reports.html_page import DATA_TABLES, MODEL_TABLES, LiveView, render_report_page
from reports.run_results import RunResults
from reports.sections import ReportFigure, report_figures
from reports.static_export import (
    EXPORT_CHOICES,
    EXPORT_FORMATS,
    SUMMARY_PANELS,
    StaticFigure,
    SummaryPage,
    export_static,
    plain_title,
)
from workbench.run_folder import REPORT_FIGURES, REPORT_PAGE, RunFolder, RunFolderError

WATCH_INTERVAL_S = 5.0
"""Default seconds between two looks at the cache of a watched run (and between two reloads of its page)."""

LIVE_READ_ATTEMPTS = 10
"""Consecutive looks at a cache being written whose records cannot be read before the watch gives up."""

WRITER_GRACE_S = 1.0
"""How long a cache that looks abandoned by its writer is given before the watch calls the run crashed."""

SUMMARY_PRIORITY = ("convergence", "morality-0", "interactions", "bias-levels")
"""Report figures the one-page summary shows first, when drawn; the other drawn figures fill its free panels."""

# Top-level config.toml tables the summary names (each: the first present wins) and how many of their keys it shows.
SUMMARY_CONFIG_TABLES = (MODEL_TABLES, DATA_TABLES, ("protocol",))
SUMMARY_CONFIG_KEYS = 6


def build_report(run_dir: Path, out_dir: Path | None = None) -> Path:
    """Write ``index.html`` for the run folder ``run_dir`` (or its ``cache.h5``); return its path.

    The page goes to ``out_dir`` when given, else to ``<run folder>/report/``. It opens offline:
    plotly.js is embedded once. Figures whose tables are missing are left out and the page says
    why. Raises ``workbench.run_folder.RunFolderError`` / ``TableFormatError`` (both ``ValueError``) for bad input.
    """
    results = RunResults.load(run_dir)
    return _write_page(results, _target(results, out_dir), live=None)


def export_report(run_dir: Path, out_dir: Path | None = None, choices: Collection[str] = EXPORT_CHOICES) -> list[Path]:
    """Write the report's drawn figures as static files and its one-page summary; return the written files.

    Args:
        run_dir: the run folder (or its ``cache.h5``).
        out_dir: the report folder (default ``<run folder>/report/``): files go to ``figures/<anchor>.<format>``
            and ``summary.pdf`` in it.
        choices: a subset of :data:`reports.static_export.EXPORT_CHOICES` (``png``, ``svg``, ``pdf``, ``summary``).

    Raises:
        RunFolderError / TableFormatError: a bad run folder; StaticExporterMissingError: kaleido or Chrome missing.
    """
    results = RunResults.load(run_dir)
    figures = report_figures(results)
    drawn = [
        StaticFigure(entry.anchor, plain_title(entry.title), entry.figure)
        for entry in figures
        if entry.figure is not None
    ]
    target = _target(results, out_dir)
    return export_static(drawn, target, choices, summary_page(results, figures, drawn, target, choices))


@dataclass(frozen=True)
class LiveBuild:
    """One page written by :func:`watch_report`.

    Attributes:
        page: the page written.
        records: committed records it shows.
        writing: whether the run was still writing (``False`` for the last page).
    """

    page: Path
    records: int
    writing: bool


def watch_report(
    run_dir: Path,
    out_dir: Path | None = None,
    *,
    interval_s: float = WATCH_INTERVAL_S,
    on_build: Callable[[LiveBuild], None] | None = None,
    on_wait: Callable[[Path], None] | None = None,
) -> Path:
    """Rebuild the report of a running run whenever it commits records, until it closes its cache.

    Waits for the run folder's ``cache.h5`` to appear (calling ``on_wait`` with its path once), looks at
    it every ``interval_s`` seconds
    (opening it read-only in SWMR mode), and writes a page whenever the committed count changed, and
    once more when the run has closed its cache. Each page's behavioural tables are computed from the
    committed records; the page reloads itself every ``interval_s`` seconds (at least 1) while the run
    writes. Returns the page's path; ``on_build`` is called after every page.

    Raises:
        RunFolderError: ``run_dir`` is a file, or its cache is marked as being written but its writer is
            gone (the run crashed; the message says how to resume it).
    """
    folder = RunFolder.at(run_dir)
    if folder.root.exists() and not folder.root.is_dir():
        raise RunFolderError(f"{run_dir} is a file; watch a run folder (runs/<name>) or its cache.h5")
    importlib.import_module("workbench.pipeline")  # the model stack: loaded while the run starts, not at its first page
    shown: int | None = None
    waited = False
    torn_reads = 0
    while True:
        if not folder.cache.is_file():
            if on_wait is not None and not waited:
                on_wait(folder.cache)
            waited = True
            time.sleep(interval_s)
            continue
        records, writing = _cache_state(folder.cache)
        gone = gone_writer(folder.cache) if writing else None
        if gone is not None:
            time.sleep(WRITER_GRACE_S)  # it may have closed the file, or a resuming writer taken the lock, just now
            records, writing = _cache_state(folder.cache)
            gone = gone_writer(folder.cache) if writing else None
            if gone is not None:
                raise RunFolderError(
                    f"{folder.cache} is marked as being written but {gone}: the run crashed or was killed "
                    f"with {records} records committed; rerun the same `workbench run CONFIG` to resume it "
                    f"(`workbench cache repair {folder.cache}` if it will not open), then watch again"
                )
        if records != shown or not writing:
            try:
                build = _live_build(folder, out_dir, writing, interval_s)
            except CacheFormatError:
                # A reader that opens between two commits of a running writer can count records whose text
                # lies past the end of file it saw at opening: read again at the next look, a few times.
                torn_reads += 1
                if not writing or torn_reads > LIVE_READ_ATTEMPTS:
                    raise
                time.sleep(interval_s)
                continue
            torn_reads = 0
            shown = build.records
            if on_build is not None:
                on_build(build)
            if not writing:
                return build.page
        time.sleep(interval_s)


def _cache_state(cache: Path) -> tuple[int, bool]:
    """(committed records, whether the file is marked open for write) of a run cache, at this moment."""
    with open_cache(cache, expect="run", strict=False) as reader:
        return reader.n_records, reader.superblock.open_for_write


def _live_build(folder: RunFolder, out_dir: Path | None, writing: bool, interval_s: float) -> LiveBuild:
    """Compute the behavioural tables from the committed records and write the live page."""
    from workbench.config import RunConfig
    from workbench.experiment.records import read_run_records
    from workbench.metrics.tables import compute_results, record_row, write_results

    rows = [record_row(record) for record in read_run_records(folder.cache)]
    tables = compute_results(rows, RunConfig.of_run(folder.root).results)
    with tempfile.TemporaryDirectory(prefix="workbench-live-") as scratch:
        live_folder = RunFolder(Path(scratch))
        write_results(tables, live_folder.results)
        if folder.config.is_file():
            shutil.copyfile(folder.config, live_folder.config)
        results = dataclasses.replace(RunResults.load(live_folder.root), run_dir=folder.root)
    live = LiveView(
        records=len(rows),
        writing=writing,
        refresh_s=max(1, round(interval_s)),
        built_at=datetime.now(UTC).strftime("%H:%M:%S"),
    )
    return LiveBuild(_write_page(results, _target(results, out_dir), live), len(rows), writing)


def _target(results: RunResults, out_dir: Path | None) -> Path:
    return out_dir if out_dir is not None else RunFolder(results.run_dir).report


def _write_page(results: RunResults, target: Path, live: LiveView | None) -> Path:
    """Write the page into ``target`` atomically (a browser reloading it never reads half a page)."""
    page = render_report_page(results, report_figures(results), plotly.offline.get_plotlyjs(), live)
    target.mkdir(parents=True, exist_ok=True)
    path = target / REPORT_PAGE
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=target)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(page)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path


def summary_page(
    results: RunResults,
    figures: list[ReportFigure],
    drawn: list[StaticFigure],
    target: Path,
    choices: Collection[str],
) -> SummaryPage:
    """The one-page summary of ``results``: the run's name and configuration, its headline figures, what was not drawn.

    The figures are the drawn ones of :data:`SUMMARY_PRIORITY` first, then other drawn ones, at most
    :data:`SUMMARY_PANELS`, in report order; ``target`` is the report folder and ``choices`` the export
    choices (the footer says where the figure files are).
    """
    chosen = sorted(drawn, key=lambda entry: _summary_rank(entry.anchor))[:SUMMARY_PANELS]
    chosen.sort(key=drawn.index)
    facts = [f"Run folder: {results.run_dir}"]
    config = results.config or {}
    for names in SUMMARY_CONFIG_TABLES:
        name = next((name for name in names if isinstance(config.get(name), dict)), None)
        if name is not None:
            pairs = [(key, value) for key, value in config[name].items() if not isinstance(value, dict)]
            shown = ", ".join(f"{key} = {value}" for key, value in pairs[:SUMMARY_CONFIG_KEYS])
            facts.append(f"[{name}] {shown}" + (", ..." if len(pairs) > SUMMARY_CONFIG_KEYS else ""))
    if results.config is None:
        facts.append("config.toml not found in the run folder: the model and data are unknown")
    omitted = tuple(
        f"{plain_title(entry.title)}: {plain_title(entry.omitted_because or '')}"
        for entry in figures
        if entry.figure is None
    )
    others = len(drawn) - len(chosen)
    formats = [name.upper() for name in EXPORT_FORMATS if name in choices]
    files = (
        f"every figure as {', '.join(formats)}: {target / REPORT_FIGURES}/"
        if formats
        else "every figure as PNG, SVG and PDF: workbench report --export png,svg,pdf"
    )
    footer = f"The full interactive report: {target / REPORT_PAGE}" + (f" ({others} more figures)" if others else "")
    footer += f"; {files}."
    return SummaryPage(f"Workbench report: {results.name}", tuple(facts), tuple(chosen), omitted, footer)


def _summary_rank(anchor: str) -> int:
    return SUMMARY_PRIORITY.index(anchor) if anchor in SUMMARY_PRIORITY else len(SUMMARY_PRIORITY)
