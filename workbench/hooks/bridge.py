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
from workbench.hooks.sites import Site, SiteKind

_BRIDGES: WeakKeyDictionary[nn.Module, Any] = WeakKeyDictionary()


def transformer_bridge(model: nn.Module, tokenizer: Any, name: str) -> Any:
    """The TransformerBridge around a private copy of ``model`` (the bridge rewires the module it
    wraps), booted once per model object.

    TransformerLens picks its adapter from ``config.architectures``; a model built from a config
    in memory has none (only a saved checkpoint's config.json names it), so the copy's config is
    given the model's own class name, as ``save_pretrained`` would write it.
    """
    if model not in _BRIDGES:
        from transformer_lens.model_bridge import TransformerBridge

        private: Any = copy.deepcopy(model)  # a PreTrainedModel (its config is read)
        if not getattr(private.config, "architectures", None):
            private.config.architectures = [type(private).__name__]
        _BRIDGES[model] = TransformerBridge.boot_transformers(
            name, hf_model=private, tokenizer=tokenizer, device=str(next(model.parameters()).device)
        )
    return _BRIDGES[model]


def bridge_forward(bridge: Any, batch: TokenBatch, plan: HookPlan) -> torch.Tensor:
    """Run the bridge on ``batch`` with the plan's hooks; return logits ``[batch, seq, vocab]``.

    TransformerLens has no ``hook_resid_mid`` on a parallel block (``ParallelBlockBridge``: attention
    and MLP both read ``resid_pre``); there it is formed as ``resid_pre + attn_out``, both as edited,
    by hooks added after all others (hooks of one hook point run in the order they were added).
    """
    from transformer_lens.model_bridge.generalized_components import ParallelBlockBridge

    hooks, formed = [], []
    for layer, kind in plan.keys():  # noqa: SIM118 (HookPlan, not a dict)
        if kind is SiteKind.RESID_MID and isinstance(bridge.blocks[layer], ParallelBlockBridge):
            formed.extend(_parallel_mid_hooks(plan, layer))
        else:
            hooks.append((Site(layer, kind).name, _hook(plan, layer, kind)))
    logits: torch.Tensor = bridge.run_with_hooks(
        batch.input_ids,
        fwd_hooks=hooks + formed,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        return_type="logits",
    )
    return logits


def _hook(plan: HookPlan, layer: int, kind: SiteKind) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """The TransformerLens hook function of one site: the plan's edits, then its readers."""

    def hook(activation: torch.Tensor, hook: Any) -> torch.Tensor:
        activation = plan.edit(layer, kind, activation)
        plan.read(layer, kind, activation)
        return activation

    return hook


def _parallel_mid_hooks(plan: HookPlan, layer: int) -> list[tuple[str, Callable[[torch.Tensor, Any], torch.Tensor]]]:
    """Hooks reading ``resid_mid = resid_pre + attn_out`` of the parallel block ``layer`` (read-only)."""
    kept: dict[str, torch.Tensor] = {}

    def keep_pre(activation: torch.Tensor, hook: Any) -> torch.Tensor:
        kept["resid_pre"] = activation
        return activation

    def read_mid(activation: torch.Tensor, hook: Any) -> torch.Tensor:
        plan.read(layer, SiteKind.RESID_MID, kept.pop("resid_pre") + activation)
        return activation

    return [
        (Site(layer, SiteKind.RESID_PRE).name, keep_pre),
        (Site(layer, SiteKind.ATTN_OUT).name, read_mid),
    ]
