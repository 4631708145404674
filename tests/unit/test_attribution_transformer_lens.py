"""Our attribution patching and direct logit attribution against TransformerLens 4.3's own tools
(``transformer_lens.tools.analysis.attribution_patch`` and ``direct_logit_attribution``) on tiny
random Llama (GQA) and GPT-2 models, each pair run alone through TransformerLens (no padding)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.tools.analysis import attribution_patch, direct_logit_attribution

from workbench.attribution.contrast import ContrastPair, tokenize_contrast_pairs
from workbench.attribution.direct_logit import direct_logit_attribution_effects, final_norm
from workbench.attribution.head_effects import attribution_patching_effects, head_outputs
from workbench.attribution.selection import rank_correlation
from workbench.hooks.bridge import transformer_bridge
from workbench.models import LoadedModel, tiny_model

PAIRS = [
    ContrastPair("The nurse said that", "The man said that", " she", " he"),
    ContrastPair("The doctor said that", "The woman said that", " he", " she"),
    ContrastPair("The person said", "The woman said", " he", " she"),  # shorter: left-padded in our batch
]


def tiny(family: str) -> LoadedModel:
    return tiny_model(family, d_model=32, n_heads=4, n_kv_heads=2 if family == "llama" else 4)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_attribution_patching_agrees_with_transformer_lens(family: str) -> None:
    """TransformerLens scores ``(a_clean - a_corrupt) . d metric / d a`` at the corrupt run (its
    denoising form); ours is ``(z_counterfactual - z_clean) . d m / d z`` at the clean run, so our
    clean prompt is its corrupt one and our counterfactual its clean one."""
    model = tiny(family)
    contrast = tokenize_contrast_pairs(model.tokenizer, PAIRS)
    ours = attribution_patching_effects(model, contrast, head_outputs(model, contrast.counterfactual))
    bridge = transformer_bridge(model.model, model.tokenizer, model.model_id)
    theirs = torch.zeros_like(ours)
    for pair in range(len(PAIRS)):
        real = contrast.clean.attention_mask[pair].bool()
        target, foil = int(contrast.target_ids[pair]), int(contrast.foil_ids[pair])
        result = attribution_patch(
            bridge,
            contrast.counterfactual.input_ids[pair : pair + 1, real],
            contrast.clean.input_ids[pair : pair + 1, real],
            lambda logits, target=target, foil=foil: logits[0, -1, target] - logits[0, -1, foil],
        )
        for node, score in result.node_scores.items():
            if node.kind == "attn_head_out":
                theirs[node.layer, node.head] += score / len(PAIRS)
    assert rank_correlation(ours.numpy(), theirs.numpy()) > 0.95
    torch.testing.assert_close(ours, theirs, atol=1e-5 * float(ours.abs().max()), rtol=1e-4)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_direct_logit_attribution_agrees_with_transformer_lens(family: str) -> None:
    model = tiny(family)
    with torch.no_grad():  # a final norm with a learned-looking gain (and bias) so that it matters
        norm = final_norm(model)
        norm.weight.mul_(1 + 0.5 * torch.randn(norm.weight.shape, generator=torch.Generator().manual_seed(3)))
        if getattr(norm, "bias", None) is not None:
            norm.bias.add_(0.1)
    contrast = tokenize_contrast_pairs(model.tokenizer, PAIRS)
    ours = direct_logit_attribution_effects(model, contrast)
    bridge = TransformerBridge.boot_transformers(
        model.model_id, hf_model=copy.deepcopy(model.model), tokenizer=model.tokenizer, device="cpu"
    )
    bridge.enable_compatibility_mode()  # folds the final norm's gain into the unembedding, as its DLA requires
    theirs = torch.zeros_like(ours)
    for pair in range(len(PAIRS)):
        real = contrast.clean.attention_mask[pair].bool()
        result = direct_logit_attribution(
            bridge,
            contrast.clean.input_ids[pair : pair + 1, real],
            answer_tokens=contrast.target_ids[pair : pair + 1],
            incorrect_tokens=contrast.foil_ids[pair : pair + 1],
            unit="head",
        )
        heads = [label for label in result.labels if label != "remainder"]
        values = result.attribution.detach().reshape(len(result.labels))[: len(heads)]
        theirs += values.view(2, 4) / len(PAIRS)
    assert float(ours.abs().max()) > 1e-3
    torch.testing.assert_close(ours, theirs, atol=1e-5 * float(ours.abs().max()), rtol=1e-4)
    assert np.isclose(rank_correlation(ours.numpy(), theirs.numpy()), 1.0)
