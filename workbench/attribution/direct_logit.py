"""Per-head direct logit attribution (DLA) of the contrast-pair bias measure: how much of
m = logit(target) - logit(foil) at the last token each head writes directly, through the final
norm and the unembedding, with the final norm's scale frozen at its value on the clean run (as
TransformerLens' ``ActivationCache.apply_ln_to_stack`` does).

For head (l, h), with z its per-head output at the last token ([d_head]), W_O[h] its rows of the
output projection ([d_head, d_model], input-major), r the residual entering the final norm and
u = W_U[target] - W_U[foil] ([d_model]):

    RMSNorm:    DLA(l, h) = Σ_d  g_d · (z W_O[h])_d / rms(r) · u_d,          rms(r) = sqrt(mean r² + eps)
    LayerNorm:  DLA(l, h) = Σ_d  g_d · ((z W_O[h])_d - mean(z W_O[h])) / σ(r) · u_d,   σ(r) = sqrt(var r + eps)

g is the norm's gain (read as norm(1) · sqrt(1 + eps) for RMS norms, so Gemma's (1 + w) is
covered), divided by ``config.logits_scaling`` where a model has one (Granite). The output
projection's bias is shared by all heads and not attributed. Averaged over pairs; in logits.
Families with a norm after attention (Gemma 2/3) are refused: a head's write there is not linear.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from workbench.attribution.contrast import ContrastBatch
from workbench.hooks.module_paths import UnsupportedArchitecture, block_modules, layout_for
from workbench.hooks.native import native_hooks
from workbench.hooks.plan import HookPlan
from workbench.hooks.sites import SiteKind
from workbench.models.loading import LoadedModel


def final_norm(model: LoadedModel) -> nn.Module:
    """The norm applied to the residual stream before the unembedding (the layout's ``final_norm``)."""
    return model.model.get_submodule(
        layout_for(model.architecture.model_type, model.architecture.vision_type).final_norm
    )


def _output_weight(module: nn.Module) -> torch.Tensor:
    """The output projection's weight as [in = n_heads * d_head, out = d_model] (Linear is [out, in];
    GPT-2's Conv1D is already [in, out])."""
    weight: torch.Tensor = module.weight  # type: ignore[assignment]  # a Parameter
    return weight.T if isinstance(module, nn.Linear) else weight


def _frozen_norm(norm: nn.Module, residual: torch.Tensor) -> tuple[str, torch.Tensor, torch.Tensor]:
    """(kind, gain [d_model], scale [batch, 1]) of ``norm`` at ``residual`` [batch, d_model]."""
    residual = residual.double()
    if isinstance(norm, nn.LayerNorm):
        scale = torch.sqrt(residual.var(dim=-1, unbiased=False, keepdim=True) + norm.eps)
        gain = norm.weight.double() if norm.weight is not None else torch.ones_like(residual[0])
        return "layer", gain, scale
    eps: Any = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", None)
    if "RMSNorm" not in type(norm).__name__ or not isinstance(eps, float):
        raise UnsupportedArchitecture(
            f"direct logit attribution knows LayerNorm and RMSNorm final norms; {type(norm).__name__} is neither"
        )
    scale = torch.sqrt(residual.square().mean(dim=-1, keepdim=True) + eps)
    ones = torch.ones(residual.shape[-1], dtype=next(norm.parameters()).dtype, device=next(norm.parameters()).device)
    gain = norm(ones).double() * (1 + eps) ** 0.5
    return "rms", gain, scale


@torch.inference_mode()
def direct_logit_attribution_effects(model: LoadedModel, contrast: ContrastBatch) -> torch.Tensor:
    """Per-head DLA of m on the clean prompts: [n_layers, n_heads] (logits, mean over pairs). One forward.

    Raises:
        UnsupportedArchitecture: a family with a norm after attention, or an unknown final norm.
    """
    arch = model.architecture
    layout = layout_for(arch.model_type, arch.vision_type)
    if layout.attn_out_module != layout.attention:
        raise UnsupportedArchitecture(
            f"direct logit attribution needs each head's output to enter the residual stream linearly; "
            f"{arch.model_type} normalises the attention output first ({layout.attn_out_module})"
        )
    batch = contrast.clean.to(model.device)
    zs: dict[int, torch.Tensor] = {}
    plan = HookPlan()

    def keep_last(layer: int) -> Callable[[torch.Tensor], None]:
        def read(z: torch.Tensor) -> None:
            zs[layer] = z[:, -1].double()

        return read

    for layer in range(arch.n_layers):
        plan.add_reader(layer, SiteKind.Z, keep_last(layer))
    norm = final_norm(model)
    captured: dict[str, torch.Tensor] = {}

    def keep_residual(_module: nn.Module, args: tuple[Any, ...]) -> None:
        captured["residual"] = args[0][:, -1]

    handle = norm.register_forward_pre_hook(keep_residual)
    try:
        with native_hooks(model.model, layout, arch.n_heads, plan):
            model.model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
                use_cache=False,
            )
    finally:
        handle.remove()
    kind, gain, scale = _frozen_norm(norm, captured["residual"])
    unembed = model.model.get_output_embeddings().weight.double()
    direction = unembed[contrast.target_ids.to(unembed.device)] - unembed[contrast.foil_ids.to(unembed.device)]
    direction = direction * gain / getattr(model.model.config, "logits_scaling", 1.0)  # [pairs, d_model]
    blocks = block_modules(model.model, layout)
    effects = torch.zeros(arch.n_layers, arch.n_heads)
    for layer, block in enumerate(blocks):
        w_out = _output_weight(block.get_submodule(layout.z_module)).double()
        w_out = w_out.reshape(arch.n_heads, arch.d_head, -1)  # [heads, d_head, d_model]
        writes = torch.einsum("phk,hkd->phd", zs[layer], w_out)  # [pairs, heads, d_model]
        if kind == "layer":
            writes = writes - writes.mean(dim=-1, keepdim=True)
        per_pair = torch.einsum("phd,pd->ph", writes, direction) / scale
        effects[layer] = per_pair.mean(dim=0).float().cpu()
    return effects
