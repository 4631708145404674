"""The debiasing workflow end to end on the packaged SmolLM2-135M-Instruct, CI-sized
(workbench/configs/debiasing.toml): bias level of the pretrained model, CDA debiasing (with the
debiased model's level), head attribution base vs debiased with head selection, a short
ProSocialTuning fine-tune (with the fine-tuned model's level), and the three-checkpoint table.
About 1.5 minutes on 2 idle CPU cores (several times that when other jobs share them).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from workbench.cli.main import main

CONFIG = Path(__file__).resolve().parents[2] / "workbench" / "configs" / "debiasing.toml"
LABELS = ("pretrained", "debiased", "finetuned-prosocial")

pytestmark = pytest.mark.e2e


def test_pretrained_debiased_prosocial_chain(
    workflow_run: Path,
    workflow_model: str,
    read_rows: Callable[[Path], list[dict[str, str]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = workflow_run
    common = ["--run", str(run), "--config", str(CONFIG), "--device", "cpu"]
    debiased = str(run / "checkpoints" / "debiased")

    assert main(["bias", *common, "--model", workflow_model, "--label", "pretrained"]) == 0
    assert main(["debias", *common, "--model", workflow_model]) == 0
    assert "CDA changed" in capsys.readouterr().out
    assert main(["attribute", *common, "--model", workflow_model, "--label", "pretrained", "--debiased", debiased]) == 0
    assert main(["finetune", *common, "--model", debiased, "--mode", "prosocial"]) == 0
    finetune_output = capsys.readouterr().out
    assert "held-out accuracy" in finetune_output
    capsys.readouterr()
    assert main(["bias", "--run", str(run)]) == 0
    table = capsys.readouterr().out
    print(table)

    levels = read_rows(run / "attribution" / "bias_levels.csv")
    crows = {row["checkpoint"]: row for row in levels if row["measure"] == "crows_pairs"}
    assert set(crows) == set(LABELS)
    for row in crows.values():
        assert row["n"] == "100" and float(row["ci_low"]) <= float(row["value"]) <= float(row["ci_high"])
    seat = {row["checkpoint"] for row in levels if row["measure"] == "seat.weat6.effect_size"}
    winogender = {row["checkpoint"] for row in levels if row["measure"] == "winogender.logit_difference"}
    assert seat == set(LABELS) and winogender == {"pretrained", "debiased"}
    assert all(label in table for label in LABELS) and "crows_pairs" in table

    heads = read_rows(run / "attribution" / "heads.csv")
    assert len(heads) == 2 * 2 * 30 * 9  # checkpoints x methods (patching estimate, DLA) x 30 layers x 9 heads
    selected = read_rows(run / "attribution" / "selected_heads.csv")
    assert 1 <= len(selected) <= 10
    assert all(float(row["drop"]) > 0 for row in selected)

    provenance = json.loads((run / "checkpoints" / "debiased" / "debias_provenance.json").read_text(encoding="utf-8"))
    assert provenance["lines_changed"] > 0 and provenance["lines_original"] == 1492
    finetuned = run / "checkpoints" / "finetuned-prosocial"
    result = json.loads((finetuned / "finetune_result.json").read_text(encoding="utf-8"))
    assert result["config"]["mode"] == "prosocial"
    assert result["result"]["steps"] == 8 and result["result"]["n_held_out"] == 10
    assert 0.0 <= result["result"]["held_out_accuracy"] <= 1.0
    assert (finetuned / "step-000008" / "model.safetensors").is_file() and (finetuned / "final").is_dir()
    shutil.rmtree(run / "checkpoints")  # about 2.5 GB of weights and optimizer state; the CSVs stay
