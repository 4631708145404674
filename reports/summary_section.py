"""The HTML of the report's opening summary (:mod:`reports.summary` computes what it says).

Every statement names its sample size and interval, links to the figure it summarises (when that
figure is drawn), and shows a condition by its human label with the raw name as a tooltip. A part
without its table says which command makes it. Every string from the run is HTML-escaped.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from reports.escaping import escape_html
from reports.figures.style import metric_label
from reports.summary import (
    CategoryBias,
    MoralityChange,
    ReferenceComparison,
    RoundChange,
    RunSummary,
    TableEstimate,
    moved,
)
from workbench.metrics.statistics import PairedChange
from workbench.protocols.conditions import condition_label

SUMMARY_ANCHOR = "summary"
PART_ANCHORS = {
    "rounds": "summary-rounds",
    "reference": "summary-reference",
    "hidden": "summary-hidden",
    "categories": "summary-categories",
}
FOLD_CATEGORIES_OVER = 4
"""The per-category table is folded (``<details>``) for runs with more conditions than this."""
PART_TITLES = {
    "rounds": "Change over rounds",
    "reference": "Against no instruction",
    "hidden": "Hidden states beside behaviour",
    "categories": "BBQ bias per category",
}


def number(value: float | None, signed: bool = False) -> str:
    """``value`` to three significant digits (with its sign when ``signed``); ``undefined`` for ``None``/nan."""
    if value is None or math.isnan(value):
        return "undefined"
    text = f"{value:+.3g}" if signed else f"{value:.3g}"
    return text.replace("-", "−")


def interval(low: float | None, high: float | None) -> str:
    """`` [low, high]``, or ``(no interval)`` when a bound is unknown."""
    if low is None or high is None:
        return " (no interval)"
    return f" [{number(low)}, {number(high)}]"


def p_text(p_value: float) -> str:
    """``p = 0.042``, ``p < 0.001``."""
    if math.isnan(p_value):
        return "p undefined"
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"


def estimate_text(estimate: TableEstimate | None) -> str:
    """A table value with its interval and n (escaped HTML)."""
    if estimate is None:
        return '<span class="omitted">no row</span>'
    if estimate.value is None:
        return escape_html(f"undefined ({estimate.undefined_reason or 'not computable'}), n = {estimate.n}")
    return escape_html(f"{number(estimate.value)}{interval(estimate.ci_low, estimate.ci_high)}") + (
        f' <span class="n">n = {estimate.n}</span>'
    )


def change_text(change: PairedChange, what: str = "paired") -> str:
    """A paired change with interval, p-value and n (escaped HTML)."""
    return escape_html(f"{number(change.difference, signed=True)}{interval(change.ci_low, change.ci_high)}, ") + (
        f'{p_text(change.p_value)} <span class="n">n = {change.n} {escape_html(what)}</span>'
    )


def condition_cell(name: str, rowspan: int = 1) -> str:
    """A table cell with the condition's human label and its raw name as the tooltip."""
    span = f' rowspan="{rowspan}"' if rowspan > 1 else ""
    return f'<td class="condition"{span} title="{escape_html(name)}">{escape_html(condition_label(name))}</td>'


def _link(text: str, anchor: str | None) -> str:
    """``text`` (HTML) linked to the figure ``anchor``, or plain when that figure is not drawn."""
    return f'<a href="#{anchor}">{text}</a>' if anchor is not None else text


def _figure_link(anchor: str | None, title: str) -> str:
    if anchor is None:
        return f'<span class="omitted">(figure not drawn: {escape_html(title)})</span>'
    return f'Figure: <a href="#{anchor}">{escape_html(title)}</a>.'


