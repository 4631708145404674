"""The debiasing workflow end to end on the packaged SmolLM2-135M-Instruct, CI-sized
(workbench/configs/debiasing.toml): bias level of the pretrained model, CDA debiasing (with the
debiased model's level), head attribution base vs debiased with head selection, a short
ProSocialTuning fine-tune (with the fine-tuned model's level), and the three-checkpoint table.
About 1.5 minutes on 2 idle CPU cores (several times that when other jobs share them).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from workbench.cli.main import main
from workbench.models import EMBEDDED_MODELS

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT.parent / "shared" / "data"
CONFIG = REPO_ROOT / "workbench" / "configs" / "debiasing.toml"
MODEL = "smollm2-135m-instruct"
LABELS = ("pretrained", "debiased", "finetuned-prosocial")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data folder {DATA} is absent"),
    pytest.mark.skipif(not EMBEDDED_MODELS[MODEL].is_installed(), reason=f"embedded model {MODEL} is not installed"),
]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_pretrained_debiased_prosocial_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO_ROOT)  # the configuration's paths are relative to the repository root
    monkeypatch.setenv("COLUMNS", "220")
    run = tmp_path / "run"
    common = ["--run", str(run), "--config", str(CONFIG), "--device", "cpu"]
    debiased = str(run / "checkpoints" / "debiased")

    assert main(["bias", *common, "--model", MODEL, "--label", "pretrained"]) == 0
    assert main(["debias", *common, "--model", MODEL]) == 0
    assert "CDA changed" in capsys.readouterr().out
    assert main(["attribute", *common, "--model", MODEL, "--label", "pretrained", "--debiased", debiased]) == 0
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
