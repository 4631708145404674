"""Downstream tasks (files, bias ratio) and the fine-tuning loop (modes, checkpoint, resume)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from workbench.finetune.classifier import CausalLMClassifier
from workbench.finetune.tasks import (
    LabelledText,
    TaskDataError,
    gender_cue,
    read_classification_task,
    subsample_to_bias_ratio,
)
from workbench.finetune.train import FinetuneConfig, finetune
from workbench.models import tiny_model

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def tiny_lm_and_tokenizer() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    loaded = tiny_model(d_model=16, n_heads=4, n_kv_heads=2)
    return loaded.model, loaded.tokenizer


def write_task(path: Path) -> Path:
    rows = [
        ("he was old", 0),
        ("she was young", 1),
        ("the man was young", 1),
        ("the woman was old", 0),
        ("he said it", 0),
        ("she said it", 1),
        ("the man said it", 0),
        ("the woman was young", 1),
    ] * 2
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "input", "is_short", "edited"])
        writer.writerows([(label, text, True, False) for text, label in rows])
    return path


def test_gender_cue_and_bias_ratio_by_hand() -> None:
    assert gender_cue("She told him") is None and gender_cue("the woman and her son said") == 1
    examples = [LabelledText("she x", 1)] * 6 + [LabelledText("he x", 1)] * 4 + [LabelledText("x", 0)] * 3
    # cued: 6 agree (female, 1), 4 disagree (male, 1). Ratio 0.5 keeps 4 agreeing + 4 disagreeing + 3 uncued.
    half = subsample_to_bias_ratio(examples, 0.5)
    assert sum(e.text == "she x" for e in half) == 4 and sum(e.text == "he x" for e in half) == 4 and len(half) == 11
    full = subsample_to_bias_ratio(examples, 1.0)
    assert sum(e.text == "he x" for e in full) == 0 and sum(e.text == "she x" for e in full) == 6
    assert sum(e.text == "she x" for e in subsample_to_bias_ratio(examples, 0.0)) == 0


def test_one_label_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("label,input\n1,a\n1,b\n", encoding="utf-8")
    with pytest.raises(TaskDataError, match="at least two labels"):
        read_classification_task(path, "ethics_commonsense")


@pytest.mark.skipif(not (DATA / "ethics").exists(), reason="shared benchmark data not present")
def test_real_task_files() -> None:
    ethics = read_classification_task(DATA / "ethics" / "commonsense" / "cm_test.csv", "ethics_commonsense")
    assert len(ethics) == 3885 and ethics[1].label == 1
    toxicity = read_classification_task(DATA / "wiki_toxicity_bias" / "toxicity_nonfuzzed_testset.csv", "wiki_toxicity")
    assert len(toxicity) == 1492 and sum(e.label for e in toxicity) == 248


def test_classifier_reads_last_real_token_on_either_padding_side() -> None:
    model, _ = tiny_lm_and_tokenizer()
    classifier = CausalLMClassifier(model, 2).eval()
    right = classifier(torch.tensor([[2, 4, 5, 0, 0]]), torch.tensor([[1, 1, 1, 0, 0]]))
    alone = classifier(torch.tensor([[2, 4, 5]]), torch.tensor([[1, 1, 1]]))
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["plain", "pac"])
def test_resume_after_interruption_equals_uninterrupted(tmp_path: Path, mode: str) -> None:
    data = write_task(tmp_path / "task.csv")
    settings = {
        "task": "ethics_commonsense",
        "data_path": str(data),
        "mode": mode,
        "epochs": 2,
        "batch_size": 4,
        "checkpoint_every": 100,
        "pac": {"stage1_epochs": 1, "k_models": 2, "k_prior_log_scales": [-4, -2, 3]},
    }
    config = FinetuneConfig.from_dict(settings)
    model, tokenizer = tiny_lm_and_tokenizer()
    whole = finetune(model, tokenizer, config, tmp_path / "whole")
    assert whole is not None and whole.steps == 8 and whole.n_held_out == 3 and 0.0 <= whole.held_out_accuracy <= 1.0
    model, tokenizer = tiny_lm_and_tokenizer()
    assert finetune(model, tokenizer, config, tmp_path / "split", stop_after_steps=2) is None
    model, tokenizer = tiny_lm_and_tokenizer()
    resumed = finetune(model, tokenizer, config, tmp_path / "split")
    assert resumed is not None and resumed.final_train_loss == pytest.approx(whole.final_train_loss, rel=1e-5)
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "finetuned" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "finetuned" / "final" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5)


def test_prosocial_mode_pulls_selected_head_toward_debiased(tmp_path: Path) -> None:
    data = write_task(tmp_path / "task.csv")
    model, tokenizer = tiny_lm_and_tokenizer()
    debiased_dir = tmp_path / "debiased"
    model.save_pretrained(debiased_dir, safe_serialization=True)
    (tmp_path / "selected_heads.csv").write_text(
        "layer,head,effect_before,effect_after,drop\n0,1,0.5,0.1,0.4\n", encoding="utf-8"
    )
    base = {"task": "ethics_commonsense", "data_path": str(data), "epochs": 2, "batch_size": 4, "learning_rate": 5e-2}
    distances = {}
    for mode, coefficient in (("plain", 0.0), ("prosocial", 100.0)):
        model, tokenizer = tiny_lm_and_tokenizer()
        finetune(
            model,
            tokenizer,
            FinetuneConfig.from_dict(
                {
                    **base,
                    "mode": mode,
                    "selected_heads_path": str(tmp_path / "selected_heads.csv"),
                    "debiased_checkpoint": str(debiased_dir),
                    "prosocial_coefficient": coefficient,
                }
            ),
            tmp_path / mode,
        )
        reference = load_file(str(debiased_dir / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"]
        distances[mode] = float((model.model.layers[0].self_attn.q_proj.weight[4:8].detach() - reference[4:8]).norm())
    assert distances["prosocial"] < 0.5 * distances["plain"]


def test_config_errors() -> None:
    with pytest.raises(ValueError, match="needs selected_heads_path"):
        FinetuneConfig(task="wiki_toxicity", data_path="x", mode="prosocial")
    with pytest.raises(ValueError, match="epoch"):
        FinetuneConfig.from_dict({"task": "wiki_toxicity", "data_path": "x", "epoch": 1})
