"""The report's single self-contained HTML page: run summary, figure index and figures.

plotly.js is embedded once in the page head; every figure is a ``<div>`` written by
``Figure.to_html(full_html=False, include_plotlyjs=False)``. Every string from the run (config
values, table names, figure titles) is HTML-escaped before it reaches the page. A figure whose
values are partly undefined is followed by a table of them, each shown as
``undefined (<reason>)`` (the figure draws them as gaps).

A live view (``workbench report --watch``) adds a banner saying how many records the page shows and
whether the run is still writing; while it is, the page reloads itself every ``refresh_s`` seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from reports.escaping import escape_html
from reports.run_results import REPORT_TABLES, RunResults
from reports.sections import ReportFigure
from workbench.run_tables import BehaviourMetric

# Undefined values listed under a figure; the rest are counted and left to results/behaviour.csv.
MAX_UNDEFINED_ROWS = 40

# Top-level config.toml tables summarised as the run's model and data, first present wins.
MODEL_TABLES = ("model",)
DATA_TABLES = ("data", "task", "tasks", "dataset")

PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1400px; padding: 0 1rem;
       color: #222; }
h1 { margin-bottom: 0.2rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
td, th { border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: left; vertical-align: top;
         font-size: 0.9rem; }
td.value { font-family: ui-monospace, monospace; }
.guide { color: #444; margin: 0.2rem 0 0.6rem; }
.omitted { color: #a33; }
.note { color: #a60; }
.undefined td, .undefined th { color: #666; }
section.figure { border-top: 1px solid #ddd; margin-top: 2rem; padding-top: 0.5rem; }
.live { background: #eef5ff; border: 1px solid #9bc; padding: 0.4rem 0.8rem; }
"""


@dataclass(frozen=True)
class LiveView:
    """What a live page says about the run it shows.

    Attributes:
        records: committed records the page's tables were computed from.
        writing: whether the run is still writing its cache (the page then reloads itself).
        refresh_s: seconds between reloads while it writes.
        built_at: when the page was built (UTC, ``HH:MM:SS``).
    """

    records: int
    writing: bool
    refresh_s: int
    built_at: str

    def banner(self) -> str:
        """The page's live-view paragraph (HTML)."""
        shown = "1 record" if self.records == 1 else f"{self.records} records"
        if self.writing:
            state = (
                f"shows the <b>{shown}</b> committed so far; the run is still writing. "
                f"This page reloads itself every {self.refresh_s} s"
            )
        else:
            state = f"shows all <b>{shown}</b>: the run has finished writing its cache. This page no longer reloads"
        return (
            f'<p class="live" id="live-view">Live view, built {self.built_at} UTC from the cache: it {state}. '
            "Probe and attribution figures appear in <code>workbench report</code> once "
            "<code>workbench probe</code> / <code>workbench attribute</code> have run.</p>"
        )


def render_report_page(
    results: RunResults, figures: list[ReportFigure], plotly_js: str, live: LiveView | None = None
) -> str:
    """The whole report page as one HTML string, with ``plotly_js`` inlined once (``live``: a live view's)."""
    name = escape_html(results.name)
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            *([f'<meta http-equiv="refresh" content="{live.refresh_s}">'] if live is not None and live.writing else []),
            f"<title>Workbench report: {name}</title>",
            f"<style>{PAGE_STYLE}</style>",
            f'<script type="text/javascript">{plotly_js}</script>',
            "</head>",
            "<body>",
            f"<h1>Workbench report: {name}</h1>",
            *([live.banner()] if live is not None else []),
            f"<p>Run folder: <code>{escape_html(str(results.run_dir))}</code></p>",
            _run_summary(results.config),
            _figure_index(figures),
            _table_status(results),
            _configuration(results.config),
            *(_figure_section(entry, entry.figure) for entry in figures if entry.figure is not None),
            "</body>",
            "</html>",
        ]
    )


def _run_summary(config: dict[str, Any] | None) -> str:
    if config is None:
        return (
            '<h2>Model and data</h2><p class="omitted">config.toml not found in the run folder, '
            "so the model and data are unknown.</p>"
        )
    return "\n".join(
        ["<h2>Model and data</h2>"]
        + [
            _config_table_summary(config, label, names)
            for label, names in (("Model", MODEL_TABLES), ("Data", DATA_TABLES))
        ]
    )


