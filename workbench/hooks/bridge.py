"""The ``transformer_lens`` backend: TransformerLens' TransformerBridge over the loaded model.

TransformerLens' hook names are also this workbench's site names, so a plan maps one-to-one
onto ``run_with_hooks``. The bridge replaces the submodules of the model it wraps with its
own components (and forces eager attention), so it wraps a private copy of the loaded model:
the ``hf`` and ``nnsight`` backends keep the untouched original. The copy costs one more set
of weights in memory, the price TransformerLens' own docs name for ``hf_model=``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

import torch
from torch import nn

from workbench.hooks.plan import HookPlan
from workbench.hooks.positions import TokenBatch
from workbench.hooks.sites import SiteKind

_BRIDGES: WeakKeyDictionary[nn.Module, tuple[Any, nn.Module]] = WeakKeyDictionary()


def transformer_bridge(model: nn.Module, tokenizer: Any, name: str) -> tuple[Any, nn.Module]:
    """The TransformerBridge around a private copy of ``model``, booted once per model object."""
    if model not in _BRIDGES:
        from transformer_lens.model_bridge import TransformerBridge

        private = copy.deepcopy(model)
        bridge = TransformerBridge.boot_transformers(
            name, hf_model=private, tokenizer=tokenizer, device=str(next(model.parameters()).device)
        )
        _BRIDGES[model] = (bridge, private)
    return _BRIDGES[model]


def bridge_forward(bridge: Any, batch: TokenBatch, plan: HookPlan) -> torch.Tensor:
    """Run the bridge on ``batch`` with the plan's hooks; return logits ``[batch, seq, vocab]``."""
    hooks = []
    resid_pre: dict[int, torch.Tensor] = {}
    mid_edited = {layer for layer, kind in plan.keys() if kind is SiteKind.RESID_MID and plan.has_editors(layer, kind)}
    keys = set(plan.keys())
    keys |= {(layer, SiteKind.RESID_PRE) for layer in mid_edited} | {(layer, SiteKind.ATTN_OUT) for layer in mid_edited}
    order = list(SiteKind)
    for layer, kind in sorted(keys, key=lambda key: (key[0], order.index(key[1]))):
        hooks.append((f"blocks.{layer}.{kind.value}", _hook(plan, layer, kind, layer in mid_edited, resid_pre)))
    return bridge.run_with_hooks(
        batch.input_ids,
        fwd_hooks=hooks,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        return_type="logits",
    )


def _hook(
    plan: HookPlan, layer: int, kind: SiteKind, edits_mid: bool, resid_pre: dict[int, torch.Tensor]
) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """The TransformerLens hook function of one site.

    ``hook_resid_mid`` is read where the bridge exposes it, but the residual addition happens
    inside the block, so an edit of resid_mid is applied through the attention output:
    ``attn_out' = f(resid_pre + attn_out) - resid_pre`` (as the ``hf`` backend does).
    """

    def hook(activation: torch.Tensor, hook: Any) -> torch.Tensor:
        if kind is SiteKind.RESID_MID:
            plan.read(layer, kind, activation)
            return activation
        activation = plan.edit(layer, kind, activation)
        if kind is SiteKind.RESID_PRE and edits_mid:
            resid_pre[layer] = activation
        if kind is SiteKind.ATTN_OUT and edits_mid:
            pre = resid_pre.pop(layer)
            activation = plan.edit(layer, SiteKind.RESID_MID, pre + activation) - pre
        plan.read(layer, kind, activation)
        return activation

    return hook
