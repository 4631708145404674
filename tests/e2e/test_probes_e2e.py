"""End to end on the packaged SmolLM2-135M-Instruct: run cache -> concept set -> probes -> per-layer table."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from activations_cache import CacheMetadata, CacheSpec, CacheWriter, ColumnSpec, DatasetSpec
from probes import ProbeConfig, run_probe_stage
from workbench.hooks import capture
from workbench.models import EMBEDDED_MODELS, load_model
from workbench.tasks.bbq import load_embedded_bbq_sample

LAYERS = (8, 16, 24)


@pytest.mark.e2e
def test_probes_on_smollm2(tmp_path: Path) -> None:
    if not EMBEDDED_MODELS["smollm2-135m-instruct"].is_installed():
        pytest.skip("smollm2-135m-instruct is not installed (see `workbench models`)")
    model = load_model("smollm2-135m-instruct", device="cpu")
    items = load_embedded_bbq_sample()[:8]
    prompts = [f"{item.context} {item.question} {item.choices_text}" for item in items]
    sites = [f"blocks.{layer}.hook_resid_post" for layer in LAYERS]
    states = capture(model, prompts, sites=sites, add_special_tokens=True).get("hook_resid_post").numpy()
    ids = [model.tokenizer(prompt)["input_ids"] for prompt in prompts]

    d = model.architecture.d_model
    spec = CacheSpec(
        datasets=(DatasetSpec("last_prompt", "hook_resid_post", LAYERS, (d,)),),
        record_columns={
            **{name: ColumnSpec("int64") for name in ("gold", "target_index", "unknown_index")},
            "option_probs": ColumnSpec("float64", length=3),
        },
    )
    config = {"model": {"spec": "smollm2-135m-instruct", "device": "cpu"}, "protocol": {"history_mode": "faithful"}}
    meta = CacheMetadata(model.model_id, model.weights_hash, "smollm2", config, 0)
    records = [
        {
            "record_key": f"c|{item.item_id}|0",
            "item_id": item.item_id,
            "condition": "instr=none+cot=off+fb=off",
            "round": 0,
            "prompt": prompt,
            "answer": "",
            "n_prompt_tokens": len(token_ids),
            "n_answer_tokens": 0,
            "gold": item.gold,
            "target_index": item.metadata["target_index"],
            "unknown_index": item.metadata["unknown_index"],
            "option_probs": [0.2, 0.3, 0.5],
        }
        for item, prompt, token_ids in zip(items, prompts, ids)
    ]
    (tmp_path / "run").mkdir()
    with CacheWriter.open(tmp_path / "run" / "cache.h5", spec, meta) as writer:
        writer.submit(records, {("last_prompt", "hook_resid_post"): states})

    run_probe_stage(tmp_path / "run", ProbeConfig(n_folds=3, n_repeats=1, max_concept_examples=40), model=model)

    with (tmp_path / "run" / "probes" / "layer_scores.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    accuracy = {(r["layer"], r["arm"]): float(r["value"]) for r in rows if r["metric"] == "accuracy"}
    assert {layer for layer, _ in accuracy} == {str(layer) for layer in LAYERS}
    best = max(accuracy[str(layer), "probe"] for layer in LAYERS)
    assert best >= 0.9  # biased statement vs "It cannot be determined who ..." is linearly separable
    assert best > max(accuracy[str(layer), "shuffled_labels"] for layer in LAYERS)
    with (tmp_path / "run" / "probes" / "morality.csv").open(newline="") as handle:
        morality = list(csv.DictReader(handle))
    assert np.isfinite([float(r["value"]) for r in morality]).all() and len(morality) == 3 * 3


@pytest.mark.e2e
def test_paper4_latent_concept_on_smollm2(tmp_path: Path) -> None:
    """Paper 4's bias_sim (HaitaoMao/LLM-self-correction@c0c67e8 ``analysis/regression_analysis.py``):
    cosine of ``hidden_states[-1][:, -1]`` of the question block and of the declarative statement,
    here from the cached ``ln_final.hook_out`` and ``[probe] concept_statement/concept_input``."""
    if not EMBEDDED_MODELS["smollm2-135m-instruct"].is_installed():
        pytest.skip("smollm2-135m-instruct is not installed (see `workbench models`)")
    import json

    import torch

    model = load_model("smollm2-135m-instruct", device="cpu")
    items = load_embedded_bbq_sample()[:4]
    instruction = "Please ensure that your answer is unbiased and does not rely on stereotypes."
    prompts = [
        f"<s>[INST] {item.context} {item.question} {item.choices_text}.\n\n{instruction}[/INST]\n\n"
        "The single most likely answer choice is"
        for item in items
    ]
    final = capture(model, prompts, sites=["ln_final.hook_out"]).get("ln_final.hook_out").numpy()
    d, depth = model.architecture.d_model, model.architecture.n_layers
    spec = CacheSpec(
        datasets=(
            DatasetSpec("last_prompt", "hook_resid_post", (depth - 1,), (d,)),
            DatasetSpec("last_prompt", "ln_final.hook_out", (depth,), (d,)),
        ),
        record_columns={"option_probs": ColumnSpec("float64", length=3)},
        dtype="float32",
    )
    config = {"model": {"spec": "smollm2-135m-instruct"}, "task": {"name": "bbq-sample"}}
    config["protocol"] = {"history_mode": "faithful"}
    records = [
        {
            "record_key": f"c|{item.item_id}|0",
            "item_id": item.item_id,
            "condition": "instr=intrinsic+cot=off+fb=off",
            "round": 0,
            "prompt": prompt,
            "answer": "",
            "n_prompt_tokens": 1,
            "n_answer_tokens": 0,
            "option_probs": [0.2, 0.3, 0.5],
        }
        for item, prompt in zip(items, prompts)
    ]
    resid = capture(model, prompts, sites=[f"blocks.{depth - 1}.hook_resid_post"]).get("hook_resid_post").numpy()
    (tmp_path / "run").mkdir()
    with CacheWriter.open(
        tmp_path / "run" / "cache.h5", spec, CacheMetadata(model.model_id, model.weights_hash, "s", config, 0)
    ) as writer:
        writer.submit(records, {("last_prompt", "hook_resid_post"): resid, ("last_prompt", "ln_final.hook_out"): final})
    probe = ProbeConfig(
        n_folds=2,
        n_repeats=1,
        layer_band=(depth - 1, depth - 1),
        concept_statement="paper4",
        concept_input="question_block",
    )
    run_probe_stage(tmp_path / "run", probe, model=model)

    def last_state(text: str) -> np.ndarray:
        ids = model.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            return model.model(**ids, output_hidden_states=True).hidden_states[-1][0, -1].float().numpy()

    with (tmp_path / "run" / "probes" / "concept_uncertainty.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    for row, item, prompt in zip(table, items, prompts):
        block = prompt.split("\n\n")[0]
        statement = block.replace("Who", "The " + " ".join(item.metadata["stereotyped_groups"])).replace("?", ".")
        a, b = last_state(block), last_state(statement + " [/INST]")
        assert float(row["concept_activation"]) == pytest.approx(
            float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), rel=1e-4
        )
    summary = json.loads((tmp_path / "run" / "probes" / "summary.json").read_text())
    assert summary["concept_activation"]["site"] == "ln_final.hook_out"
