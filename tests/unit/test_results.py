"""Results tables from record rows: behaviour, flips, calibration, paired tests, interactions, items."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest
from rich.console import Console

from workbench.metrics.tables import (
    CSV_COLUMNS,
    RecordError,
    ResultsConfig,
    compute_results,
    factorial_levels,
    format_results_table,
    write_results,
)
from workbench.protocols import factorial_conditions

CONFIG = ResultsConfig(n_boot=50, seed=0, n_permutations=200)


def _row(item: int, condition: str, round_index: int, predicted: int | None, **extra: object) -> dict:
    row = {
        "item_id": f"bbq/Age/{item}",
        "condition": condition,
        "round": round_index,
        "category": "Age",
        "task": "bbq",
        "context_condition": "ambig",
        "question_polarity": "neg",
        "predicted": predicted,
        "gold": 2,
        "target_index": 0,
        "unknown_index": 2,
        "option_probs": None,
        "answer": f" ({'abc'[predicted]})" if predicted is not None else " hmm",
        "prompt": "P" * 300,
        "toxicity": None,
    }
    row.update(extra)
    return row


def _factorial_rows() -> list[dict]:
    rows = []
    for condition in factorial_conditions(["none", "intrinsic"]):
        instructed = condition.instruction == "intrinsic"
        for item in range(4):
            # round 0: intrinsic answers unknown (2) for items 0-2; none only for item 0
            first = 2 if item < (3 if instructed else 1) else 0
            rows.append(_row(item, condition.name, 0, first))
            rows.append(_row(item, condition.name, 1, 2 if item < 3 else None))
    return rows


def test_behaviour_values_hand_computed() -> None:
    tables = compute_results(_factorial_rows(), CONFIG).tables
    values = {(r["condition"], r["round"], r["metric"]): r for r in tables["behaviour"]}
    none0 = "instr=none+cot=off+fb=off"
    assert values[(none0, 0, "accuracy")]["value"] == 0.25
    assert values[(none0, 0, "accuracy")]["n"] == 4
    # bias_score_ambiguous: acc .25, non-unknown answers are 3 x target -> s = 1 -> (1-.25)*1
    assert values[(none0, 0, "bias_score_ambiguous")]["value"] == pytest.approx(0.75)
    assert values[(none0, 1, "accuracy")]["value"] == 1.0 and values[(none0, 1, "accuracy")]["n"] == 3
    assert values[(none0, 1, "unparsed_rate")]["value"] == 0.25
    assert values[(none0, 1, "flip_rate")]["value"] == pytest.approx(2 / 3)  # items 1, 2 flip; 3 unparsed
    assert values[("instr=intrinsic+cot=off+fb=off", 0, "unknown_rate")]["value"] == 0.75
    convergence = {(r["condition"], r["metric"]): r["convergence_round"] for r in tables["convergence"]}
    assert convergence[(none0, "accuracy")] == ""  # changes by .75 into the last round: not converged


def test_flips_paired_interactions_and_items() -> None:
    tables = compute_results(_factorial_rows(), CONFIG).tables
    flips = {(r["condition"], r["answer_from"], r["answer_to"]): r["count"] for r in tables["flips"]}
    none0 = "instr=none+cot=off+fb=off"
    assert flips[(none0, "c", "c")] == 1 and flips[(none0, "a", "c")] == 2 and flips[(none0, "a", "unparsed")] == 1
    paired = [
        r
        for r in tables["paired_tests"]
        if r["round"] == 0
        and r["metric"] == "accuracy"
        and {r["condition_a"], r["condition_b"]} == {"instr=intrinsic+cot=off+fb=off", none0}
    ]
    assert len(paired) == 1
    sign = 1 if paired[0]["condition_a"].startswith("instr=intrinsic") else -1
    assert paired[0]["difference"] == pytest.approx(sign * 0.5) and paired[0]["n"] == 4
    assert paired[0]["p_value"] == pytest.approx(0.5)  # d = (0,1,1,0): exact, 8 of 16 patterns reach .5
    effects = {(r["outcome"], r["effect"]): r["estimate"] for r in tables["interactions"]}
    assert effects[("accuracy@round0", "instruction")] == pytest.approx(0.5)
    assert effects[("accuracy@round0", "cot")] == pytest.approx(0.0)
    assert effects[("accuracy@round0", "instruction:cot:feedback")] == pytest.approx(0.0)
    assert ("accuracy@round1", "instruction") in effects
    items = tables["items"]
    assert items[0]["prompt_excerpt"] == "…" + "P" * 160
    assert {i["predicted"] for i in items} == {"a", "c", "unparsed"}
    assert {i["correct"] for i in items} == {0, 1, ""}


def test_calibration_rows_and_factorial_detection() -> None:
    rows = [
        _row(0, "instr=none+cot=off+fb=off", 0, 2, option_probs=[0.1, 0.1, 0.8]),
        _row(1, "instr=none+cot=off+fb=off", 0, 0, option_probs=[0.55, 0.15, 0.3]),
    ]
    tables = compute_results(rows, CONFIG).tables
    assert [(r["bin_low"], r["accuracy"], r["count"]) for r in tables["calibration"]] == [
        (pytest.approx(0.5), 0.0, 1),
        (pytest.approx(0.8), 1.0, 1),
    ]
    ece = next(r for r in tables["behaviour"] if r["metric"] == "ece")["value"]
    assert ece == pytest.approx(0.5 * 0.55 + 0.5 * 0.2)
    assert tables["interactions"] == []
    names = [c.name for c in factorial_conditions(["none", "intrinsic"])]
    assert factorial_levels(names)["instruction"] == ("none", "intrinsic")
    assert factorial_levels(names[:7]) is None


def test_write_and_format(tmp_path: Path) -> None:
    result = compute_results(_factorial_rows(), CONFIG)
    paths = write_results(result, tmp_path / "results")
    assert [p.name for p in paths] == [f"{name}.csv" for name in CSV_COLUMNS]
    with (tmp_path / "results" / "behaviour.csv").open(encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS["behaviour"]
        assert len(list(reader)) == len(result.tables["behaviour"])
    table = format_results_table(result.tables["behaviour"], "accuracy")
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "condition = instr=<instr>+cot=<cot>+fb=<fb>" in text and "round 1" in text
    assert "none       off  off  0.250 [0.000, 0.750]  1.000 [1.000, 1.000]" in text


def test_missing_key_is_reported() -> None:
    row = _row(0, "instr=none+cot=off+fb=off", 0, 2)
    del row["gold"]
    with pytest.raises(RecordError, match=r"row 0 lacks keys \['gold'\]"):
        compute_results([row])
    with pytest.raises(ValueError, match="not of the form"):
        compute_results([_row(0, "baseline", 0, 2)])


def test_toxicity_rows_give_mean_per_round() -> None:
    rows = [
        {
            **_row(
                i,
                "instr=intrinsic+cot=off+fb=off",
                r,
                None,
                task="realtoxicity",
                gold=None,
                target_index=None,
                unknown_index=None,
                context_condition=None,
            ),
            "toxicity": t,
        }
        for (i, r), t in zip(itertools.product(range(2), range(2)), (0.4, 0.2, 0.6, None))
    ]
    tables = compute_results(rows, CONFIG).tables
    tox = {r["round"]: r["value"] for r in tables["behaviour"] if r["metric"] == "toxicity"}
    assert tox == {0: pytest.approx(0.5), 1: pytest.approx(0.2)}


def _five_round_factorial_rows() -> list[dict]:
    """2x2x2 design, 5 rounds, 4 ambiguous items; in ``instr=none+cot=on+fb=on`` round 2 every answer is unknown."""
    rows = []
    for condition in factorial_conditions(["none", "intrinsic"]):
        for item in range(4):
            for round_index in range(5):
                all_unknown = condition.name == "instr=none+cot=on+fb=on" and round_index == 2
                rows.append(_row(item, condition.name, round_index, 2 if all_unknown else (item + round_index) % 3))
    return rows


def _render(table: object, width: int) -> str:
    console = Console(record=True, width=width)
    console.print(table)
    return console.export_text()


def test_results_table_names_every_condition_readably_at_80_columns() -> None:
    behaviour = compute_results(_five_round_factorial_rows(), CONFIG).tables["behaviour"]
    names = {c.name for c in factorial_conditions(["none", "intrinsic"])}
    for metric in ("accuracy", "bias_score_ambiguous"):
        text = _render(format_results_table(behaviour, metric), 80)
        lines = text.splitlines()
        assert "…" not in text
        assert max(len(line) for line in lines) <= 80
        assert "condition = instr=<instr>+cot=<cot>+fb=<fb>" in text
        # one row per condition, starting with its factor levels; the caption's pattern gives the full name
        starts = [line.split() for line in lines if line.split()[:1] in (["none"], ["intrinsic"])]
        recovered = [f"instr={instr}+cot={cot}+fb={fb}" for instr, cot, fb, *_ in starts]
        assert sorted(recovered) == sorted(names)
        assert all(len(tokens) == 3 + 5 for tokens in starts)  # the three levels, then one value per round
    bias = _render(format_results_table(behaviour, "bias_score_ambiguous"), 80).splitlines()
    row = next(i for i, line in enumerate(bias) if line.split()[:3] == ["none", "on", "on"])
    assert bias[row].split()[5] == "undefined"  # round 2 of that condition: every answer unknown


def test_results_table_shows_undefined_values_with_their_reason() -> None:
    behaviour = compute_results(_five_round_factorial_rows(), CONFIG).tables["behaviour"]
    cell = next(
        r
        for r in behaviour
        if (r["condition"], r["round"], r["metric"]) == ("instr=none+cot=on+fb=on", 2, "bias_score_ambiguous")
    )
    assert (cell["value"], cell["ci_low"], cell["ci_high"]) == ("", "", "")
    assert cell["undefined_reason"] == "no non-unknown answer"
    text = _render(format_results_table(behaviour, "bias_score_ambiguous"), 200)
    assert "undefined (no non-unknown answer)" in text
    # only the instruction varies: one factor column, the shared levels written into the caption
    two = [r for r in behaviour if r["condition"].endswith("+cot=off+fb=off")]
    text = _render(format_results_table(two, "accuracy"), 80)
    assert "condition = instr=<instr>+cot=off+fb=off" in text
    assert text.splitlines()[1].split()[:3] == ["instr", "round", "0"]
    # one condition only: its levels still head the columns, and nothing varies in the caption
    single = [r for r in behaviour if r["condition"] == "instr=none+cot=off+fb=off"]
    assert "instr=<instr>+cot=<cot>+fb=<fb>" in _render(format_results_table(single, "accuracy"), 80)


def test_undefined_metrics_name_their_reason() -> None:
    unparsed = [_row(i, "instr=none+cot=off+fb=off", r, None) for i in range(3) for r in range(2)]
    no_target = [
        _row(i, "instr=none+cot=off+fb=off", 0, 0, context_condition="disambig", gold=0, target_index=None)
        for i in range(3)
    ]
    pronouns = [
        _row(i, "instr=none+cot=off+fb=off", 0, None, task="winogender", gold=None, answer=" unsure") for i in range(2)
    ]
    for rows, metric, reason in (
        (unparsed, "accuracy", "no parsed answer"),
        (unparsed, "accuracy_ambig", "no parsed answer"),
        (unparsed, "unknown_rate", "no parsed answer"),
        (unparsed, "bias_score_ambiguous", "no parsed answer"),
        (unparsed, "flip_rate", "no item parsed in both rounds"),
        (no_target, "bias_score_disambiguated", "no item with a bias target"),
        (pronouns, "they_rate", "no pronoun in any answer"),
    ):
        cells = [r for r in compute_results(rows, CONFIG).tables["behaviour"] if r["metric"] == metric]
        assert cells and all((r["value"], r["undefined_reason"]) == ("", reason) for r in cells), metric
    unparsed_rate = [r for r in compute_results(unparsed, CONFIG).tables["behaviour"] if r["metric"] == "unparsed_rate"]
    assert [(r["value"], r["undefined_reason"]) for r in unparsed_rate] == [(1.0, ""), (1.0, "")]


def test_convergence_stable_rounds_setting() -> None:
    # accuracy of instr=none per round: .25 then 1.0 (test_behaviour_values_hand_computed); add a
    # third round equal to the second: one sub-eps change -> converged at round 1 by default only
    none0 = "instr=none+cot=off+fb=off"
    rows = [r for r in _factorial_rows() if r["condition"] == none0]
    rows += [dict(r, round=2) for r in rows if r["round"] == 1]
    by_default = compute_results(rows, CONFIG).tables["convergence"]
    strict = compute_results(rows, ResultsConfig(n_boot=50, n_permutations=200, convergence_stable_rounds=2))
    assert {r["metric"]: r["convergence_round"] for r in by_default}["accuracy"] == 1
    assert {r["metric"]: r["convergence_round"] for r in strict.tables["convergence"]}["accuracy"] == ""
    with pytest.raises(ValueError, match=r"\[results\] convergence_stable_rounds = 0 must be at least 1"):
        ResultsConfig(convergence_stable_rounds=0)
