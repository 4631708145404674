"""Encoders (BERT, RoBERTa: the models of the ProSocialTuning and PAC-tuning papers) in fine-tuning:
loading a saved checkpoint by the same code that loads a hub id, telling encoders from causal
LMs, and every fine-tuning mode on tiny random encoders; GPT-2's embeddings stay frozen."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertForMaskedLM, RobertaForMaskedLM

from workbench.finetune.encoders import encoder_model_type, load_encoder
from workbench.finetune.tiny_encoder import tiny_encoder
from workbench.finetune.train import FinetuneConfig, finetune
from workbench.models import ModelSpecError, tiny_model

ROWS = [
    ("he was old", 0),
    ("she was young", 1),
    ("the man was young", 1),
    ("the woman was old", 0),
    ("he said it", 0),
    ("she said it", 1),
    ("the man said it", 0),
    ("the woman was young", 1),
] * 2


def write_task(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "input"])
        writer.writerows([(label, text) for text, label in ROWS])
    return path


def save_encoder(folder: Path, family: str, seed: int = 0, bias_noise: float = 0.0) -> Path:
    """A tiny random encoder saved as a checkpoint folder; ``bias_noise`` moves every bias off its zero init."""
    loaded = tiny_encoder(family, seed=seed)
    with torch.no_grad():
        for name, param in loaded.model.named_parameters():
            if name.endswith("bias"):
                param.add_(bias_noise * torch.randn_like(param))
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(("family", "model_class"), [("bert", BertForMaskedLM), ("roberta", RobertaForMaskedLM)])
def test_saved_encoder_loads_with_its_masked_lm_head_and_right_padding(
    tmp_path: Path, family: str, model_class: type
) -> None:
    folder = save_encoder(tmp_path / family, family)
    assert encoder_model_type(str(folder)) == family
    loaded = load_encoder(str(folder), device="cpu")
    assert isinstance(loaded.model, model_class) and loaded.tokenizer.padding_side == "right"
    assert loaded.source == "local" and loaded.weights_hash.startswith("sha256:")
    assert (loaded.architecture.model_type, loaded.architecture.n_layers, loaded.architecture.n_heads) == (family, 2, 4)
    ids = loaded.tokenizer("he was old")["input_ids"]
    assert ids[0] == loaded.tokenizer.cls_token_id and ids[-1] == loaded.tokenizer.sep_token_id


def test_causal_checkpoints_are_not_encoders(tmp_path: Path) -> None:
    causal = tiny_model(d_model=16, n_heads=4)
    causal.model.save_pretrained(tmp_path / "llama")
    causal.tokenizer.save_pretrained(tmp_path / "llama")
    assert encoder_model_type(str(tmp_path / "llama")) is None
    with pytest.raises(ModelSpecError, match="is not an encoder checkpoint"):
        load_encoder(str(tmp_path / "llama"), device="cpu")


def settings(data: Path, mode: str, **extra: object) -> FinetuneConfig:
    return FinetuneConfig.from_dict(
        {
            "task": "ethics_commonsense",
            "data_path": str(data),
            "mode": mode,
            "epochs": 2,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "pac": {"stage1_epochs": 1, "k_models": 2, "k_prior_log_scales": [-4, -2, 3]},
            **extra,
        }
    )


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("mode", ["plain", "pac"])
def test_encoder_fine_tunes_with_frozen_embeddings(tmp_path: Path, family: str, mode: str) -> None:
    loaded = load_encoder(str(save_encoder(tmp_path / "model", family)), device="cpu")
    embeddings = {k: v.clone() for k, v in loaded.model.base_model.embeddings.state_dict().items()}
    layer = loaded.model.base_model.encoder.layer[0].attention.self.query.weight.detach().clone()
    result = finetune(loaded.model, loaded.tokenizer, settings(write_task(tmp_path / "task.csv"), mode), tmp_path)
    assert result is not None and result.steps == 8 and 0.0 <= result.held_out_accuracy <= 1.0
    for name, tensor in loaded.model.base_model.embeddings.state_dict().items():
        torch.testing.assert_close(tensor, embeddings[name], rtol=0, atol=0)
    assert not torch.equal(loaded.model.base_model.encoder.layer[0].attention.self.query.weight, layer)
    saved = load_file(str(tmp_path / "checkpoints" / "finetuned" / "final" / "model.safetensors"))
    assert saved["head.weight"].shape == (2, 32) and "backbone.encoder.layer.0.attention.self.query.weight" in saved


def prosocial_settings(tmp_path: Path, mode: str, coefficient: float) -> FinetuneConfig:
    """Penalise head 2 of layer 1 toward a debiased tiny BERT (seed 1)."""
    heads = tmp_path / "selected_heads.csv"
    heads.write_text("layer,head,effect_before,effect_after,drop\n1,2,0.5,0.1,0.4\n", encoding="utf-8")
    if not (tmp_path / "debiased").is_dir():
        save_encoder(tmp_path / "debiased", "bert", seed=1, bias_noise=0.1)
    return settings(
        write_task(tmp_path / "task.csv"),
        mode,
        selected_heads_path=str(heads),
        debiased_checkpoint=str(tmp_path / "debiased"),
        prosocial_coefficient=coefficient,
        checkpoint_name=f"c{coefficient}",
        learning_rate=1e-2,
    )


def test_prosocial_mode_pulls_a_bert_head_toward_the_debiased_checkpoint(tmp_path: Path) -> None:
    distances = {}
    for coefficient in (0.0, 100.0):
        loaded = load_encoder(str(save_encoder(tmp_path / "base", "bert")), device="cpu")
        finetune(loaded.model, loaded.tokenizer, prosocial_settings(tmp_path, "prosocial", coefficient), tmp_path)
        reference = load_file(str(tmp_path / "debiased" / "model.safetensors"))
        query = loaded.model.bert.encoder.layer[1].attention.self.query.weight.detach()
        target = reference["bert.encoder.layer.1.attention.self.query.weight"]
        distances[coefficient] = float((query[16:24] - target[16:24]).norm())  # head 2 of 4, d_head 8
    assert distances[100.0] < 0.5 * distances[0.0]


def test_pac_prosocial_step_differs_from_pac_only_in_the_selected_bert_head(tmp_path: Path) -> None:
    """One PAC-tuning step with and without the head penalty (same seeds): only head 2 of layer 1
    (its query/key/value rows and biases, its output-projection columns) moves differently."""
    states = []
    for coefficient in (0.0, 10.0):
        loaded = load_encoder(str(save_encoder(tmp_path / "base", "bert")), device="cpu")
        config = prosocial_settings(tmp_path, "pac+prosocial", coefficient)
        assert finetune(loaded.model, loaded.tokenizer, config, tmp_path, stop_after_steps=1) is None
        states.append({k: v.detach().clone() for k, v in loaded.model.bert.named_parameters()})
    plain, penalised = states
    differs = {name for name in plain if not torch.equal(plain[name], penalised[name])}
    attention = "encoder.layer.1.attention"
    projections = ("query", "key", "value")
    assert differs == {f"{attention}.self.{p}.{k}" for p in projections for k in ("weight", "bias")} | {
        f"{attention}.output.dense.weight"
    }
    for name in differs:
        gap = (plain[name] - penalised[name]).abs()
        head = gap[16:24] if name.startswith(f"{attention}.self") else gap[:, 16:24]
        assert float(head.max()) > 0 and float(gap.sum() - head.sum()) == 0.0


def test_gpt2_token_and_position_embeddings_stay_frozen(tmp_path: Path) -> None:
    loaded = tiny_model("gpt2", d_model=32, n_heads=4)
    wte, wpe = (
        loaded.model.transformer.wte.weight.detach().clone(),
        loaded.model.transformer.wpe.weight.detach().clone(),
    )
    finetune(loaded.model, loaded.tokenizer, settings(write_task(tmp_path / "task.csv"), "plain"), tmp_path)
    assert torch.equal(loaded.model.transformer.wte.weight, wte) and torch.equal(
        loaded.model.transformer.wpe.weight, wpe
    )


def test_dropout_option_sets_the_backbone_and_refuses_non_probabilities(tmp_path: Path) -> None:
    loaded = tiny_encoder("bert", dropout=0.1)
    finetune(
        loaded.model,
        loaded.tokenizer,
        settings(write_task(tmp_path / "task.csv"), "plain", dropout=0.0, epochs=1),
        tmp_path,
    )
    assert {m.p for m in loaded.model.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}
    untouched = tiny_encoder("bert", dropout=0.1)
    finetune(
        untouched.model, untouched.tokenizer, settings(tmp_path / "task.csv", "plain", epochs=1), tmp_path / "default"
    )
    assert {m.p for m in untouched.model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
    with pytest.raises(ValueError, match=r"finetune.dropout is 1.5; use a probability in \[0, 1\)"):
        settings(tmp_path / "task.csv", "plain", dropout=1.5)


@pytest.mark.parametrize("hub_id", ["bert-base-uncased", "roberta-base"])
def test_hub_ids_go_through_the_hub_resolver(monkeypatch: pytest.MonkeyPatch, hub_id: str) -> None:
    """Offline and uncached, a paper model's hub id is refused by the same resolver that loads it online."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
        pytest.skip(f"{hub_id} is in the local Hugging Face cache")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelSpecError, match=f"'{hub_id}'.*HF_HUB_OFFLINE is set with no local copy"):
        load_encoder(hub_id, device="cpu")
    with pytest.raises(ModelSpecError, match="HF_HUB_OFFLINE"):
        encoder_model_type(hub_id)
