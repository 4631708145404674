"""Paired tests: two conditions compared on the same items at each round, as a forest plot."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from reports.escaping import plotly_text
from reports.figures.round_series import interval_error_bars, interval_text, number_text
from reports.figures.style import (
    LABEL_SEPARATOR,
    LEGEND_MARGIN_PX,
    ConditionStyle,
    forest_panels,
    metric_label,
    round_colours,
)
from workbench.protocols.conditions import ConditionError, condition_label, factors_apart
from workbench.run_tables import PairedTest

ROW_HEIGHT_PX = 46
"""Height of one pair's row in the forest plot."""

ROUND_SPREAD = 0.5
"""How much of a pair's row the rounds' markers spread over (they sit side by side, round 0 on top)."""


def oriented(test: PairedTest, style: ConditionStyle) -> tuple[str, str, float, float | None, float | None]:
    """``(first, second, difference, ci_low, ci_high)`` of ``test`` with ``first`` the later condition in run order.

    The table's difference is ``condition_a - condition_b``; a pair whose ``condition_a`` comes first
    in the run's order (the no-instruction condition, say) is turned round (the difference and its
    interval change sign), so that every pair reads "later condition minus earlier condition".
    """
    a, b = test.condition_a, test.condition_b
    if style.conditions.index(a) > style.conditions.index(b):
        return a, b, test.difference, test.ci_low, test.ci_high
    low = None if test.ci_high is None else -test.ci_high
    high = None if test.ci_low is None else -test.ci_low
    return b, a, -test.difference, low, high


def one_factor_apart(first: str, second: str) -> bool:
    """Whether two condition names differ in exactly one factor (instruction, CoT, feedback, the number
    of demonstrations or their labels; :func:`workbench.protocols.conditions.factors_apart`).

    Names that are not condition names count as one factor apart (every pair of them is drawn).
    """
    try:
        return factors_apart(first, second) == 1
    except ConditionError:
        return True


def pair_label(first: str, second: str) -> str:
    """``first − second`` in human labels, the parts the two share once in brackets; escaped for plotly.

    ``intrinsic instruction · no CoT · no feedback`` vs ``no instruction · no CoT · no feedback`` ->
    ``intrinsic instruction − no instruction<br>(no CoT · no feedback)``.
    """
    parts_first = condition_label(first).split(LABEL_SEPARATOR)
    parts_second = condition_label(second).split(LABEL_SEPARATOR)
    if len(parts_first) != len(parts_second):
        return f"{plotly_text(condition_label(first))} − {plotly_text(condition_label(second))}"
    shared = [a for a, b in zip(parts_first, parts_second) if a == b]
    differ = [(a, b) for a, b in zip(parts_first, parts_second) if a != b]
    left = LABEL_SEPARATOR.join(a for a, _ in differ)
    right = LABEL_SEPARATOR.join(b for _, b in differ)
    label = f"{plotly_text(left)} − {plotly_text(right)}"
    return label + (f"<br>({plotly_text(LABEL_SEPARATOR.join(shared))})" if shared else "")


def paired_tests_figure(tests: Sequence[PairedTest], *, conditions: Sequence[str] | None = None) -> go.Figure:
    """Paired differences between conditions, per round: one forest-plot panel per metric.

    Rows of ``results/paired_tests.csv``: each row of a panel is a pair of conditions, oriented by
    :func:`oriented` (later minus earlier condition in the run's order, ``conditions``); each marker
    is one round's mean difference over the items both conditions answered, with its 95% interval
    (rounds side by side within the row, coloured by round). Only pairs one factor apart
    (:func:`one_factor_apart`) are drawn when any pair is; the dotted line is no difference. Hover
    text gives the difference, interval, sign-flip p-value, ``n`` and the raw condition names.
    """
    if not tests:
        raise ValueError("paired_tests table has no rows")
    style = ConditionStyle.of([t.condition_a for t in tests] + [t.condition_b for t in tests], conditions)
    rows = [(test, *oriented(test, style)) for test in tests]
    if any(one_factor_apart(first, second) for _, first, second, *_ in rows):
        rows = [row for row in rows if one_factor_apart(row[1], row[2])]
    pairs = sorted(
        {(first, second) for _, first, second, *_ in rows},
        key=lambda pair: (style.conditions.index(pair[1]), style.conditions.index(pair[0])),
    )
    position = {pair: index for index, pair in enumerate(pairs)}
    metrics = list(dict.fromkeys(test.metric for test, *_ in rows))
    rounds = sorted({test.round for test, *_ in rows})
    colours = dict(zip(rounds, round_colours(len(rounds))))
    step = ROUND_SPREAD / max(1, len(rounds) - 1)
    grid = forest_panels(metrics, panel_height=ROW_HEIGHT_PX * len(pairs) + 40)
    fig = grid.figure
    for metric_index, metric in enumerate(metrics):
        row, col = grid.position(metric_index)
        for round_index, round_ in enumerate(rounds):
            at_round = [r for r in rows if r[0].metric == metric and r[0].round == round_]
            if not at_round:
                continue
            offset = (round_index - (len(rounds) - 1) / 2) * step if len(rounds) > 1 else 0.0
            fig.add_trace(
                go.Scatter(
                    x=[difference for *_, difference, _, _ in at_round],
                    y=[position[(first, second)] + offset for _, first, second, *_ in at_round],
                    mode="markers",
                    marker={"color": colours[round_], "size": 8, "line": {"color": "white", "width": 0.5}},
                    error_x=interval_error_bars(
                        [difference for *_, difference, _, _ in at_round],
                        [low for *_, low, _ in at_round],
                        [high for *_, high in at_round],
                    ),
                    name=f"round {round_}",
                    legendgroup=f"round {round_}",
                    showlegend=metric_index == 0,
                    hovertext=[_hover(*row) for row in at_round],
                    hoverinfo="text",
                ),
                row=row,
                col=col,
            )
        fig.add_vline(x=0, line={"dash": "dot", "color": "grey"}, row=row, col=col)
        fig.update_xaxes(title_text=f"difference in {plotly_text(metric_label(metric))}", row=row, col=col)
        fig.update_yaxes(
            tickvals=list(range(len(pairs))),
            ticktext=[pair_label(first, second) for first, second in pairs] if col == 1 else None,
            autorange="reversed",
            row=row,
            col=col,
        )
    grid.lay_out("Paired differences between conditions (same items, per round)", margin={**LEGEND_MARGIN_PX, "l": 280})
    return fig


def _hover(test: PairedTest, first: str, second: str, difference: float, low: float | None, high: float | None) -> str:
    return (
        f"{plotly_text(condition_label(first))} − {plotly_text(condition_label(second))}<br>"
        f"round {test.round}: {plotly_text(test.metric)} difference {number_text(difference)}"
        f"{interval_text(low, high)}, p = {test.p_value:.3g}, n = {test.n}<br>"
        f"({plotly_text(first)} − {plotly_text(second)})"
    )
