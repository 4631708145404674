"""The ``hf`` backend: native PyTorch forward hooks on the Hugging Face modules.

Hooks are registered for the plan's sites only and always removed, also when the forward
raises. The same context manager serves plain forwards and ``model.generate``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from workbench.hooks.module_paths import ModuleLayout, block_modules, is_parallel, normalized_before_gain
from workbench.hooks.plan import HookPlan
from workbench.hooks.sites import FINAL_NORM_KINDS, SiteKind


@contextmanager
def native_hooks(model: PreTrainedModel, layout: ModuleLayout, n_heads: int, plan: HookPlan) -> Iterator[None]:
    """Register the plan's readers and editors on ``model`` for the duration of the block."""
    blocks = block_modules(model, layout)

    def formed_last(key: tuple[int, SiteKind]) -> bool:
        """A parallel block's resid_mid is formed from the edited attn_out: its hook runs after attn_out's."""
        layer, kind = key
        return kind is SiteKind.RESID_MID and layer < len(blocks) and is_parallel(blocks[layer], layout)

    with ExitStack() as stack:
        if plan.reads_patterns:
            stack.enter_context(eager_attention(model))
        for layer, kind in sorted(plan.keys(), key=formed_last):  # stable: the plan's order otherwise
            if kind in FINAL_NORM_KINDS:
                handles = _register_final(model.get_submodule(layout.final_norm), layer, kind, plan)
            else:
                handles = _register(blocks[layer], layout, layer, kind, n_heads, plan)
            for handle in handles:
                stack.callback(handle.remove)
        yield


@contextmanager
def eager_attention(model: PreTrainedModel) -> Iterator[None]:
    """Attention probabilities exist only under eager attention; switch for the block."""
    previous = model.config._attn_implementation
    if previous == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def _register(
    block: nn.Module, layout: ModuleLayout, layer: int, kind: SiteKind, n_heads: int, plan: HookPlan
) -> list[torch.utils.hooks.RemovableHandle]:
    def process(activation: torch.Tensor) -> torch.Tensor:
        activation = plan.edit(layer, kind, activation)
        plan.read(layer, kind, activation)
        return activation

    if kind is SiteKind.RESID_PRE:
        return [block.register_forward_pre_hook(_first_input_hook(process), with_kwargs=True)]
    if kind is SiteKind.RESID_POST:
        return [block.register_forward_hook(_first_output_hook(process))]
    if kind is SiteKind.ATTN_OUT:
        return [block.get_submodule(layout.attn_out_module).register_forward_hook(_first_output_hook(process))]
    if kind is SiteKind.MLP_OUT:
        return [block.get_submodule(layout.mlp_out_module).register_forward_hook(_first_output_hook(process))]
    if kind is SiteKind.Z:

        def process_z(merged: torch.Tensor) -> torch.Tensor:
            per_head = merged.view(*merged.shape[:-1], n_heads, -1)
            return process(per_head).reshape(merged.shape)

        module = block.get_submodule(layout.z_module)
        return [module.register_forward_pre_hook(_first_input_hook(process_z), with_kwargs=True)]
    if kind is SiteKind.PATTERN:

        def read_pattern(_module: nn.Module, _args: Any, output: Any) -> None:
            plan.read(layer, kind, output[1])

        return [block.get_submodule(layout.attention).register_forward_hook(read_pattern)]
    if kind is SiteKind.RESID_MID and is_parallel(block, layout):
        return _register_parallel_mid(block, layout, layer, plan)
    if kind is SiteKind.RESID_MID:  # read-only: the plan turns resid_mid edits into attn_out edits

        def read_mid(resid_mid: torch.Tensor) -> torch.Tensor:
            plan.read(layer, kind, resid_mid)
            return resid_mid

        norm = block.get_submodule(layout.resid_mid_module)
        return [norm.register_forward_pre_hook(_first_input_hook(read_mid), with_kwargs=True)]
    raise AssertionError(f"unhandled site kind {kind}")


def _register_parallel_mid(
    block: nn.Module, layout: ModuleLayout, layer: int, plan: HookPlan
) -> list[torch.utils.hooks.RemovableHandle]:
    """Read-only ``resid_mid = resid_pre + attn_out`` of a parallel block, both as edited by the plan.

    Registered after the block's other hooks, so the block input seen here is after any resid_pre
    edit and the attention output after any attn_out edit (hooks run in registration order).
    """
    kept: dict[str, torch.Tensor] = {}

    def keep_pre(resid_pre: torch.Tensor) -> torch.Tensor:
        kept["resid_pre"] = resid_pre
        return resid_pre

    def read_mid(attn_out: torch.Tensor) -> torch.Tensor:
        plan.read(layer, SiteKind.RESID_MID, kept.pop("resid_pre") + attn_out)
        return attn_out

    return [
        block.register_forward_pre_hook(_first_input_hook(keep_pre), with_kwargs=True),
        block.get_submodule(layout.attn_out_module).register_forward_hook(_first_output_hook(read_mid)),
    ]


def _register_final(
    norm: nn.Module, layer: int, kind: SiteKind, plan: HookPlan
) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks of a final-norm site: its output (editable) or its normalized input (read-only)."""
    if kind is SiteKind.FINAL_OUT:

        def process(activation: torch.Tensor) -> torch.Tensor:
            activation = plan.edit(layer, kind, activation)
            plan.read(layer, kind, activation)
            return activation

        return [norm.register_forward_hook(_first_output_hook(process))]

    def read_normalized(hidden: torch.Tensor) -> torch.Tensor:
        plan.read(layer, kind, normalized_before_gain(norm, hidden))
        return hidden

    return [norm.register_forward_pre_hook(_first_input_hook(read_normalized), with_kwargs=True)]


def _first_input_hook(process: Any) -> Any:
    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args:
            return (process(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": process(kwargs["hidden_states"])}

    return hook


def _first_output_hook(process: Any) -> Any:
    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (process(output[0]), *output[1:])
        return process(output)

    return hook
