"""The final-norm sites: ``ln_final.hook_out`` is Hugging Face's ``hidden_states[-1]`` and
``ln_final.hook_normalized`` is TransformerLens' value (before the gain), on every backend.

The tiny models get a random final-norm gain (and, for GPT-2, bias) so that the two sites differ:
with the default gain of ones they would coincide and the tests could not tell them apart.
"""

from __future__ import annotations

import pytest
import torch

from workbench.hooks import Intervention, InterventionError, Site, SiteError, SiteKind, capture, parse_sites
from workbench.hooks.capture import run_forward
from workbench.hooks.module_paths import UnsupportedArchitecture, normalized_before_gain
from workbench.hooks.plan import HookPlan
from workbench.hooks.positions import TokenBatch
from workbench.inference.answering import answer_batch
from workbench.models import tiny_model

PROMPTS = ["the man said", "who can not be determined the old person was", "a"]
ANSWERS = [" he could pay", " unknown", " b c ."]
FINAL_SITES = ["ln_final.hook_out", "ln_final.hook_normalized"]
NORM_PATHS = {"llama": "model.norm", "gpt2": "transformer.ln_f"}


def _with_random_final_norm(family: str):
    model = tiny_model(family, n_layers=3)
    norm = model.model.get_submodule(NORM_PATHS[family])
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(norm.weight.shape, generator=generator) * 1.8 + 0.2)
        if getattr(norm, "bias", None) is not None:
            norm.bias.copy_(torch.rand(norm.bias.shape, generator=generator) - 0.5)
    return model


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request):
    return _with_random_final_norm(request.param)


def test_final_norm_names_parse_to_the_layer_after_the_last_block() -> None:
    sites = parse_sites(["ln_final.hook_out", "blocks.*.hook_resid_post", "ln_final.hook_normalized"], 3, 4)
    assert [site.name for site in sites] == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
        "blocks.2.hook_resid_post",
        "ln_final.hook_normalized",
        "ln_final.hook_out",
    ]
    assert sites[-1] == Site(3, SiteKind.FINAL_OUT)
    with pytest.raises(SiteError, match=r"unknown site 'blocks.2.ln_final.hook_out'; valid forms: .*ln_final.hook_out"):
        parse_sites("blocks.2.ln_final.hook_out", 3, 4)


def test_hook_out_is_hidden_states_minus_one_and_hook_normalized_is_before_the_gain(model) -> None:
    captured = capture(model, PROMPTS, sites=["blocks.2.hook_resid_post", *FINAL_SITES], batch_size=2)
    norm = model.model.get_submodule(NORM_PATHS[model.architecture.model_type])
    for row, prompt in enumerate(PROMPTS):
        ids = model.tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            hidden_last = model.model(**ids, output_hidden_states=True).hidden_states[-1][0, -1]
        assert torch.allclose(captured["ln_final.hook_out"][row], hidden_last, atol=1e-5)
        # by hand, from the last block's output (the final norm's input)
        x = captured["blocks.2.hook_resid_post"][row].double()
        if model.architecture.model_type == "gpt2":
            x = x - x.mean()
            expected = x / torch.sqrt(x.pow(2).mean() + norm.eps)
            out = expected * norm.weight.double() + norm.bias.double()
        else:
            expected = x / torch.sqrt(x.pow(2).mean() + norm.variance_epsilon)
            out = expected * norm.weight.double()
        assert torch.allclose(captured["ln_final.hook_normalized"][row].double(), expected, rtol=1e-5, atol=1e-5)
        assert torch.allclose(captured["ln_final.hook_out"][row].double(), out, rtol=1e-5, atol=1e-5)
    cosine = torch.nn.functional.cosine_similarity(captured["ln_final.hook_out"], captured["ln_final.hook_normalized"])
    assert bool((cosine < 0.999).all())  # the gain changes the direction, hence every cosine to it


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_final_norm_sites_agree_across_backends(model, backend) -> None:
    sites = ["blocks.*.hook_resid_post", *FINAL_SITES]
    positions = ("last_prompt", "answer_all", -2)
    reference = capture(model, PROMPTS, answers=ANSWERS, sites=sites, positions=positions, batch_size=2)
    other = capture(model, PROMPTS, answers=ANSWERS, sites=sites, positions=positions, batch_size=2, backend=backend)
    assert other.stacked.keys() == reference.stacked.keys()
    assert reference.layers[SiteKind.FINAL_OUT] == [3]
    for key, value in reference.stacked.items():
        assert (other.stacked[key] - value).abs().max() <= 1e-5, key


def _logits(model, interventions=(), backend="hf") -> torch.Tensor:
    batch = TokenBatch.from_sequences([[5, 6, 7, 8], [9, 10]], [4, 2], pad_token_id=0)
    arch = model.architecture
    logits = run_forward(model, batch, HookPlan.for_interventions(interventions, arch.n_layers, arch.n_heads), backend)
    return logits[batch.attention_mask.bool()]


@pytest.mark.parametrize("backend", ["hf", "transformer_lens", "nnsight"])
def test_editing_hook_out_moves_the_logits_by_the_unembedding_of_the_edit(model, backend) -> None:
    vector = torch.linspace(-2, 2, model.architecture.d_model)
    edited = _logits(model, [Intervention("ln_final.hook_out", "add", value=vector)], backend)
    unembed = model.model.get_output_embeddings()
    with torch.no_grad():
        shift = unembed(vector)  # the unembedding is linear and bias-free in both families
    assert torch.allclose(edited - _logits(model), shift.expand_as(edited), atol=1e-4)


def test_hook_normalized_is_read_only() -> None:
    with pytest.raises(InterventionError, match="ln_final.hook_normalized is read-only; edit ln_final.hook_out"):
        HookPlan.for_interventions([Intervention("ln_final.hook_normalized", "zero")], 3, 4)


def test_runner_prefill_capture_of_the_final_norm_equals_a_clean_capture(model) -> None:
    prompt_ids = [model.tokenizer(prompt)["input_ids"] for prompt in PROMPTS]
    sites = parse_sites(FINAL_SITES, model.architecture.n_layers, model.architecture.n_heads)
    answered = answer_batch(model, prompt_ids, [], sites, ["last_prompt"], 2)
    clean = capture(model, PROMPTS, sites=FINAL_SITES)
    for kind in (SiteKind.FINAL_OUT, SiteKind.FINAL_NORMALIZED):
        got = answered.activations[(kind, "last_prompt")]
        assert got.shape == (3, 1, model.architecture.d_model)
        assert torch.allclose(got, clean.get(kind), atol=1e-5)


def test_a_norm_of_unknown_kind_is_refused_in_one_line() -> None:
    with pytest.raises(UnsupportedArchitecture, match="final norm Identity is neither a LayerNorm nor an RMSNorm"):
        normalized_before_gain(torch.nn.Identity(), torch.zeros(2, 4))
