"""Every major decoder family through every backend: capture, interventions, the answer round and
head attribution on tiny random models (2 layers, d_model 64) built from each family's config.

The expected values come from each model's own forward, never from the hook layer: Hugging Face's
``hidden_states`` (embedding output, each block's output, the final norm's output), the residual
decomposition, each family's output projection (and post-attention norm) as its Hugging Face source
names them (transformers 5.23.0 ``models/<family>/modeling_<family>.py``), a plain ``generate``, and
the attention weights the attention-mediation function records. The ``transformer_lens`` and
``nnsight`` backends must reproduce the ``hf`` backend's tensors and logits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import cast

import numpy as np
import pytest
import torch
from torch import nn
from transformers import FalconConfig, FalconForCausalLM, GraniteConfig, GraniteForCausalLM, PreTrainedModel

from workbench.attribution.attention_mediation import attention_mediation_effects, attention_patterns
from workbench.attribution.contrast import ContrastBatch, ContrastPair, tokenize_contrast_pairs
from workbench.attribution.direct_logit import direct_logit_attribution_effects
from workbench.attribution.head_effects import (
    activation_patching_effects,
    attribution_patching_effects,
    bias_measure,
    head_outputs,
    mean_ablation_effects,
    z_site,
)
from workbench.hooks import BACKENDS, Intervention, capture, capture_tokens, parse_sites
from workbench.hooks.capture import Capture, run_forward
from workbench.hooks.module_paths import UnsupportedArchitecture
from workbench.hooks.plan import HookPlan
from workbench.hooks.positions import TokenBatch
from workbench.hooks.sites import SiteKind
from workbench.inference.answering import answer_batch
from workbench.inference.generation import generate_greedy
from workbench.inference.option_scoring import option_mean_nll
from workbench.models import LoadedModel, ModelArchitecture, tiny_model
from workbench.models.tiny import TINY_FAMILIES, tiny_tokenizer

PROMPTS = ["the man said", "who can not be determined the old person was", "a"]
ANSWERS = [" he could pay", " unknown", " b c ."]
SITES = [
    "blocks.*.hook_resid_pre",
    "blocks.*.hook_resid_mid",
    "blocks.*.hook_resid_post",
    "blocks.*.hook_attn_out",
    "blocks.*.hook_mlp_out",
    "blocks.*.attn.hook_z",
    "blocks.*.attn.hook_pattern[0,3]",
    "ln_final.hook_normalized",
    "ln_final.hook_out",
]
POSITIONS = ("last_prompt", "answer_all")
LABELS = ("(a)", "(b)", "(c)")
PAIRS = [
    ContrastPair("the nurse said that", "the man said that", " she", " he"),
    ContrastPair("the doctor said that", "the woman said that", " he", " she"),
    ContrastPair("the person said", "the woman said", " he", " she"),  # shorter: left-padded
]

# Where each family writes its attention output, read from its Hugging Face modeling file:
# (blocks, output projection within a block, the norm applied to its output before the residual add).
ATTENTION_WRITE = {
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "phi3"), ("model.layers", "self_attn.o_proj", None)),
    **dict.fromkeys(("gemma2", "gemma3", "olmo2"), ("model.layers", "self_attn.o_proj", "post_attention_layernorm")),
    "gpt2": ("transformer.h", "attn.c_proj", None),
    "gpt_neox": ("gpt_neox.layers", "attention.dense", None),
}
POST_NORM_FAMILIES = ("gemma2", "gemma3", "olmo2")
"""Families that normalise the attention output before adding it (direct logit attribution refuses them)."""


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread for the module: on 64-wide models the threads only add synchronisation, which
    on a busy 2-core machine costs up to 50x (measured here), and the module runs about 2,000 forwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def family_model(request: pytest.FixtureRequest) -> Iterator[tuple[str, LoadedModel]]:
    """``(family, model)``; the final norm gets a random gain (and bias) so that its two sites differ."""
    family = str(request.param)
    model = tiny_model(family)
    norm = model.model.get_submodule(_final_norm_path(family))
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name in ("weight", "bias"):
            parameter = _parameter(norm, name)
            if parameter is not None:
                parameter.add_(torch.rand(parameter.shape, generator=generator) - 0.5)
    yield family, model


@pytest.fixture(scope="module")
def hf_capture(family_model: tuple[str, LoadedModel]) -> Capture:
    _, model = family_model
    return capture(model, PROMPTS, answers=ANSWERS, sites=SITES, positions=POSITIONS, batch_size=2)


def _parameter(module: nn.Module, name: str) -> torch.Tensor | None:
    """``module.<name>`` (a weight or bias), or ``None`` where the module has none."""
    value = getattr(module, name, None)
    return value if isinstance(value, torch.Tensor) else None


def _epsilon(norm: nn.Module) -> float:
    """A norm's epsilon: ``variance_epsilon`` (Llama-style RMSNorm) or ``eps`` (LayerNorm, Gemma's RMSNorm)."""
    return float(getattr(norm, "variance_epsilon", None) or getattr(norm, "eps"))  # noqa: B009


def _blocks(model: LoadedModel, family: str) -> nn.ModuleList:
    return cast(nn.ModuleList, model.model.get_submodule(ATTENTION_WRITE[family][0]))


def _final_norm_path(family: str) -> str:
    return {"gpt2": "transformer.ln_f", "gpt_neox": "gpt_neox.final_layer_norm"}.get(family, "model.norm")


def _hidden_states(model: LoadedModel, sequence: list[int]) -> tuple[torch.Tensor, ...]:
    """Hugging Face's own ``hidden_states`` of one unpadded sequence, each ``[seq, d_model]``."""
    with torch.no_grad():
        states = model.model(torch.tensor([sequence]), output_hidden_states=True).hidden_states
    return tuple(state[0] for state in states)


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=lambda message: f"{what}: {message}")


