"""The report's single self-contained HTML page: summary of findings, figures, then the run's details folded.

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from reports.escaping import escape_html
from reports.run_results import REPORT_TABLES, RunResults
from reports.sections import ReportFigure
from reports.summary import summarise
from reports.summary_section import SUMMARY_ANCHOR, render_summary, toc_entries
from workbench.protocols.conditions import condition_label
from workbench.run_tables import BehaviourMetric

# Undefined values listed under a figure; the rest are counted and left to results/behaviour.csv.
MAX_UNDEFINED_ROWS = 40

# Top-level config.toml tables summarised as the run's model and data, first present wins.
MODEL_TABLES = ("model",)
DATA_TABLES = ("data", "task", "tasks", "dataset")

PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; }
.page { display: grid; grid-template-columns: 240px minmax(0, 1fr); gap: 1.5rem; max-width: 1560px;
        margin: 0 auto; padding: 0 1rem; }
nav.toc { position: sticky; top: 0; align-self: start; max-height: 100vh; overflow-y: auto;
          padding: 1rem 0.2rem 1rem 0; font-size: 0.85rem; border-right: 1px solid #e4e4e4; }
nav.toc .toc-title { font-weight: 600; margin: 0 0 0.3rem; }
nav.toc ol { list-style: none; padding-left: 0.7rem; margin: 0.1rem 0 0.4rem; }
nav.toc > ol { padding-left: 0; }
nav.toc li { margin: 0.12rem 0; }
nav.toc a { text-decoration: none; color: #1a4f8b; }
nav.toc a:hover { text-decoration: underline; }
nav.toc .not-drawn, nav.toc .not-drawn a { color: #999; }
main { min-width: 0; padding: 1rem 0 3rem; }
h1 { margin: 0.2rem 0; }
h2, h3 { scroll-margin-top: 0.5rem; }
.facts { color: #444; margin: 0.2rem 0 0.8rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
td, th { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: left; vertical-align: top;
         font-size: 0.85rem; }
th { background: #f4f4f4; }
td.value { font-family: ui-monospace, monospace; }
.summary { background: #fbfbfd; border: 1px solid #dde; padding: 0.4rem 1rem 0.6rem; }
.summary { overflow-x: auto; }
.summary p { max-width: 75rem; }
.n { color: #666; font-size: 0.85em; white-space: nowrap; }
.reading { color: #555; font-style: italic; }
.guide { color: #444; margin: 0.2rem 0 0.6rem; }
.omitted { color: #a33; }
.note { color: #a60; }
.undefined td, .undefined th { color: #666; }
section.figure { border-top: 1px solid #ddd; margin-top: 1.5rem; padding-top: 0.3rem; scroll-margin-top: 0.3rem; }
details { margin: 0.4rem 0; }
details > summary { cursor: pointer; font-weight: 600; }
.live { background: #eef5ff; border: 1px solid #9bc; padding: 0.4rem 0.8rem; }
@media (max-width: 900px) { .page { grid-template-columns: 1fr; }
  nav.toc { position: static; max-height: none; border-right: none; } }
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
    """The whole report page as one HTML string, with ``plotly_js`` inlined once (``live``: a live view's).

    Reading order: the run's name and facts, the summary of findings (:mod:`reports.summary`), the
    drawn figures, the figures that could not be drawn and why, then the run's details folded
    (model and data, the status of every table, the configuration). A sticky table of contents
    beside the page links to each of them.
    """
    name = escape_html(results.name)
    drawn = [entry for entry in figures if entry.figure is not None]
    anchors = {entry.anchor for entry in drawn}
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
            '<div class="page">',
            table_of_contents(
                [contents_entry(SUMMARY_ANCHOR, "Summary of findings", toc_entries())],
                figures,
                [contents_entry(DETAILS_ANCHOR, "Run details")],
            ),
            "<main>",
            f"<h1>Workbench report: {name}</h1>",
            *([live.banner()] if live is not None else []),
            _run_facts(results),
            render_summary(summarise(results), anchors, _site_anchors(drawn)),
            f'<h2 id="{FIGURES_ANCHOR}">Figures</h2>',
            *(figure_section(entry, entry.figure) for entry in drawn),
            figures_not_drawn(figures),
            _run_details(results),
            "</main>",
            "</div>",
            "</body>",
            "</html>",
        ]
    )


FIGURES_ANCHOR = "figures"
NOT_DRAWN_ANCHOR = "figures-not-drawn"
DETAILS_ANCHOR = "run-details"


def _site_anchors(drawn: list[ReportFigure]) -> dict[str, str]:
    """The anchor that shows each morality site: its layer profile when drawn, else its heatmap."""
    anchors: dict[str, str] = {}
    for prefix in ("layer-profile-", "morality-"):
        for entry in drawn:
            if entry.anchor.startswith(prefix) and entry.subject is not None:
                anchors.setdefault(entry.subject, entry.anchor)
    return anchors


def contents_entry(anchor: str, title: str, children: Sequence[tuple[str, str]] | None = None) -> str:
    """One entry of a page's table of contents: a link to ``anchor`` titled ``title`` (HTML-safe).

    ``children`` (``(anchor, title)`` pairs) are listed under it as a nested list when given.
    """
    nested = "" if children is None else "<ol>" + "".join(contents_entry(a, t) for a, t in children) + "</ol>"
    return f'<li><a href="#{anchor}">{title}</a>{nested}</li>'


def table_of_contents(before: Sequence[str], figures: Sequence[ReportFigure], after: Sequence[str] = ()) -> str:
    """The sticky table of contents (``nav.toc``) of a report or comparison page.

    The entries ``before`` (:func:`contents_entry`), then "Figures" listing every figure: a drawn
    one links to its section, one not drawn is greyed, links to :data:`NOT_DRAWN_ANCHOR` and carries
    its reason as its tooltip. Then the entries ``after``.
    """
    entries = []
    for entry in figures:
        if entry.figure is not None:
            entries.append(f'<li><a href="#{entry.anchor}">{entry.title}</a></li>')
        else:
            entries.append(
                f'<li class="not-drawn" title="{entry.omitted_because}">'
                f'<a href="#{NOT_DRAWN_ANCHOR}">{entry.title}</a> (not drawn)</li>'
            )
    return (
        '<nav class="toc" id="contents"><p class="toc-title">Contents</p><ol>'
        + "".join(before)
        + f'<li><a href="#{FIGURES_ANCHOR}">Figures</a><ol>{"".join(entries)}</ol></li>'
        + "".join(after)
        + "</ol></nav>"
    )


def _run_facts(results: RunResults) -> str:
    """One line under the title: the run folder, model, task, conditions and rounds."""
    facts = [f"Run folder: <code>{escape_html(str(results.run_dir))}</code>"]
    config = results.config or {}
    model = _first_table(config, MODEL_TABLES)
    if model is not None:
        facts.append("model " + escape_html(str(model.get("spec", model.get("name", "?")))))
    data = _first_table(config, DATA_TABLES)
    if data is not None:
        facts.append("task " + escape_html(str(data.get("name", data.get("task", "?")))))
    if results.conditions:
        facts.append(f"{len(results.conditions)} condition{'s' if len(results.conditions) != 1 else ''}")
    rounds = sorted({row.round for row in results.behaviour or ()})
    if rounds:
        facts.append(f"rounds {rounds[0]}–{rounds[-1]}" if len(rounds) > 1 else f"round {rounds[0]}")
    if results.items:
        facts.append(f"{len(results.items)} answers")
    return f'<p class="facts">{" · ".join(facts)}</p>'


def _first_table(config: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any] | None:
    for name in names:
        table = config.get(name)
        if isinstance(table, dict):
            return table
    return None


def figures_not_drawn(figures: Sequence[ReportFigure]) -> str:
    """The section listing the figures that could not be drawn and why (empty when every figure is drawn)."""
    missing = [entry for entry in figures if entry.figure is None]
    if not missing:
        return ""
    lines = "".join(
        f'<li>{entry.title}: <span class="omitted">omitted, {entry.omitted_because}</span></li>' for entry in missing
    )
    return f'<section id="{NOT_DRAWN_ANCHOR}"><h2>Figures not drawn</h2><ul>{lines}</ul></section>'


def _run_details(results: RunResults) -> str:
    """Model and data, table status and configuration, each folded (``<details>``)."""
    return (
        f'<section id="{DETAILS_ANCHOR}"><h2>Run details</h2>'
        f"<details><summary>Model and data</summary>{_run_summary(results.config)}</details>"
        f"<details><summary>Tables of the run (file status)</summary>{_table_status(results)}</details>"
        f"<details><summary>Configuration (config.toml)</summary>{_configuration(results.config)}</details>"
        "</section>"
    )


def _run_summary(config: dict[str, Any] | None) -> str:
    if config is None:
        return '<p class="omitted">config.toml not found in the run folder, so the model and data are unknown.</p>'
    return "\n".join(
        [
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


def _table_status(results: RunResults) -> str:
    rows = []
    for name, table in REPORT_TABLES.items():
        values = getattr(results, name)
        status = "not found" if values is None else f"{len(values)} rows"
        rows.append(f"<tr><td>{table.path}</td><td>{status}</td><td>{table.stage}</td></tr>")
    return "<table><tr><th>file</th><th>status</th><th>written by</th></tr>" + "".join(rows) + "</table>"


def _configuration(config: dict[str, Any] | None) -> str:
    if config is None:
        return '<p class="omitted">config.toml not found.</p>'
    return _key_value_table(_flatten(config, prefix=""))


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
        f'<tr><td title="{escape_html(row.condition)}">{escape_html(condition_label(row.condition))}</td>'
        f"<td>{row.round}</td><td>{escape_html(row.metric)}</td>"
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


def figure_section(entry: ReportFigure, figure: go.Figure) -> str:
    """The section of the drawn figure ``entry``: its title, reading guide, note, undefined values and figure."""
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
