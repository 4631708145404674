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
