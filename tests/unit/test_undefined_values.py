"""Undefined is a value, not an error: a cell whose every answer is "unknown" goes through every stage.

records -> ``compute_results`` -> ``write_results`` (results/*.csv) -> the report's table reader ->
``build_report``: the bias score of that cell is written as undefined with its reason, read back as
undefined, shown as ``undefined (no non-unknown answer)`` on the page, drawn as a gap (not a zero),
and left out of convergence.csv; no stage refuses the table an earlier stage wrote.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from reports import build_report
from reports.run_results import RunResults
from reports.sections import report_figures
from reports.tables import read_table
from workbench.metrics import undefined
from workbench.metrics.tables import ResultsConfig, compute_results, write_results
from workbench.run_tables import BehaviourMetric

CONFIG = ResultsConfig(n_boot=50, seed=0, n_permutations=200)
ALL_UNKNOWN = "instr=intrinsic+cot=off+fb=off"
MIXED = "instr=none+cot=off+fb=off"
UNKNOWN, TARGET, OTHER = 2, 0, 1


def _record(item: int, condition: str, round_index: int, predicted: int | None, **extra: Any) -> dict[str, Any]:
    """One ambiguous BBQ answer: gold and the unknown option are ``c`` (2), the bias target is ``a`` (0)."""
    record = {
        "item_id": f"bbq/Age/{item}",
        "condition": condition,
        "round": round_index,
        "category": "Age",
        "task": "bbq",
        "context_condition": "ambig",
        "question_polarity": "neg",
        "predicted": predicted,
        "gold": UNKNOWN,
        "target_index": TARGET,
        "unknown_index": UNKNOWN,
        "option_probs": None,
        "answer": " (c)" if predicted == UNKNOWN else " (a)",
        "prompt": f"Context {item}. Who was forgetful?",
        "toxicity": None,
    }
    record.update(extra)
    return record


def _records() -> list[dict[str, Any]]:
    """4 items x 2 rounds; in ALL_UNKNOWN every round-0 answer is "unknown", round 1 has one biased answer."""
    records = []
    for item in range(4):
        records.append(_record(item, ALL_UNKNOWN, 0, UNKNOWN))
        records.append(_record(item, ALL_UNKNOWN, 1, TARGET if item == 0 else UNKNOWN))
        records.append(_record(item, MIXED, 0, TARGET if item < 2 else UNKNOWN))
        records.append(_record(item, MIXED, 1, OTHER if item < 2 else UNKNOWN))
    return records


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder whose results/ was written by ``write_results`` from :func:`_records`."""
    write_results(compute_results(_records(), CONFIG), tmp_path / "run" / "results")
    return tmp_path / "run"


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_all_unknown_cell_is_written_as_undefined_with_its_reason(run_dir: Path) -> None:
    rows = {(r["condition"], r["round"], r["metric"]): r for r in _csv_rows(run_dir / "results" / "behaviour.csv")}
    cell = rows[(ALL_UNKNOWN, "0", "bias_score_ambiguous")]
    assert (cell["value"], cell["ci_low"], cell["ci_high"], cell["n"]) == ("", "", "", "4")
    assert cell["undefined_reason"] == undefined.NO_NON_UNKNOWN_ANSWER == "no non-unknown answer"
    # the same cell's other metrics stay defined; a defined value has an empty reason
    assert rows[(ALL_UNKNOWN, "0", "accuracy")]["value"] == "1.0"
    assert rows[(ALL_UNKNOWN, "0", "accuracy")]["undefined_reason"] == ""
    # round 1 has one biased non-unknown answer: s = 1, s_AMB = (1 - 3/4) * 1
    assert float(rows[(ALL_UNKNOWN, "1", "bias_score_ambiguous")]["value"]) == pytest.approx(0.25, abs=1e-12)
    assert rows[(ALL_UNKNOWN, "1", "bias_score_ambiguous")]["undefined_reason"] == ""


def test_undefined_value_reads_back_and_stays_out_of_aggregates(run_dir: Path) -> None:
    behaviour = read_table(run_dir / "results" / "behaviour.csv", BehaviourMetric)
    cell = next(r for r in behaviour if (r.condition, r.round, r.metric) == (ALL_UNKNOWN, 0, "bias_score_ambiguous"))
    assert cell == BehaviourMetric(
        ALL_UNKNOWN, 0, "bias_score_ambiguous", None, None, None, 4, "no non-unknown answer", n_unparsed=0
    )
    assert not cell.defined and cell.value_text() == "undefined (no non-unknown answer)"
    convergence = {(r["condition"], r["metric"]) for r in _csv_rows(run_dir / "results" / "convergence.csv")}
    assert (ALL_UNKNOWN, "bias_score_ambiguous") not in convergence  # a series with a gap has no convergence round
    assert (ALL_UNKNOWN, "accuracy") in convergence and (MIXED, "bias_score_ambiguous") in convergence
    paired = _csv_rows(run_dir / "results" / "paired_tests.csv")
    assert {(r["metric"], r["round"]) for r in paired} == {("accuracy", "0"), ("accuracy", "1")}
    assert all(r["difference"] != "" for r in paired)


def test_report_builds_and_shows_the_undefined_value_as_a_gap(run_dir: Path) -> None:
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert "<td>bias_score_ambiguous</td>" in page
    assert '<td class="value">undefined (no non-unknown answer)</td>' in page
    assert "1 value is undefined and drawn as gaps" in page
    results = RunResults.load(run_dir)
    convergence = next(entry for entry in report_figures(results) if entry.anchor == "convergence")
    assert convergence.figure is not None
    assert [(r.condition, r.round, r.metric) for r in convergence.undefined] == [
        (ALL_UNKNOWN, 0, "bias_score_ambiguous")
    ]
    (bias_line,) = [
        t
        for t in convergence.figure.data
        if t.mode == "lines+markers" and t.legendgroup == ALL_UNKNOWN and "bias_score_ambiguous =" in t.hovertext[0]
    ]
    assert bias_line.y[0] is None and bias_line.y[1] == pytest.approx(0.25, abs=1e-12)  # a gap, not a zero
    assert "undefined (no non-unknown answer)" in bias_line.hovertext[0]
