"""The comparison page of ``workbench compare``: one self-contained HTML page over several runs.

Reading order: the runs (model, task, conditions, rounds, depth), what differs between them (notes and
the configuration keys whose values differ), the key behaviour metrics per run with intervals and the
paired accuracy differences between runs, then the figures (behaviour per round side by side, bias
levels per checkpoint, per-layer morality and probe accuracy on a relative depth axis; chosen by
:mod:`reports.compare_sections`) and the figures that could not be drawn. plotly.js is embedded once;
every string from a run is escaped (:func:`reports.escaping.escape_html` on the page,
:func:`reports.escaping.plotly_text` in figures).
"""

from __future__ import annotations

from collections.abc import Sequence

from reports.compare import ComparedRun, Comparison
from reports.compare_sections import comparison_figures
from reports.compare_tables import (
    PAIRED_METRIC,
    between_runs,
    compared_metrics,
    config_differences,
    metric_cells,
)
from reports.escaping import escape_html
from reports.figures.style import metric_label
from reports.html_page import (
    FIGURES_ANCHOR,
    PAGE_STYLE,
    contents_entry,
    figure_section,
    figures_not_drawn,
    table_of_contents,
)
from reports.summary_section import change_text, condition_cell, estimate_text

RUNS_ANCHOR = "runs"
DIFFERENCES_ANCHOR = "differences"
METRICS_ANCHOR = "metrics"
BETWEEN_ANCHOR = "between-runs"

COMPARE_STYLE = """
table.compare td { min-width: 9rem; }
td.key { font-family: ui-monospace, monospace; }
.run { font-weight: 600; }
"""


def render_comparison_page(comparison: Comparison, plotly_js: str) -> str:
    """The whole comparison page as one HTML string, with ``plotly_js`` inlined once."""
    runs = comparison.runs
    title = escape_html(" vs ".join(run.label for run in runs))
    figures = comparison_figures(comparison)
    drawn = [entry for entry in figures if entry.figure is not None]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>Workbench comparison: {title}</title>",
            f"<style>{PAGE_STYLE}{COMPARE_STYLE}</style>",
            f'<script type="text/javascript">{plotly_js}</script>',
            "</head>",
            "<body>",
            '<div class="page">',
            table_of_contents(
                [
                    contents_entry(RUNS_ANCHOR, "Runs"),
                    contents_entry(DIFFERENCES_ANCHOR, "What differs"),
                    contents_entry(METRICS_ANCHOR, "Key metrics per run"),
                    contents_entry(BETWEEN_ANCHOR, "Paired differences between runs"),
                ],
                figures,
            ),
            "<main>",
            f"<h1>Workbench comparison: {title}</h1>",
            _facts(comparison),
            _runs_table(runs),
            _differences(comparison),
            _metrics_table(comparison),
            _between_runs_table(comparison),
            f'<h2 id="{FIGURES_ANCHOR}">Figures</h2>',
            *(figure_section(entry, entry.figure) for entry in drawn if entry.figure is not None),
            figures_not_drawn(figures),
            "</main>",
            "</div>",
            "</body>",
            "</html>",
        ]
    )


def _facts(comparison: Comparison) -> str:
    task = escape_html(comparison.runs[0].config.task.name)
    n = len(comparison.conditions)
    return (
        f'<p class="facts">{len(comparison.runs)} runs · task {task} · {n} condition{"s" if n != 1 else ""} '
        f"in every run · {comparison.level:.0%} intervals (bootstrap over items); n counts items. The first run, "
        f"<b>{escape_html(comparison.runs[0].label)}</b>, is the reference of the paired differences.</p>"
    )


def _runs_table(runs: Sequence[ComparedRun]) -> str:
    rows = []
    for run in runs:
        rounds = run.rounds
        depth = (
            f"{run.n_layers} layers"
            if run.n_layers is not None
            else f'<span class="omitted" title="{escape_html(run.depth_unknown or "")}">unknown</span>'
        )
        answers = len(run.results.items) if run.results.items is not None else None
        rows.append(
            f'<tr><td class="run">{escape_html(run.label)}</td>'
            f"<td><code>{escape_html(str(run.results.run_dir))}</code></td>"
            f"<td>{escape_html(run.config.model.spec)}</td><td>{depth}</td>"
            f"<td>{len(run.conditions)}</td>"
            f"<td>{rounds[0]}–{rounds[-1]}</td>"
            f"<td>{'not found' if answers is None else answers}</td></tr>"
        )
    return (
        f'<section id="{RUNS_ANCHOR}"><h2>Runs</h2><table><tr><th>run</th><th>folder</th><th>model</th>'
        "<th>depth</th><th>conditions</th><th>rounds</th><th>answers (items.csv)</th></tr>"
        + "".join(rows)
        + "</table></section>"
    )


