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
    wraps), booted once per model object."""
    if model not in _BRIDGES:
        from transformer_lens.model_bridge import TransformerBridge

        _BRIDGES[model] = TransformerBridge.boot_transformers(
            name, hf_model=copy.deepcopy(model), tokenizer=tokenizer, device=str(next(model.parameters()).device)
        )
    return _BRIDGES[model]


def bridge_forward(bridge: Any, batch: TokenBatch, plan: HookPlan) -> torch.Tensor:
    """Run the bridge on ``batch`` with the plan's hooks; return logits ``[batch, seq, vocab]``."""
    hooks = [(Site(layer, kind).name, _hook(plan, layer, kind)) for layer, kind in plan.keys()]  # noqa: SIM118 (HookPlan, not a dict)
    logits: torch.Tensor = bridge.run_with_hooks(
        batch.input_ids,
        fwd_hooks=hooks,
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