def _check_capture_against_the_model(family: str, model: LoadedModel, captured: Capture) -> None:
    """Every site of ``captured`` against the model's own forward (see the module docstring)."""
    n_layers = model.architecture.n_layers
    _, out_proj, post_norm = ATTENTION_WRITE[family]
    blocks = _blocks(model, family)
    for row, sequence in enumerate(captured.sequences):
        states = _hidden_states(model, sequence)
        last_prompt = captured.prompt_lengths[row] - 1
        for layer in range(n_layers):
            _close(captured[f"blocks.{layer}.hook_resid_pre", "last_prompt"][row], states[layer][last_prompt], "pre")
            if layer < n_layers - 1:  # transformers replaces the last block's output by the final norm's
                post = captured[f"blocks.{layer}.hook_resid_post", "last_prompt"][row]
                _close(post, states[layer + 1][last_prompt], f"resid_post {layer}")
        _close(captured["ln_final.hook_out", "last_prompt"][row], states[n_layers][last_prompt], "ln_final.hook_out")
    for position in POSITIONS:
        pre, mid, post = (
            captured.get(kind, position) for kind in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")
        )
        attn_out, mlp_out = captured.get("hook_attn_out", position), captured.get("hook_mlp_out", position)
        _close(mid, pre + attn_out, f"resid_mid = resid_pre + attn_out at {position}")
        _close(post, mid + mlp_out, f"resid_post = resid_mid + mlp_out at {position}")
        z = captured.get("attn.hook_z", position)  # [B, (T,) layers, heads, d_head]
        assert z.shape[-2:] == (model.architecture.n_heads, model.architecture.d_head)
        real = captured.masks.get(position, torch.ones(z.shape[0], dtype=torch.bool))  # padded tokens are zeros
        with torch.no_grad():
            for layer, block in enumerate(blocks):
                written = block.get_submodule(out_proj)(z.select(-3, layer).flatten(-2))
                if post_norm is not None:
                    written = block.get_submodule(post_norm)(written)
                _close(attn_out.select(-2, layer)[real], written[real], f"attn_out = W_O z, layer {layer}, {position}")
    # ln_final.hook_normalized is the final norm's input before its gain: (x - mean) / sqrt(var + eps) for
    # GPT-2's and GPT-NeoX's LayerNorm, x / sqrt(mean x^2 + eps) for the others' RMSNorm
    norm = model.model.get_submodule(_final_norm_path(family))
    eps = _epsilon(norm)
    x = captured[f"blocks.{n_layers - 1}.hook_resid_post", "last_prompt"].double()
    if family in ("gpt2", "gpt_neox"):
        x = x - x.mean(dim=-1, keepdim=True)
    expected = x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
    _close(captured["ln_final.hook_normalized", "last_prompt"].double(), expected, "ln_final.hook_normalized")
    for (name, _), pattern in captured.patterns.items():
        _close(pattern.sum(dim=-1), torch.ones(pattern.shape[:-1]), f"{name} sums to one")


