"""Vig et al.'s causal mediation analysis through attention (NeurIPS 2020; code
``sebastianGehrmann/CausalMediationAnalysis@6e4bdd1``, ``attention_utils.py::perform_intervention``
and ``experiment.py::attention_intervention_experiment``): the indirect effect of a head is the
change of the bias odds when that head's attention weights on the clean prompt are replaced by
the weights it computes on the counterfactual prompt, everything else recomputed.

For a contrast pair (contrast.py) with stereotypical continuation ``target`` and the other one
``foil``, the measure is Vig et al.'s ``y = p(anti) / p(stereo) = p(foil | x) / p(target | x)``
at the last token, and the indirect effect of head (l, h) is

    IE(l, h) = mean over pairs of  y(clean, A_{l,h} := A_{l,h}(counterfactual)) / y(clean) - 1

(unitless; Vig et al.'s ``(odds_intervention - odds_base) / odds_base``). Because
y = exp(logit(foil) - logit(target)) = exp(-m), IE = mean(exp(-(m_intervened - m_clean))) - 1.

The attention weights are replaced inside an eager attention function registered with
transformers' attention interface (``AttentionInterface``, ``AttentionMaskInterface``), used for
the duration of one forward: softmax(q kᵀ · scaling + mask) @ v, per query head, with GQA key/value
heads repeated, and Gemma-style logit soft-capping when the model passes ``softcap``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, eager_mask

from workbench.attribution.contrast import ContrastBatch, logit_difference
from workbench.hooks.module_paths import block_modules, layout_for
from workbench.hooks.positions import TokenBatch
from workbench.models.loading import LoadedModel

IMPLEMENTATION = "workbench_attention_mediation"


@dataclass
class _Mediation:
    """What the registered attention function does in the current forward.

    Attributes:
        layers: id(attention module) -> layer index.
        record: layers whose attention weights [batch, heads, query, key] are kept in ``recorded``.
        replace: layer -> (weights [batch, heads, query, key] to write, the heads to replace).
    """

    layers: dict[int, int]
    record: frozenset[int] = frozenset()
    replace: Mapping[int, tuple[torch.Tensor, tuple[int, ...]]] = field(default_factory=dict)
    recorded: dict[int, torch.Tensor] = field(default_factory=dict)


_CURRENT: ContextVar[_Mediation | None] = ContextVar("workbench_attention_mediation", default=None)


def mediated_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with recorded / replaced weights: query [B, H, T, d], key/value [B, H_kv, S, d]
    -> (output [B, T, H, d], weights [B, H, T, S])."""
    state = _CURRENT.get()
    if state is None:
        raise RuntimeError(f"attention implementation {IMPLEMENTATION!r} runs only inside attention_mediation()")
    repeats = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(repeats, dim=1), value.repeat_interleave(repeats, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    softcap = kwargs.get("softcap")
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    layer = state.layers[id(module)]
    if layer in state.record:
        state.recorded[layer] = weights.detach().clone()
    if layer in state.replace:
        replacement, heads = state.replace[layer]
        weights = weights.clone()
        weights[:, list(heads)] = replacement[:, list(heads)].to(weights.device, weights.dtype)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


AttentionInterface.register(IMPLEMENTATION, mediated_attention)
if IMPLEMENTATION not in ALL_MASK_ATTENTION_FUNCTIONS:
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


@contextmanager
def attention_mediation(
    model: LoadedModel,
    record: frozenset[int] = frozenset(),
    replace: Mapping[int, tuple[torch.Tensor, tuple[int, ...]]] | None = None,
) -> Iterator[_Mediation]:
    """Run the block's forwards with :func:`mediated_attention`: keep the weights of the ``record``
    layers (in the yielded state's ``recorded``), write ``replace``'s weights for its heads."""
    layout = layout_for(model.architecture.model_type, model.architecture.vision_type)
    blocks = block_modules(model.model, layout)
    layers = {id(block.get_submodule(layout.attention)): index for index, block in enumerate(blocks)}
    state = _Mediation(layers, record, replace or {})
    hf_model: PreTrainedModel = model.model
    previous = hf_model.config._attn_implementation
    token = _CURRENT.set(state)
    hf_model.set_attn_implementation(IMPLEMENTATION)
    try:
        yield state
    finally:
        hf_model.set_attn_implementation(previous)
        _CURRENT.reset(token)


def _logits(model: LoadedModel, batch: TokenBatch) -> torch.Tensor:
    """Logits [batch, seq, vocab] of one plain forward (the caller chooses the attention implementation)."""
    batch = batch.to(model.device)
    logits: torch.Tensor = model.model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids, use_cache=False
    ).logits
    return logits


def _measure(model: LoadedModel, batch: TokenBatch, contrast: ContrastBatch) -> torch.Tensor:
    """Per-pair m = logit(target) - logit(foil) at the last token: (n_pairs,), float32, CPU."""
    return logit_difference(_logits(model, batch).float(), contrast.target_ids, contrast.foil_ids).cpu()


@torch.inference_mode()
def attention_patterns(model: LoadedModel, batch: TokenBatch) -> dict[int, torch.Tensor]:
    """Every layer's attention weights on ``batch``: layer -> [batch, n_heads, seq, seq]."""
    with attention_mediation(model, record=frozenset(range(model.architecture.n_layers))) as state:
        _logits(model, batch)
    return state.recorded


@torch.inference_mode()
def attention_mediation_effects(model: LoadedModel, contrast: ContrastBatch) -> torch.Tensor:
    """Vig et al.'s indirect effect of every head through its attention weights: [n_layers, n_heads]
    (unitless: the relative change of p(anti) / p(stereo)). One forward per head."""
    arch = model.architecture
    counterfactual = attention_patterns(model, contrast.counterfactual)
    with attention_mediation(model):
        clean = _measure(model, contrast.clean, contrast)
    effects = torch.zeros(arch.n_layers, arch.n_heads)
    for layer in range(arch.n_layers):
        for head in range(arch.n_heads):
            with attention_mediation(model, replace={layer: (counterfactual[layer], (head,))}):
                intervened = _measure(model, contrast.clean, contrast)
            effects[layer, head] = torch.exp(-(intervened - clean).double()).mean() - 1
    return effects
