"""Uncertainty-guided sample selection end to end on the packaged SmolLM2-135M-Instruct, CI-sized
(workbench/configs/selection.toml): score 8 gendered lines of the CDA corpus by paper 4's semantic
uncertainty and an ETHICS concept direction, select the top quarter, CDA-debias a fresh copy of the
model on the selection, on a random selection of the same size and on the whole corpus (4 steps of
2 texts each), and measure every arm (CrowS-Pairs, SEAT, BBQ) side by side with intervals.

It shows that the pipeline runs on real weights and that each arm trains on its own lines; it does
not show whether selection helps (workbench/DEBIASING.md, "Sample selection").
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from workbench.finetune.selection_command import add_arguments

CONFIG = Path(__file__).resolve().parents[2] / "workbench" / "configs" / "selection.toml"
LABELS = ("debiased-selected", "debiased-random", "debiased-all")

pytestmark = pytest.mark.e2e


def test_selected_random_and_all_arms_side_by_side(
    workflow_run: Path,
    workflow_model: str,
    read_rows: Callable[[Path], list[dict[str, str]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = workflow_run
    parser = argparse.ArgumentParser(prog="workbench select")
    add_arguments(parser)
    args = parser.parse_args(["--run", str(run), "--config", str(CONFIG), "--model", workflow_model, "--device", "cpu"])
    assert args.handler(args) == 0
    table = capsys.readouterr().out
    print(table)

    selection = read_rows(run / "attribution" / "selection.csv")
    assert len(selection) == 8 and [int(row["rank"]) for row in selection] == list(range(1, 9))
    assert sum(int(row["selected"]) for row in selection) == sum(int(row["random"]) for row in selection) == 2
    assert all(row["uncertainty_measure"] == "semantic:exact" for row in selection)
    assert all(
        math.isfinite(float(row["uncertainty"])) and -1 <= float(row["concept_activation"]) <= 1 for row in selection
    )
    scores = [float(row["score"]) for row in selection]
    assert scores == sorted(scores, reverse=True)

    levels = read_rows(run / "attribution" / "bias_levels.csv")
    assert list(dict.fromkeys(row["checkpoint"] for row in levels)) == list(LABELS)
    for label in LABELS:
        rows = {row["measure"]: row for row in levels if row["checkpoint"] == label}
        crows = rows["crows_pairs"]
        assert crows["n"] == "40" and float(crows["ci_low"]) <= float(crows["value"]) <= float(crows["ci_high"])
        assert rows["bbq.accuracy_ambig"]["n"] == "6" and "seat.weat6.effect_size" in rows
    assert all(label in table for label in LABELS) and "bbq.bias_score_ambiguous" in table

    for arm, lines in (("selected", 2), ("random", 2), ("all", 1492)):
        provenance = json.loads(
            (run / "checkpoints" / f"debiased-{arm}" / "debias_provenance.json").read_text(encoding="utf-8")
        )
        assert provenance["lines_original"] == lines and provenance["config"]["steps"] == 4
        assert (provenance["selection"] is None) == (arm == "all")
    shutil.rmtree(run / "checkpoints")  # three debiased models of about 0.5 GB each; the CSVs stay
