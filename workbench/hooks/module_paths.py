"""Where each site lives inside a Hugging Face model: module paths per architecture family.

A site is read from a module's input or output. Families with "sandwich" norms (Gemma 2/3)
add a norm after attention and after the MLP, and OLMo 2 has only those (no norm before
attention or the MLP); the site is then that norm's output, because that is what enters the
residual stream. In a parallel block (GPT-NeoX with ``use_parallel_residual``, the Pythia models)
attention and MLP both read ``resid_pre`` and no module ever sees ``resid_pre + attn_out``: the
backends then form ``hook_resid_mid`` as that sum (read-only; TransformerLens has no such hook on
parallel blocks, see :func:`is_parallel`).

A vision-language model (LLaVA, Idefics3, SmolVLM) holds its language model one level down; its
layout is the language model's own with the block and final-norm paths moved under it
(:data:`VISION_LANGUAGE_PATHS`), plus the projector whose output is ``vision.hook_out``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast

import torch
from torch import nn


class UnsupportedArchitecture(ValueError):
    """A model whose module layout the hook layer does not know."""


@dataclass(frozen=True)
class ModuleLayout:
    """Module paths, relative to the model root (``layers``) or to one block (the rest).

    Attributes:
        layers: the ``nn.ModuleList`` of blocks.
        attention: the attention module (its output's first element is the attention output).
        z_module: the module whose *input* is the concatenation of per-head outputs (W_O).
        attn_out_module: the module whose output is what attention adds to the residual.
        resid_mid_module: the module whose *input* is the residual stream after attention
            (in a sequential block; a parallel block has none, see ``parallel_flag``).
        mlp_out_module: the module whose output is what the MLP adds to the residual.
        final_norm: the norm after the last block, relative to the model root (its output is
            Hugging Face's ``hidden_states[-1]``).
        parallel_flag: the block attribute that is true when the block runs attention and MLP in
            parallel on ``resid_pre`` (GPT-NeoX's ``use_parallel_residual``, read from each block
            as its own forward does); ``None`` for families whose blocks are always sequential.
        vision_out: a vision-language model's projector (its output: the projected image tokens,
            relative to the model root); ``None`` for a text-only model.
    """

    layers: str
    attention: str
    z_module: str
    attn_out_module: str
    resid_mid_module: str
    mlp_out_module: str
    final_norm: str
    parallel_flag: str | None = None
    vision_out: str | None = None


_LLAMA = ModuleLayout(
    layers="model.layers",
    attention="self_attn",
    z_module="self_attn.o_proj",
    attn_out_module="self_attn",
    resid_mid_module="post_attention_layernorm",
    mlp_out_module="mlp",
    final_norm="model.norm",
)
_SANDWICH = ModuleLayout(
    layers="model.layers",
    attention="self_attn",
    z_module="self_attn.o_proj",
    attn_out_module="post_attention_layernorm",
    resid_mid_module="pre_feedforward_layernorm",
    mlp_out_module="post_feedforward_layernorm",
    final_norm="model.norm",
)
_GPT2 = ModuleLayout(
    layers="transformer.h",
    attention="attn",
    z_module="attn.c_proj",
    attn_out_module="attn",
    resid_mid_module="ln_2",
    mlp_out_module="mlp",
    final_norm="transformer.ln_f",
)

_OLMO2 = ModuleLayout(
    layers="model.layers",
    attention="self_attn",
    z_module="self_attn.o_proj",
    attn_out_module="post_attention_layernorm",
    resid_mid_module="mlp",
    mlp_out_module="post_feedforward_layernorm",
    final_norm="model.norm",
)
_GPT_NEOX = ModuleLayout(
    layers="gpt_neox.layers",
    attention="attention",
    z_module="attention.dense",
    attn_out_module="attention",
    resid_mid_module="post_attention_layernorm",
    mlp_out_module="mlp",
    final_norm="gpt_neox.final_layer_norm",
    parallel_flag="use_parallel_residual",
)

LAYOUTS: dict[str, ModuleLayout] = {
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "phi3", "olmo", "gemma", "smollm3"), _LLAMA),
    **dict.fromkeys(("gemma2", "gemma3_text", "gemma3"), _SANDWICH),
    "olmo2": _OLMO2,
    "gpt2": _GPT2,
    "gpt_neox": _GPT_NEOX,
}


VISION_LANGUAGE_PATHS: dict[str, tuple[str, str]] = {
    # vision-language model_type -> (its language model's base model, the projector), from the model root
    "llava": ("model.language_model", "model.multi_modal_projector"),
    "idefics3": ("model.text_model", "model.connector"),
    "smolvlm": ("model.text_model", "model.connector"),
}


def layout_for(model_type: str, vision_type: str | None = None) -> ModuleLayout:
    """The layout of a ``config.model_type``; one line naming the type and the known ones otherwise.

    ``vision_type``: the top-level ``model_type`` of a vision-language model whose language model
    is of ``model_type`` (``ModelArchitecture.vision_type``).

    Raises:
        UnsupportedArchitecture: a model type without a layout.
    """
    try:
        text = LAYOUTS[model_type]
    except KeyError:
        raise UnsupportedArchitecture(
            f"model type {model_type!r} has no module layout; supported: {', '.join(sorted(LAYOUTS))}. "
            "Add a ModuleLayout in workbench/hooks/module_paths.py"
        ) from None
    if vision_type is None:
        return text
    if vision_type not in VISION_LANGUAGE_PATHS:
        raise UnsupportedArchitecture(
            f"vision-language model type {vision_type!r} has no module layout; supported: "
            f"{', '.join(sorted(VISION_LANGUAGE_PATHS))}. Add it to VISION_LANGUAGE_PATHS in "
            "workbench/hooks/module_paths.py"
        )
    language_model, projector = VISION_LANGUAGE_PATHS[vision_type]

    def under_language_model(path: str) -> str:  # "model.layers" -> "model.language_model.layers"
        return f"{language_model}.{path.partition('.')[2]}"

    return replace(
        text,
        layers=under_language_model(text.layers),
        final_norm=under_language_model(text.final_norm),
        vision_out=projector,
    )


def is_parallel(block: nn.Module, layout: ModuleLayout) -> bool:
    """Whether ``block`` runs attention and MLP in parallel on ``resid_pre`` (its own flag, see ``parallel_flag``)."""
    return layout.parallel_flag is not None and bool(getattr(block, layout.parallel_flag))


def block_modules(model: nn.Module, layout: ModuleLayout) -> list[nn.Module]:
    """The decoder blocks of ``model``, in order."""
    # ``layers`` names the model's ``nn.ModuleList`` of blocks in every layout
    return list(cast(nn.ModuleList, model.get_submodule(layout.layers)))


def normalized_before_gain(norm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """What ``norm`` computes from ``hidden`` before its gain and bias (TransformerLens' ``hook_normalized``).

    ``(x - mean) / sqrt(var + eps)`` for a LayerNorm, ``x / sqrt(mean(x^2) + eps)`` for an RMSNorm,
    over the last axis, in float32 (as both Hugging Face and TransformerLens normalize).

    Args:
        norm: a LayerNorm or an RMSNorm module (its ``eps`` or ``variance_epsilon`` is used).
        hidden: ``[..., d_model]`` the norm's input.

    Raises:
        UnsupportedArchitecture: a norm of another kind, or one without a readable epsilon.
    """
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    is_layer_norm = isinstance(norm, nn.LayerNorm)
    if not isinstance(eps, float) or not (is_layer_norm or "RMSNorm" in type(norm).__name__):
        raise UnsupportedArchitecture(
            f"final norm {type(norm).__name__} is neither a LayerNorm nor an RMSNorm with an epsilon; "
            "ln_final.hook_normalized is not available for it (ln_final.hook_out is)"
        )
    values = hidden.float()
    if is_layer_norm:
        values = values - values.mean(dim=-1, keepdim=True)
    return values * torch.rsqrt(values.pow(2).mean(dim=-1, keepdim=True) + eps)