def _differences(comparison: Comparison) -> str:
    runs = comparison.runs
    notes = "".join(f"<li>{escape_html(note)}</li>" for note in comparison.notes)
    differences = config_differences([run.config.to_dict() for run in runs])
    header = "<tr><th>key</th>" + "".join(f"<th>{escape_html(run.label)}</th>" for run in runs) + "</tr>"
    rows = "".join(
        f'<tr><td class="key">{escape_html(difference.key)}</td>'
        + "".join(
            f'<td class="value">{escape_html(value)}</td>' if value is not None else '<td class="n">not set</td>'
            for value in difference.values
        )
        + "</tr>"
        for difference in differences
    )
    table = (
        f'<table class="compare">{header}{rows}</table>'
        if differences
        else "<p>Every configuration key has the same value in every run.</p>"
    )
    return (
        f'<section id="{DIFFERENCES_ANCHOR}"><h2>What differs</h2>'
        + (f'<ul class="note">{notes}</ul>' if notes else "")
        + '<p class="guide">The keys of the runs\' resolved configurations (config.toml, every default written '
        "out) whose values differ; the run's name and output folder are left out.</p>" + table + "</section>"
    )


def _metrics_table(comparison: Comparison) -> str:
    runs = comparison.runs
    metrics = compared_metrics([run.results.behaviour or () for run in runs])
    guide = (
        "Per condition shared by every run and key metric (accuracy, bias scores, toxicity, when every run has "
        "them): each run's value at its first and its last round with its interval and n; the accuracy change "
        "from the first to the last round is paired over that run's items (bootstrap interval, exact sign-flip "
        "p-value)."
    )
    if not metrics:
        return (
            f'<section id="{METRICS_ANCHOR}"><h2>Key metrics per run</h2>'
            '<p class="omitted">No behaviour metric is in every run\'s results/behaviour.csv.</p></section>'
        )
    cells = [
        metric_cells(
            run.results.behaviour or (),
            run.results.items or (),
            comparison.conditions,
            metrics,
            level=comparison.level,
            n_boot=comparison.n_boot,
            seed=comparison.seed,
        )
        for run in runs
    ]
    header = (
        "<tr><th>condition</th><th>metric</th>"
        + "".join(f"<th>{escape_html(run.label)}</th>" for run in runs)
        + "</tr>"
    )
    rows = []
    for condition in comparison.conditions:
        for index, metric in enumerate(metrics):
            row = (condition_cell(condition, len(metrics)) if index == 0 else "") + (
                f"<td>{escape_html(metric_label(metric))}</td>"
            )
            for run_cells in cells:
                cell = run_cells.get((metric, condition))
                if cell is None:
                    row += '<td class="omitted">no row</td>'
                    continue
                text = f"round {cell.last_round}: {estimate_text(cell.last)}"
                if cell.first_round != cell.last_round:
                    text = f"round {cell.first_round}: {estimate_text(cell.first)}<br>" + text
                if cell.paired is not None:
                    text += f"<br>change: {change_text(cell.paired, 'items at both rounds')}"
                row += f"<td>{text}</td>"
            rows.append(f"<tr>{row}</tr>")
    return (
        f'<section id="{METRICS_ANCHOR}"><h2>Key metrics per run</h2><p class="guide">{escape_html(guide)}</p>'
        f'<table class="compare">{header}{"".join(rows)}</table></section>'
    )


def _between_runs_table(comparison: Comparison) -> str:
    runs = comparison.runs
    reference = runs[0]
    heading = f'<section id="{BETWEEN_ANCHOR}"><h2>Paired differences between runs</h2>'
    if reference.results.items is None:
        return heading + (
            f'<p class="omitted">Not computed: {escape_html(reference.results.absence("items") or "")}.</p></section>'
        )
    guide = (
        f"Each run's {PAIRED_METRIC} minus {reference.label}'s, per condition, at the last round both runs "
        "answered, paired over the items both answered (bootstrap interval, exact sign-flip p-value)."
    )
    rows = []
    for run in runs[1:]:
        if run.results.items is None:
            rows.append(
                f'<tr><td class="run">{escape_html(run.label)}</td><td colspan="3" class="omitted">'
                f"{escape_html(run.results.absence('items') or '')}</td></tr>"
            )
            continue
        for condition in comparison.conditions:
            found = between_runs(
                reference.results.items,
                run.results.items,
                condition,
                level=comparison.level,
                n_boot=comparison.n_boot,
                seed=comparison.seed,
            )
            result = (
                f"<td>{found.round}</td><td>{change_text(found.change, 'shared items')}</td>"
                if found is not None
                else '<td colspan="2" class="omitted">no item answered in both runs</td>'
            )
            rows.append(f'<tr><td class="run">{escape_html(run.label)}</td>{condition_cell(condition)}{result}</tr>')
    return (
        heading
        + f'<p class="guide">{escape_html(guide)}</p><table><tr><th>run</th><th>condition</th><th>round</th>'
        + f"<th>{escape_html(PAIRED_METRIC)} minus {escape_html(reference.label)}</th></tr>{''.join(rows)}</table>"
        + "</section>"
    )
