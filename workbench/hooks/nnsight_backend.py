"""The ``nnsight`` backend: an nnsight trace over the loaded Hugging Face model.

nnsight executes the trace body alongside the real forward, so editors are assignments to
module inputs/outputs and site values are real tensors. Modules are visited in execution order,
as nnsight requires, and found by nnsight's own lookup (``Envoy.get`` of the layout's dotted
paths).

Two ways to run: :func:`nnsight_forward` traces one batch and calls the plan's readers inside
the trace (in-process); :func:`nnsight_session_forwards` runs many batches as the traces of one
nnsight session, keeps each read site's value as a saved value, and calls the readers only after
the session has closed. The second is what NDIF needs: a remote session is one job, and only
saved values come back from it (:mod:`workbench.hooks.nnsight_remote`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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

SiteRead = Callable[[int, SiteKind, Any], None]
"""What the trace body does with a site's (edited) value: ``read(layer, kind, value)``."""

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
    with (
        eager_attention(model) if plan.reads_patterns else nullcontext(),
        wrapper.trace(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids),
    ):
        _trace_plan(wrapper, model, layout, n_heads, plan, plan.read)
        logits: torch.Tensor = wrapper.output.logits.save()
    return logits


def nnsight_session_forwards(
    wrapper: Any,
    model: PreTrainedModel,
    layout: ModuleLayout,
    n_heads: int,
    work: Sequence[tuple[TokenBatch, HookPlan]],
    remote: bool | str,
) -> list[torch.Tensor]:
    """Trace every ``(batch, plan)`` of ``work`` in one nnsight session; return each batch's logits.

    Editors run inside the traces; each site a plan reads is kept as a saved value and handed to
    the plan's readers once the session has closed, so nothing but saved values leaves the session
    (the condition for NDIF, where the session runs as one remote job).

    Args:
        wrapper: a remotable nnsight model around ``model`` (:func:`workbench.hooks.nnsight_remote.remotable_model`).
        work: the batches, each with its plan.
        remote: passed to ``session(remote=...)``: ``True`` sends the session to NDIF, ``"local"``
            serializes and deserializes it in this process as NDIF would (nnsight's local simulation).
    """
    patterns = any(plan.reads_patterns for _, plan in work)
    with eager_attention(model) if patterns else nullcontext():
        found = _session(wrapper, model, layout, n_heads, work, remote)
    logits = []
    for (_, plan), values in zip(work, found):
        for (layer, kind), value in values.items():
            if (layer, kind) != _LOGITS:
                plan.read(layer, kind, value)
        logits.append(values[_LOGITS])
    return logits


def _session(
    wrapper: Any,
    model: PreTrainedModel,
    layout: ModuleLayout,
    n_heads: int,
    work: Sequence[tuple[TokenBatch, HookPlan]],
    remote: bool | str,
) -> list[dict[tuple[int, SiteKind], Any]]:
    """The session itself: per batch, the values of the sites its plan reads, and the logits under ``_LOGITS``.

    nnsight captures and re-executes the source of each ``with`` block, so this function holds
    nothing but the session (one context manager per ``with``).
    """
    with wrapper.session(remote=remote):
        found = save_in_session([])
        for batch, plan in work:
            ids, mask, positions = batch.input_ids, batch.attention_mask, batch.position_ids
            with wrapper.trace(input_ids=ids, attention_mask=mask, position_ids=positions):
                values: dict[tuple[int, SiteKind], Any] = {}
                _trace_plan(wrapper, model, layout, n_heads, plan, _keep_in(values, plan))
                values[_LOGITS] = wrapper.output.logits
                found.append(values)
    return found


_LOGITS = (-1, SiteKind.RESID_POST)
"""The key under which a session trace keeps its logits beside the site values (no site has layer -1)."""


def save_in_session(value: list[Any]) -> list[Any]:
    """``nnsight.save(value)``: mark ``value`` to be returned when the enclosing session closes."""
    import nnsight

    saved: list[Any] = nnsight.save(value)
    return saved


