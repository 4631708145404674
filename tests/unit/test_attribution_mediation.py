"""Vig et al.'s causal mediation through attention weights, on tiny random Llama (GQA) and GPT-2
models: the registered attention function is the model's attention, its recorded weights are the
hook layer's ``hook_pattern``, and the indirect effect equals TransformerLens' own pattern
intervention scored with Vig et al.'s formula."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.attribution.attention_mediation import (
    _logits,
    attention_mediation,
    attention_mediation_effects,
    attention_patterns,
)
from workbench.attribution.contrast import ContrastPair, tokenize_contrast_pairs
from workbench.hooks.bridge import transformer_bridge
from workbench.hooks.capture import run_forward
from workbench.hooks.plan import HookPlan
from workbench.hooks.sites import SiteKind
from workbench.models import LoadedModel, tiny_model

PAIRS = [
    ContrastPair("The nurse said that", "The man said that", " she", " he"),
    ContrastPair("The doctor said that", "The woman said that", " he", " she"),
    ContrastPair("The person said", "The woman said", " he", " she"),  # shorter: left-padded in the batch
]


def sharp_model(family: str) -> LoadedModel:
    """A tiny random model whose query/key weights are scaled up, so attention (and its effects) is not flat."""
    model = tiny_model(family, d_model=32, n_heads=4, n_kv_heads=2 if family == "llama" else 4)
    with torch.no_grad():
        for name, param in model.model.named_parameters():
            if any(part in name for part in ("q_proj", "k_proj", "c_attn")):
                param.mul_(6.0)
    return model


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_mediated_attention_is_the_models_attention_and_records_its_pattern(family: str) -> None:
    model = sharp_model(family)
    contrast = tokenize_contrast_pairs(model.tokenizer, PAIRS)
    with torch.no_grad():
        reference = _logits(model, contrast.clean)
        with attention_mediation(model):
            mediated = _logits(model, contrast.clean)
    real = contrast.clean.attention_mask.bool()
    torch.testing.assert_close(mediated[real], reference[real], atol=1e-5, rtol=1e-5)
    assert model.model.config._attn_implementation == "sdpa"  # restored
    plan, read = HookPlan(), {}
    plan.add_reader(1, SiteKind.PATTERN, lambda pattern: read.__setitem__(1, pattern.clone()))
    run_forward(model, contrast.clean, plan)
    torch.testing.assert_close(attention_patterns(model, contrast.clean)[1], read[1], atol=1e-6, rtol=1e-5)


def test_replacing_weights_by_their_own_clean_values_has_no_effect() -> None:
    model = sharp_model("llama")
    contrast = tokenize_contrast_pairs(model.tokenizer, PAIRS)
    own = attention_patterns(model, contrast.clean)
    with torch.no_grad(), attention_mediation(model):
        clean = _logits(model, contrast.clean)
    with torch.no_grad(), attention_mediation(model, replace={1: (own[1], (0, 1, 2, 3))}):
        replaced = _logits(model, contrast.clean)
    torch.testing.assert_close(replaced, clean, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_indirect_effect_equals_transformer_lens_pattern_intervention_with_vigs_formula(family: str) -> None:
    """Oracle: TransformerLens 4.3's bridge with ``blocks.{l}.attn.hook_pattern`` of one head overwritten
    by its counterfactual pattern, each pair run alone (no padding); the effect is Vig et al.'s
    ``(odds_intervention - odds_base) / odds_base`` with odds = p(anti) / p(stereo)
    (sebastianGehrmann/CausalMediationAnalysis@6e4bdd1 attention_utils.py::perform_intervention),
    averaged over pairs."""
    model = sharp_model(family)
    contrast = tokenize_contrast_pairs(model.tokenizer, PAIRS)
    ours = attention_mediation_effects(model, contrast)
    bridge = transformer_bridge(model.model, model.tokenizer, model.model_id)
    oracle = torch.zeros_like(ours)
    for pair in range(len(PAIRS)):
        real = contrast.clean.attention_mask[pair].bool()
        clean_ids = contrast.clean.input_ids[pair : pair + 1, real]
        _, counterfactual = bridge.run_with_cache(contrast.counterfactual.input_ids[pair : pair + 1, real])
        stereo, anti = int(contrast.target_ids[pair]), int(contrast.foil_ids[pair])
        with torch.no_grad():
            base = bridge(clean_ids)[0, -1].softmax(-1)
        odds_base = float(base[anti] / base[stereo])
        for layer in range(2):
            name = f"blocks.{layer}.attn.hook_pattern"
            for head in range(4):

                def overwrite(
                    pattern: torch.Tensor, hook: object, source: torch.Tensor = counterfactual[name], head: int = head
                ) -> torch.Tensor:
                    pattern = pattern.clone()
                    pattern[:, head] = source[:, head]
                    return pattern

                with torch.no_grad():
                    probs = bridge.run_with_hooks(clean_ids, fwd_hooks=[(name, overwrite)])[0, -1].softmax(-1)
                odds = float(probs[anti] / probs[stereo])
                oracle[layer, head] += (odds - odds_base) / odds_base / len(PAIRS)
    assert float(ours.abs().max()) > 1e-3 and not math.isnan(float(ours.sum()))
    torch.testing.assert_close(ours, oracle, atol=1e-4 * float(ours.abs().max()), rtol=1e-3)