def render_summary(summary: RunSummary, drawn: Collection[str], site_anchors: dict[str, str]) -> str:
    """The summary section (HTML).

    Args:
        summary: what to say (:func:`reports.summary.summarise`).
        drawn: anchors of the figures drawn on the page (statements link only to those).
        site_anchors: the figure anchor of each morality site (its layer profile, else its heatmap).
    """
    level = f"{summary.level:.0%}"
    intro = (
        f"Computed from this run's tables: {len(summary.conditions)} condition"
        f"{'s' if len(summary.conditions) != 1 else ''}"
        + (f", rounds {summary.rounds[0]} to {summary.rounds[-1]}" if summary.rounds else "")
        + f". Brackets hold {level} intervals (bootstrap over items); n counts items. A change is called "
        "distinguishable from none only when its interval says so: a paired interval that excludes 0, or, "
        "where the tables hold no paired interval, two rounds' intervals that do not overlap."
    )
    parts = [
        f'<section class="summary" id="{SUMMARY_ANCHOR}"><h2>Summary of findings</h2>',
        f'<p class="guide">{escape_html(intro)}</p>',
        _rounds_part(summary, _anchor("convergence", drawn), level),
        _reference_part(summary, _anchor("paired-tests", drawn), level),
        _hidden_part(summary, site_anchors),
        _categories_part(summary, _anchor("bbq-categories", drawn), level),
        "</section>",
    ]
    return "\n".join(parts)


def _anchor(anchor: str, drawn: Collection[str]) -> str | None:
    return anchor if anchor in drawn else None


def _heading(part: str) -> str:
    return f'<h3 id="{PART_ANCHORS[part]}">{PART_TITLES[part]}</h3>'


def _missing(part: str, reason: str) -> str:
    return f'{_heading(part)}<p class="omitted">Not summarised: {escape_html(reason)}.</p>'


def _converges_text(change: RoundChange, missing: str | None) -> str:
    if missing is not None:
        return '<span class="omitted">unknown</span>'
    if not change.convergence_listed:
        return "not computed (a round is undefined)"
    if change.convergence_round is None:
        return f"keeps changing (within {change.last_round - change.first_round + 1} rounds)"
    if change.convergence_round == change.first_round:
        return f"no change after round {change.first_round}"
    return f"from round {change.convergence_round}"


def _round_change_text(change: RoundChange) -> str:
    if change.paired is not None:
        reading = moved(change.first, change.last, change.paired)
        verdict = {True: "distinguishable", False: "interval includes 0", None: "no interval"}[reading]
        return change_text(change.paired, "items at both rounds") + f'<br><span class="reading">{verdict}</span>'
    reading = moved(change.first, change.last)
    verdict = {
        True: "the rounds' intervals do not overlap",
        False: "the rounds' intervals overlap",
        None: "no interval to compare",
    }[reading]
    return f'<span class="reading">{verdict}</span>'


def _rounds_part(summary: RunSummary, anchor: str | None, level: str) -> str:
    part = summary.rounds_part
    if part.missing is not None:
        return _missing("rounds", part.missing)
    changes = part.findings
    first, last = changes[0].first_round, changes[0].last_round
    eps = f" (|change| < {summary.convergence_eps:g} per round)" if summary.convergence_eps is not None else ""
    lead = (
        f"Per condition: each headline metric at round {first} and at round {last} with its {level} interval; "
        f"the accuracy change is paired over the items answered at both rounds (bootstrap interval, exact "
        f"sign-flip p-value); other metrics compare the two rounds' intervals. The last column is the round "
        f"from which the metric stops changing{eps}."
    )
    note = (
        f'<p class="omitted">No convergence round is known: {escape_html(summary.convergence_missing)}.</p>'
        if summary.convergence_missing is not None
        else ""
    )
    rows = []
    for condition in dict.fromkeys(change.condition for change in changes):
        own = [change for change in changes if change.condition == condition]
        for index, change in enumerate(own):
            rows.append(
                "<tr>"
                + (condition_cell(condition, len(own)) if index == 0 else "")
                + f"<td>{_link(escape_html(metric_label(change.metric)), anchor)}</td>"
                + f"<td>{estimate_text(change.first)}</td><td>{estimate_text(change.last)}</td>"
                + f"<td>{_round_change_text(change)}</td>"
                + f"<td>{_converges_text(change, summary.convergence_missing)}</td></tr>"
            )
    return (
        f"{_heading('rounds')}<p>{escape_html(lead)} {_figure_link(anchor, 'Behaviour per round and convergence')}</p>"
        f'{note}<table class="findings"><tr><th>condition</th><th>metric</th><th>round {first}</th>'
        f"<th>round {last}</th><th>change</th><th>stops changing</th></tr>{''.join(rows)}</table>"
    )