def _config_table_summary(config: dict[str, Any], label: str, names: tuple[str, ...]) -> str:
    for name in names:
        if isinstance(config.get(name), dict):
            return f"<h3>{label} <small>[{name}]</small></h3>" + _key_value_table(_flatten(config[name], prefix=""))
    wanted = " or ".join(f"[{name}]" for name in names)
    return f'<h3>{label}</h3><p class="omitted">config.toml has no {wanted} table.</p>'


def _figure_index(figures: list[ReportFigure]) -> str:
    lines = ["<h2>Figures</h2>", "<ul>"]
    for entry in figures:
        if entry.figure is not None:
            lines.append(f'<li><a href="#{entry.anchor}">{entry.title}</a>: {entry.reading_guide}</li>')
        else:
            lines.append(f'<li>{entry.title}: <span class="omitted">omitted, {entry.omitted_because}</span></li>')
    lines.append("</ul>")
    return "\n".join(lines)


def _table_status(results: RunResults) -> str:
    rows = []
    for name, table in REPORT_TABLES.items():
        values = getattr(results, name)
        status = "not found" if values is None else f"{len(values)} rows"
        rows.append(f"<tr><td>{table.path}</td><td>{status}</td><td>{table.stage}</td></tr>")
    return (
        "<h2>Tables of the run</h2><table><tr><th>file</th><th>status</th>"
        "<th>written by</th></tr>" + "".join(rows) + "</table>"
    )


def _configuration(config: dict[str, Any] | None) -> str:
    if config is None:
        return '<h2>Configuration</h2><p class="omitted">config.toml not found.</p>'
    return "<h2>Configuration <small>(config.toml)</small></h2>" + _key_value_table(_flatten(config, prefix=""))


def _flatten(table: dict[str, Any], prefix: str) -> list[tuple[str, str]]:
    """``(dotted key, value text)`` pairs of a nested TOML table, in file order."""
    pairs: list[tuple[str, str]] = []
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            pairs.extend(_flatten(value, prefix=f"{dotted}."))
        elif isinstance(value, str):
            pairs.append((dotted, value))
        else:
            pairs.append((dotted, json.dumps(value, default=str, ensure_ascii=False)))
    return pairs


def _key_value_table(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return "<p>(empty)</p>"
    rows = "".join(
        f'<tr><th>{escape_html(key)}</th><td class="value">{escape_html(value)}</td></tr>' for key, value in pairs
    )
    return f"<table>{rows}</table>"


def _undefined_values(rows: tuple[BehaviourMetric, ...]) -> str:
    """The table of a figure's undefined values (gaps), each shown as ``undefined (<reason>)``."""
    if not rows:
        return ""
    shown = rows[:MAX_UNDEFINED_ROWS]
    lines = "".join(
        f"<tr><td>{escape_html(row.condition)}</td><td>{row.round}</td><td>{escape_html(row.metric)}</td>"
        f'<td class="value">{escape_html(row.value_text())}</td><td>{row.n}</td></tr>'
        for row in shown
    )
    more = (
        f"<p>and {len(rows) - len(shown)} more undefined values in results/behaviour.csv</p>"
        if len(rows) > len(shown)
        else ""
    )
    count = "1 value is" if len(rows) == 1 else f"{len(rows)} values are"
    return (
        f'<div class="undefined"><p class="note">{count} undefined and drawn as gaps:</p>'
        "<table><tr><th>condition</th><th>round</th><th>metric</th><th>value</th><th>n</th></tr>"
        f"{lines}</table>{more}</div>"
    )


def _figure_section(entry: ReportFigure, figure: go.Figure) -> str:
    note = f'<p class="note">{entry.note}</p>' if entry.note else ""
    note += _undefined_values(entry.undefined)
    figure_html = figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"figure-{entry.anchor}",
        config={"displaylogo": False, "responsive": True},
    )
    return (
        f'<section class="figure" id="{entry.anchor}"><h2>{entry.title}</h2>'
        f'<p class="guide">{entry.reading_guide}</p>{note}{figure_html}</section>'
    )