@pytest.mark.parametrize("backend", BACKENDS)
def test_capture_of_every_site(family_model: tuple[str, LoadedModel], hf_capture: Capture, backend: str) -> None:
    family, model = family_model
    captured = (
        hf_capture
        if backend == "hf"
        else capture(model, PROMPTS, answers=ANSWERS, sites=SITES, positions=POSITIONS, batch_size=2, backend=backend)
    )
    _check_capture_against_the_model(family, model, captured)
    assert captured.stacked.keys() == hf_capture.stacked.keys()
    for key, value in hf_capture.stacked.items():
        _close(captured.stacked[key], value, f"{backend} vs hf {key}")
    for name, pattern in hf_capture.patterns.items():
        _close(captured.patterns[name], pattern, f"{backend} vs hf {name}")


def _logits(model: LoadedModel, interventions: list[Intervention], backend: str = "hf") -> torch.Tensor:
    """Logits at the real tokens of a small left-padded batch: ``[real tokens, vocab]``."""
    batch = TokenBatch.from_sequences([[5, 6, 7, 8, 9], [9, 10, 11]], [5, 3], pad_token_id=0)
    arch = model.architecture
    plan = HookPlan.for_interventions(interventions, arch.n_layers, arch.n_heads)
    return run_forward(model, batch, plan, backend)[batch.attention_mask.bool()]


