"""Where each site lives inside a Hugging Face model: module paths per architecture family.

A site is read from a module's input or output. Families with "sandwich" norms (Gemma 2/3)
add a norm after attention and after the MLP; the site is then that norm's output, because
that is what enters the residual stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

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
        resid_mid_module: the module whose *input* is the residual stream after attention.
        mlp_out_module: the module whose output is what the MLP adds to the residual.
    """

    layers: str
    attention: str
    z_module: str
    attn_out_module: str
    resid_mid_module: str
    mlp_out_module: str


_LLAMA = ModuleLayout(
    layers="model.layers",
    attention="self_attn",
    z_module="self_attn.o_proj",
    attn_out_module="self_attn",
    resid_mid_module="post_attention_layernorm",
    mlp_out_module="mlp",
)
_SANDWICH = ModuleLayout(
    layers="model.layers",
    attention="self_attn",
    z_module="self_attn.o_proj",
    attn_out_module="post_attention_layernorm",
    resid_mid_module="pre_feedforward_layernorm",
    mlp_out_module="post_feedforward_layernorm",
)
_GPT2 = ModuleLayout(
    layers="transformer.h",
    attention="attn",
    z_module="attn.c_proj",
    attn_out_module="attn",
    resid_mid_module="ln_2",
    mlp_out_module="mlp",
)

LAYOUTS: dict[str, ModuleLayout] = {
    **dict.fromkeys(
        ("llama", "mistral", "qwen2", "qwen3", "phi3", "olmo", "olmo2", "gemma", "smollm3", "granite"),
        _LLAMA,
    ),
    **dict.fromkeys(("gemma2", "gemma3_text", "gemma3"), _SANDWICH),
    "gpt2": _GPT2,
}


def layout_for(model_type: str) -> ModuleLayout:
    """The layout of a ``config.model_type``; a clear error for families not mapped yet."""
    try:
        return LAYOUTS[model_type]
    except KeyError:
        raise UnsupportedArchitecture(
            f"model type {model_type!r} has no module layout; supported: {', '.join(sorted(LAYOUTS))}. "
            "Add a ModuleLayout in workbench/hooks/layout.py"
        ) from None


def block_modules(model: nn.Module, layout: ModuleLayout) -> list[nn.Module]:
    """The decoder blocks of ``model``, in order."""
    # ``layers`` names the model's ``nn.ModuleList`` of blocks in every layout
    return list(cast(nn.ModuleList, model.get_submodule(layout.layers)))