def _reference_part(summary: RunSummary, anchor: str | None, level: str) -> str:
    part = summary.reference_part
    if part.missing is not None:
        return _missing("reference", part.missing)
    comparisons: Sequence[ReferenceComparison] = part.findings
    rounds = list(dict.fromkeys(c.round for c in comparisons))
    lead = (
        "Each instructed condition minus the no-instruction condition with the same CoT and feedback, on the "
        f"same items (results/paired_tests.csv): mean difference, {level} bootstrap interval, two-sided "
        "sign-flip p-value, n items."
    )
    rows = []
    keys = list(dict.fromkeys((c.condition, c.reference, c.metric) for c in comparisons))
    by_key = {(c.condition, c.reference, c.metric, c.round): c for c in comparisons}
    for condition in dict.fromkeys(key[0] for key in keys):
        own = [key for key in keys if key[0] == condition]
        for index, (_, reference, metric) in enumerate(own):
            cells = []
            for round_ in rounds:
                found = by_key.get((condition, reference, metric, round_))
                if found is None:
                    cells.append('<td class="omitted">no test</td>')
                    continue
                reading = moved(None, None, found.change)
                verdict = {True: "distinguishable", False: "interval includes 0", None: "no interval"}[reading]
                cells.append(f'<td>{change_text(found.change)}<br><span class="reading">{verdict}</span></td>')
            rows.append(
                "<tr>"
                + (condition_cell(condition, len(own)) if index == 0 else "")
                + f'<td title="{escape_html(reference)}">{escape_html(condition_label(reference))}</td>'
                + f"<td>{_link(escape_html(metric_label(metric)), anchor)}</td>"
                + "".join(cells)
                + "</tr>"
            )
    header = "".join(f"<th>round {round_}</th>" for round_ in rounds)
    return (
        f"{_heading('reference')}<p>{escape_html(lead)} {_figure_link(anchor, 'Paired tests between conditions')}</p>"
        f'<table class="findings"><tr><th>condition</th><th>minus</th><th>metric</th>{header}</tr>'
        f"{''.join(rows)}</table>"
    )


def _behaviour_reading(changes: Sequence[RoundChange]) -> tuple[str, bool | None]:
    """The behaviour cell of a condition (HTML) and whether any headline metric changed distinguishably."""
    lines = []
    readings = []
    for change in changes:
        reading = moved(change.first, change.last, change.paired)
        readings.append(reading)
        if change.paired is not None:
            text = change_text(change.paired, "items")
        else:
            text = f"{estimate_text(change.first)} → {estimate_text(change.last)}"
        lines.append(f"{escape_html(metric_label(change.metric))}: {text}")
    overall = True if True in readings else False if False in readings else None
    return "<br>".join(lines) or '<span class="omitted">no behaviour rows</span>', overall