def _keep_in(values: dict[tuple[int, SiteKind], Any], plan: HookPlan) -> SiteRead:
    """A site read that keeps the value of a site ``plan`` reads (its readers run after the session)."""

    def keep(layer: int, kind: SiteKind, value: Any) -> None:
        if plan.readers.get((layer, kind)):
            values[(layer, kind)] = value

    return keep


def _trace_plan(
    wrapper: Any, model: PreTrainedModel, layout: ModuleLayout, n_heads: int, plan: HookPlan, read: SiteRead
) -> None:
    """Inside a trace: apply ``plan``'s editors at every site it names and ``read`` each site's value."""
    keys = plan.keys()
    blocks = wrapper.get(layout.layers)
    modules = block_modules(model, layout)
    for layer in sorted({layer for layer, kind in keys if kind not in FINAL_NORM_KINDS}):
        kinds = [kind for key_layer, kind in keys if key_layer == layer]
        _trace_block(blocks[layer], layout, is_parallel(modules[layer], layout), n_heads, layer, kinds, plan, read)
    final = [(layer, kind) for layer, kind in keys if kind in FINAL_NORM_KINDS]
    if final:
        _trace_final_norm(wrapper.get(layout.final_norm), model.get_submodule(layout.final_norm), final, plan, read)


def _trace_block(
    block: Any,
    layout: ModuleLayout,
    parallel: bool,
    n_heads: int,
    layer: int,
    kinds: list[SiteKind],
    plan: HookPlan,
    read: SiteRead,
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
            read(layer, SiteKind.RESID_PRE, resid_pre)
    if SiteKind.Z in kinds:
        module = block.get(layout.z_module)
        merged = module.input
        value = plan.edit(layer, SiteKind.Z, merged.view(*merged.shape[:-1], n_heads, -1))
        if plan.has_editors(layer, SiteKind.Z):
            module.input = value.reshape(merged.shape)
        read(layer, SiteKind.Z, value)
    if SiteKind.PATTERN in kinds:
        read(layer, SiteKind.PATTERN, block.get(layout.attention).output[1])
    if SiteKind.ATTN_OUT in kinds or parallel_mid:
        attn_out = _edit_output(block.get(layout.attn_out_module), layer, SiteKind.ATTN_OUT, plan, read)
        if parallel_mid:
            read(layer, SiteKind.RESID_MID, resid_pre + attn_out)
    if SiteKind.RESID_MID in kinds and not parallel:  # read-only: the plan turns resid_mid edits into attn_out edits
        read(layer, SiteKind.RESID_MID, block.get(layout.resid_mid_module).input)
    if SiteKind.MLP_OUT in kinds:
        _edit_output(block.get(layout.mlp_out_module), layer, SiteKind.MLP_OUT, plan, read)
    if SiteKind.RESID_POST in kinds:
        _edit_output(block, layer, SiteKind.RESID_POST, plan, read)


def _trace_final_norm(
    envoy: Any, norm: nn.Module, keys: list[tuple[int, SiteKind]], plan: HookPlan, read: SiteRead
) -> None:
    """Apply the plan at the final norm: its normalized input first, then its output (execution order)."""
    kinds = {kind: layer for layer, kind in keys}
    if SiteKind.FINAL_NORMALIZED in kinds:
        normalized = normalized_before_gain(norm, envoy.input)
        read(kinds[SiteKind.FINAL_NORMALIZED], SiteKind.FINAL_NORMALIZED, normalized)
    if SiteKind.FINAL_OUT in kinds:
        _edit_output(envoy, kinds[SiteKind.FINAL_OUT], SiteKind.FINAL_OUT, plan, read)


def _edit_output(module: Any, layer: int, kind: SiteKind, plan: HookPlan, read: SiteRead) -> Any:
    """Apply the plan's edits of ``kind`` to ``module``'s output and ``read`` it; return the edited value."""
    output = module.output
    first = output[0] if isinstance(output, tuple) else output
    value = plan.edit(layer, kind, first)
    if plan.has_editors(layer, kind):
        module.output = (value, *output[1:]) if isinstance(output, tuple) else value
    read(layer, kind, value)
    return value