INTERVENTIONS: list[Callable[[], Intervention]] = [
    lambda: Intervention("blocks.1.hook_resid_post", "add", value=torch.linspace(-1, 1, 64)),
    lambda: Intervention("blocks.0.attn.hook_z", "scale", value=0.5, heads=(1, 3)),
    lambda: Intervention("blocks.1.hook_mlp_out", "mean", value=torch.ones(64), positions=(1,)),
    lambda: Intervention("blocks.1.hook_resid_mid", "zero"),
    # not a constant vector: a LayerNorm removes a constant shift of the residual stream exactly
    lambda: Intervention("blocks.0.hook_resid_pre", "add", value=torch.linspace(0, 0.6, 64)),
    lambda: Intervention("blocks.0.hook_attn_out", "add", value=torch.linspace(1, -1, 64)),
    lambda: Intervention("ln_final.hook_out", "scale", value=2.0),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_interventions(family_model: tuple[str, LoadedModel], backend: str) -> None:
    family, model = family_model
    clean = _logits(model, [])
    for make in INTERVENTIONS:
        intervention = make()
        reference = _logits(model, [intervention])
        assert not torch.allclose(reference, clean, atol=1e-4), intervention.site
        _close(_logits(model, [intervention], backend), reference, f"{backend} {intervention.site}")
    if backend != "hf":
        return
    # zero-ablating head 2 of layer 1 equals zeroing its slice of the output projection
    projection = _blocks(model, family)[1].get_submodule(ATTENTION_WRITE[family][1])
    d_head = model.architecture.d_head
    ablated = _logits(model, [Intervention("blocks.1.attn.hook_z", "zero", heads=(2,))])
    weight = cast(torch.Tensor, projection.weight)
    saved = weight.detach().clone()
    with torch.no_grad():  # nn.Linear is [out, in]; GPT-2's Conv1D is [in, out]
        if isinstance(projection, nn.Linear):
            weight[:, 2 * d_head : 3 * d_head] = 0
        else:
            weight[2 * d_head : 3 * d_head] = 0
    try:
        manual = _logits(model, [])
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    _close(ablated, manual, "head ablation vs zeroed W_O slice")
    vector = torch.randn(64, generator=torch.Generator().manual_seed(1))
    via_mid = _logits(model, [Intervention("blocks.0.hook_resid_mid", "add", value=vector)])
    _close(via_mid, _logits(model, [Intervention("blocks.0.hook_attn_out", "add", value=vector)]), "resid_mid edit")


@pytest.mark.parametrize("backend", BACKENDS)
def test_answer_round(family_model: tuple[str, LoadedModel], backend: str) -> None:
    """One answer round equals generate + option scoring + a clean capture; a second round that reuses
    the first round's key/value cache equals one that does not."""
    _, model = family_model
    tokenizer = model.tokenizer
    sites = parse_sites(["blocks.*.hook_resid_post", "blocks.1.attn.hook_z"], 2, 4)
    ids = [tokenizer(prompt)["input_ids"] for prompt in PROMPTS]
    answered = answer_batch(
        model,
        ids,
        LABELS,
        sites,
        ("last_prompt",),
        max_new_tokens=4,
        backend=backend,
        keep_caches=True,
        prompt_texts=PROMPTS,
        add_special_tokens=True,
    )
    generated = generate_greedy(model, ids, 4)
    assert answered.answer_ids == generated.answer_ids
    for got, want in zip(answered.option_nll, option_mean_nll(model, PROMPTS, [LABELS] * 3, add_special_tokens=True)):
        assert np.allclose(got, want, atol=1e-5)
    captured = capture_tokens(
        model,
        [p + a for p, a in zip(ids, generated.answer_ids)],
        [len(p) for p in ids],
        sites=[site.name for site in sites],
    )
    assert answered.activations.keys() == captured.stacked.keys()
    for key, value in captured.stacked.items():
        _close(answered.activations[key], value, f"answer-round capture {key}")
    if backend != "hf":
        return
    follow_up = tokenizer(" review your previous answer", add_special_tokens=False)["input_ids"]
    ids = [prompt + answer + follow_up for prompt, answer in zip(ids, answered.answer_ids)]
    texts = [str(tokenizer.decode(prompt, skip_special_tokens=True)) for prompt in ids]
    fresh = answer_batch(
        model, ids, LABELS, sites, ("last_prompt",), max_new_tokens=4, prompt_texts=texts, add_special_tokens=True
    )
    reused = answer_batch(
        model,
        ids,
        LABELS,
        sites,
        ("last_prompt",),
        max_new_tokens=4,
        previous=answered.caches,
        prompt_texts=texts,
        add_special_tokens=True,
    )
    assert reused.answer_ids == fresh.answer_ids
    assert reused.encoded_tokens < fresh.encoded_tokens
    for got, want in zip(reused.option_nll, fresh.option_nll):
        assert np.allclose(got, want, atol=1e-4)
    for key, value in fresh.activations.items():
        _close(reused.activations[key], value, f"reused cache {key}")


def _contrast(model: LoadedModel) -> ContrastBatch:
    return tokenize_contrast_pairs(model.tokenizer, PAIRS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_attribution(family_model: tuple[str, LoadedModel], backend: str) -> None:
    """Patching identities on every backend; on ``hf`` also attribution patching to first order, direct
    logit attribution (or its refusal) and attention mediation against the captured attention."""
    family, model = family_model
    contrast = _contrast(model)
    arch = model.architecture
    clean_z = head_outputs(model, contrast.clean, backend)
    source_z = head_outputs(model, contrast.counterfactual, backend)
    real = contrast.counterfactual.attention_mask.bool()  # a padded token's z differs between attention kernels
    _close(source_z[:, real], head_outputs(model, contrast.counterfactual)[:, real], f"{backend} head outputs")
    assert activation_patching_effects(model, contrast, clean_z, backend).abs().max() < 1e-5
    every_head = [Intervention(z_site(layer), "patch", value=source_z[layer]) for layer in range(arch.n_layers)]
    _close(
        bias_measure(model, contrast.clean, contrast, every_head, backend),
        bias_measure(model, contrast.counterfactual, contrast),
        "every head patched from the counterfactual gives its measure",
    )
    ablation = mean_ablation_effects(model, contrast, backend)
    assert ablation.abs().max() > 1e-4
    if backend != "hf":
        _close(ablation, mean_ablation_effects(model, contrast), f"{backend} mean ablation")
        return
    # a small step relative to the heads' spread: OLMo 2 normalises tiny attention outputs, so an absolute
    # step of 1e-3 is already far outside the first-order regime there
    step = 1e-3 * float(clean_z.std())
    nearby = clean_z + step * torch.randn(clean_z.shape, generator=torch.Generator().manual_seed(1))
    patched = activation_patching_effects(model, contrast, nearby)
    estimated = attribution_patching_effects(model, contrast, nearby)
    assert patched.abs().max() > 1e-6
    assert (patched - estimated).abs().max() < 0.02 * patched.abs().max()
    _check_direct_logit_attribution(family, model, contrast)
    recorded = attention_patterns(model, contrast.clean)
    sequences = [
        row[mask.bool()].tolist() for row, mask in zip(contrast.clean.input_ids, contrast.clean.attention_mask)
    ]
    heads = capture_tokens(
        model, sequences, [len(s) for s in sequences], sites="blocks.*.attn.hook_pattern[0,1,2,3]", positions=("last",)
    )
    for layer in range(arch.n_layers):
        keys = heads.patterns[(f"blocks.{layer}.attn.hook_pattern[0,1,2,3]", "last")]  # left-aligned keys
        for row, mask in enumerate(contrast.clean.attention_mask.bool()):
            width = int(mask.sum())
            _close(recorded[layer][row, :, -1, mask], keys[row, :, :width], f"mediated attention of layer {layer}")
    assert attention_mediation_effects(model, contrast).abs().max() > 1e-6
    same = tokenize_contrast_pairs(model.tokenizer, [ContrastPair(p.clean, p.clean, p.target, p.foil) for p in PAIRS])
    assert attention_mediation_effects(model, same).abs().max() < 1e-6


def _last_token_reader(
    store: dict[tuple[int, SiteKind], torch.Tensor], key: tuple[int, SiteKind]
) -> Callable[[torch.Tensor], None]:
    def read(value: torch.Tensor) -> None:
        store[key] = value[:, -1].double()

    return read


def _check_direct_logit_attribution(family: str, model: LoadedModel, contrast: ContrastBatch) -> None:
    """The heads of a layer sum to that layer's attention write (bias removed) through the final norm's
    gain and frozen scale onto W_U[target] - W_U[foil]; post-norm families are refused in one line."""
    if family in POST_NORM_FAMILIES:
        with pytest.raises(UnsupportedArchitecture, match=f"{model.architecture.model_type} normalises the attention"):
            direct_logit_attribution_effects(model, contrast)
        return
    effects = direct_logit_attribution_effects(model, contrast)
    n_layers = model.architecture.n_layers
    store: dict[tuple[int, SiteKind], torch.Tensor] = {}
    plan = HookPlan()
    for layer, kind in [
        *((layer, SiteKind.ATTN_OUT) for layer in range(n_layers)),
        (n_layers - 1, SiteKind.RESID_POST),
    ]:
        plan.add_reader(layer, kind, _last_token_reader(store, (layer, kind)))
    run_forward(model, contrast.clean, plan)
    norm = model.model.get_submodule(_final_norm_path(family))
    residual = store[(n_layers - 1, SiteKind.RESID_POST)]
    unembed = model.model.get_output_embeddings().weight.double()
    direction = (unembed[contrast.target_ids] - unembed[contrast.foil_ids]) * cast(torch.Tensor, norm.weight).double()
    for layer, block in enumerate(_blocks(model, family)):
        bias = _parameter(block.get_submodule(ATTENTION_WRITE[family][1]), "bias")
        write = store[(layer, SiteKind.ATTN_OUT)] - (bias.double() if bias is not None else 0.0)
        if isinstance(norm, nn.LayerNorm):
            scale = torch.sqrt(residual.var(dim=-1, unbiased=False, keepdim=True) + _epsilon(norm))
            write = write - write.mean(dim=-1, keepdim=True)
        else:
            scale = torch.sqrt(residual.pow(2).mean(dim=-1, keepdim=True) + _epsilon(norm))
        expected = ((write / scale) * direction).sum(dim=-1).mean()
        _close(effects[layer].sum().double(), expected, f"direct logit attribution of layer {layer}")


def _falcon() -> PreTrainedModel:
    config = FalconConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, pad_token_id=0)
    return FalconForCausalLM(config)


def _granite() -> PreTrainedModel:
    """Granite adds ``residual_multiplier * sublayer output`` to the residual (transformers 5.23.0
    ``models/granite/modeling_granite.py``, ``GraniteDecoderLayer.forward``): no module outputs what enters
    the residual stream, so its attn_out / mlp_out cannot be read from a module (it used to be mapped to
    the Llama layout, which reported them unscaled)."""
    config = GraniteConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        residual_multiplier=0.22,
        pad_token_id=0,
    )
    return GraniteForCausalLM(config)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("model_type", "build"), [("falcon", _falcon), ("granite", _granite)])
def test_a_family_without_a_layout_fails_in_one_line(
    model_type: str, build: Callable[[], PreTrainedModel], backend: str
) -> None:
    hf_model = build().eval()
    architecture = ModelArchitecture.from_config(hf_model.config)
    model = LoadedModel(hf_model, tiny_tokenizer(), model_type, model_type, "in-memory", "x", architecture)
    with pytest.raises(UnsupportedArchitecture) as caught:
        capture(model, PROMPTS, sites="blocks.0.hook_resid_post", backend=backend)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"model type {model_type!r} has no module layout; supported: gemma, gemma2, ")
    assert message.endswith("Add a ModuleLayout in workbench/hooks/module_paths.py")


def test_tiny_families_have_the_shape_asked_for() -> None:
    for family in TINY_FAMILIES:
        arch = tiny_model(family).architecture
        grouped = family not in ("gpt2", "gpt_neox")
        assert dataclasses.astuple(arch)[1:6] == (2, 4, 2 if grouped else 4, 64, 16), family
    with pytest.raises(ValueError, match="unknown tiny model family 'bloom'; use one of llama, mistral"):
        tiny_model("bloom")