def _hidden_part(summary: RunSummary, site_anchors: dict[str, str]) -> str:
    part = summary.morality_part
    if part.missing is not None:
        return _missing("hidden", part.missing)
    changes: Sequence[MoralityChange] = part.findings
    first, last = changes[0].first_round, changes[0].last_round
    behaviour = summary.rounds_part.findings
    lead = (
        f"Per condition: the behavioural change from round {first} to round {last} beside the hidden-state "
        "morality measured by the probes at the same rounds (probes/morality.csv, with intervals). The "
        "reading says which of the two changed distinguishably; a behaviour that changes while the hidden "
        "state does not is what the superficial hypothesis expects."
    )
    links = " ".join(f'<a href="#{anchor}">{escape_html(site)}</a>' for site, anchor in site_anchors.items())
    rows = []
    for condition in dict.fromkeys(change.condition for change in changes):
        own = [change for change in changes if change.condition == condition]
        behaviour_html, behaviour_moved = _behaviour_reading([c for c in behaviour if c.condition == condition])
        for index, change in enumerate(own):
            hidden_moved = moved(change.first, change.last)
            where = change.site if change.banded else f"{change.site}, layer {change.layer}"
            measure = escape_html(f"{metric_label(change.measure)} at {where}")
            measure = _link(measure, site_anchors.get(change.site))
            rows.append(
                "<tr>"
                + (condition_cell(condition, len(own)) if index == 0 else "")
                + (f'<td rowspan="{len(own)}">{behaviour_html}</td>' if index == 0 else "")
                + f'<td>{measure}<br><span class="n">{escape_html(change.layer_reason)}</span></td>'
                + f"<td>{estimate_text(change.first)}</td><td>{estimate_text(change.last)}</td>"
                + f'<td class="reading">{_together(behaviour_moved, hidden_moved)}</td></tr>'
            )
    return (
        f"{_heading('hidden')}<p>{escape_html(lead)} Figures: {links or '(not drawn)'}.</p>"
        f'<table class="findings"><tr><th>condition</th><th>behaviour, round {first} → {last}</th>'
        f"<th>hidden-state measure</th><th>round {first}</th><th>round {last}</th><th>reading</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _together(behaviour: bool | None, hidden: bool | None) -> str:
    """Neutral words for what changed: the behaviour, the hidden state, both or neither."""
    said = {True: "changed", False: "no distinguishable change", None: "cannot tell (no interval)"}
    return f"behaviour: {said[behaviour]}; hidden state: {said[hidden]}"


def _categories_part(summary: RunSummary, anchor: str | None, level: str) -> str:
    part = summary.categories_part
    if part.missing is not None:
        return _missing("categories", part.missing)
    biases: Sequence[CategoryBias] = part.findings
    round_ = biases[0].round
    conditions = [c for c in summary.conditions if any(b.condition == c for b in biases)]
    lead = (
        f"BBQ bias scores per category at round {round_}, as BBQ's authors compute them ('all' pools every "
        f"category; '(names)' are the proper-name templates), with {level} intervals and n items; 0 is no bias."
    )
    cells = {(b.category, b.metric, b.condition): b for b in biases}
    keys = list(dict.fromkeys((b.category, b.metric) for b in biases))
    rows = []
    for category, metric in keys:
        values = "".join(
            f"<td>{estimate_text(cells[(category, metric, c)].estimate) if (category, metric, c) in cells else ''}</td>"
            for c in conditions
        )
        rows.append(
            f"<tr><td>{escape_html(category)}</td><td>{_link(escape_html(metric_label(metric)), anchor)}</td>"
            f"{values}</tr>"
        )
    header = "".join(f'<th title="{escape_html(c)}">{escape_html(condition_label(c))}</th>' for c in conditions)
    table = f'<table class="findings"><tr><th>category</th><th>metric</th>{header}</tr>{"".join(rows)}</table>'
    if len(conditions) > FOLD_CATEGORIES_OVER:
        folded = f"The table: {len(keys)} rows x {len(conditions)} conditions"
        table = f"<details><summary>{folded}</summary>{table}</details>"
    return (
        f"{_heading('categories')}<p>{escape_html(lead)} {_figure_link(anchor, 'BBQ bias score per category')}</p>"
        f"{_extremes(biases)}{table}"
    )


def _extremes(biases: Sequence[CategoryBias]) -> str:
    """One line per bias metric: the category cells (``all`` left out) with the largest and smallest score."""
    lines = []
    for metric in dict.fromkeys(b.metric for b in biases):
        cells = [b for b in biases if b.metric == metric and b.category != "all" and b.estimate.value is not None]
        if not cells:
            continue
        ordered = sorted(cells, key=lambda b: b.estimate.value or 0.0)
        words = [
            f"{which} {estimate_text(b.estimate)} ({escape_html(b.category)}, "
            f'<span title="{escape_html(b.condition)}">{escape_html(condition_label(b.condition))}</span>)'
            for which, b in (("highest", ordered[-1]), ("lowest", ordered[0]))
        ]
        lines.append(f"<li>{escape_html(metric_label(metric))}: {'; '.join(words)}</li>")
    return f"<ul>{''.join(lines)}</ul>" if lines else ""


def toc_entries() -> list[tuple[str, str]]:
    """``(anchor, title)`` of the summary's parts, for the table of contents."""
    return [(PART_ANCHORS[part], PART_TITLES[part]) for part in PART_ANCHORS]
