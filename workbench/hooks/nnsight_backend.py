"""The ``nnsight`` backend: an nnsight trace over the loaded Hugging Face model.

nnsight executes the trace body alongside the real forward, so readers receive real tensors
and editors are assignments to module inputs/outputs. Modules are visited in execution order,
as nnsight requires, and found by nnsight's own lookup (``Envoy.get`` of the layout's dotted
paths). The same code path is what a user would extend for NDIF remote execution
(``trace(..., remote=True)``) once the model lives on NDIF.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any
from weakref import WeakKeyDictionary

import torch
from torch import nn
from transformers import PreTrainedModel

from workbench.hooks.module_paths import ModuleLayout, block_modules, is_parallel, normalized_before_gain
from workbench.hooks.native import eager_attention
from workbench.hooks.plan import HookPlan
from workbench.hooks.positions import TokenBatch
from workbench.hooks.sites import FINAL_NORM_KINDS, SiteKind

_WRAPPERS: WeakKeyDictionary[nn.Module, Any] = WeakKeyDictionary()


def nnsight_model(model: nn.Module) -> Any:
    """The nnsight wrapper around ``model`` (created once per model object)."""
    if model not in _WRAPPERS:
        from nnsight import NNsight

        _WRAPPERS[model] = NNsight(model)
    return _WRAPPERS[model]


def nnsight_forward(
    wrapper: Any, model: PreTrainedModel, layout: ModuleLayout, n_heads: int, batch: TokenBatch, plan: HookPlan
) -> torch.Tensor:
    """Trace ``batch`` through ``wrapper`` (nnsight around ``model``) applying ``plan``; return logits."""
    keys = plan.keys()
    with (
        eager_attention(model) if plan.reads_patterns else nullcontext(),
        wrapper.trace(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids),
    ):
        blocks = wrapper.get(layout.layers)
        modules = block_modules(model, layout)
        for layer in sorted({layer for layer, kind in keys if kind not in FINAL_NORM_KINDS}):
            kinds = [kind for key_layer, kind in keys if key_layer == layer]
            _trace_block(blocks[layer], layout, is_parallel(modules[layer], layout), n_heads, layer, kinds, plan)
        final = [(layer, kind) for layer, kind in keys if kind in FINAL_NORM_KINDS]
        if final:
            _trace_final_norm(wrapper.get(layout.final_norm), model.get_submodule(layout.final_norm), final, plan)
        logits: torch.Tensor = wrapper.output.logits.save()
    return logits


def _trace_block(
    block: Any, layout: ModuleLayout, parallel: bool, n_heads: int, layer: int, kinds: list[SiteKind], plan: HookPlan
) -> None:
    """Apply the plan at one block, touching its modules in execution order.

    In a ``parallel`` block, ``resid_mid`` is formed as ``resid_pre + attn_out`` (both as edited).
    """
    parallel_mid = parallel and SiteKind.RESID_MID in kinds
    resid_pre = None
    if SiteKind.RESID_PRE in kinds or parallel_mid:
        resid_pre = plan.edit(layer, SiteKind.RESID_PRE, block.input)
        if plan.has_editors(layer, SiteKind.RESID_PRE):
            block.input = resid_pre
        if SiteKind.RESID_PRE in kinds:
            plan.read(layer, SiteKind.RESID_PRE, resid_pre)
    if SiteKind.Z in kinds:
        module = block.get(layout.z_module)
        merged = module.input
        value = plan.edit(layer, SiteKind.Z, merged.view(*merged.shape[:-1], n_heads, -1))
        if plan.has_editors(layer, SiteKind.Z):
            module.input = value.reshape(merged.shape)
        plan.read(layer, SiteKind.Z, value)
    if SiteKind.PATTERN in kinds:
        plan.read(layer, SiteKind.PATTERN, block.get(layout.attention).output[1])
    if SiteKind.ATTN_OUT in kinds or parallel_mid:
        attn_out = _edit_output(block.get(layout.attn_out_module), layer, SiteKind.ATTN_OUT, plan)
        if parallel_mid:
            plan.read(layer, SiteKind.RESID_MID, resid_pre + attn_out)
    if SiteKind.RESID_MID in kinds and not parallel:  # read-only: the plan turns resid_mid edits into attn_out edits
        plan.read(layer, SiteKind.RESID_MID, block.get(layout.resid_mid_module).input)
    if SiteKind.MLP_OUT in kinds:
        _edit_output(block.get(layout.mlp_out_module), layer, SiteKind.MLP_OUT, plan)
    if SiteKind.RESID_POST in kinds:
        _edit_output(block, layer, SiteKind.RESID_POST, plan)


def _trace_final_norm(envoy: Any, norm: nn.Module, keys: list[tuple[int, SiteKind]], plan: HookPlan) -> None:
    """Apply the plan at the final norm: its normalized input first, then its output (execution order)."""
    kinds = {kind: layer for layer, kind in keys}
    if SiteKind.FINAL_NORMALIZED in kinds:
        normalized = normalized_before_gain(norm, envoy.input)
        plan.read(kinds[SiteKind.FINAL_NORMALIZED], SiteKind.FINAL_NORMALIZED, normalized)
    if SiteKind.FINAL_OUT in kinds:
        _edit_output(envoy, kinds[SiteKind.FINAL_OUT], SiteKind.FINAL_OUT, plan)


def _edit_output(module: Any, layer: int, kind: SiteKind, plan: HookPlan) -> Any:
    """Apply the plan's edits and readers of ``kind`` to ``module``'s output; return the edited value."""
    output = module.output
    first = output[0] if isinstance(output, tuple) else output
    value = plan.edit(layer, kind, first)
    if plan.has_editors(layer, kind):
        module.output = (value, *output[1:]) if isinstance(output, tuple) else value
    plan.read(layer, kind, value)
    return value
