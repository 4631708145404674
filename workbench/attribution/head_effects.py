"""Per-head effects on the contrast-pair bias measure, through the hook layer's ``attn.hook_z``
site (each head's slice of the output projection's input, [batch, seq, n_heads, d_head]).

For head (l, h), with m(·) the per-pair logit difference at the last token (contrast.py):
- activation patching (Vig et al. 2020 indirect effect, absolute form):
  m(clean with z_{l,h} := z_{l,h}(source)) - m(clean), averaged over pairs; the source is the
  counterfactual run for the indirect effect;
- attribution patching (first-order estimate of the above, one forward + one backward):
  Σ_{t,d} ∂m/∂z_{l,h}[t,d] (clean) · (z_source - z_clean)[t,d], averaged over pairs;
- mean ablation: m(clean with z_{l,h} := its mean over pairs and real tokens) - m(clean);
- attention mediation (Vig et al.'s causal mediation through attention, attention_mediation.py):
  the relative change of p(anti)/p(stereo) when the head's attention weights on the clean prompt
  are those of the counterfactual prompt (unitless);
- direct logit attribution (direct_logit.py): the part of m the head writes directly through the
  final norm (scale frozen) and the unembedding, on the clean prompt.
The total effect is m(counterfactual) - m(clean). Effects are in logits except attention mediation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from workbench.attribution.attention_mediation import attention_mediation_effects
from workbench.attribution.contrast import ContrastBatch, logit_difference
from workbench.attribution.direct_logit import direct_logit_attribution_effects
from workbench.hooks.capture import run_forward
from workbench.hooks.interventions import Intervention
from workbench.hooks.module_paths import layout_for
from workbench.hooks.native import native_hooks
from workbench.hooks.plan import HookPlan
from workbench.hooks.positions import TokenBatch
from workbench.hooks.sites import SiteKind
from workbench.models.loading import LoadedModel

METHODS = (
    "activation_patching",
    "attribution_patching",
    "mean_ablation",
    "attention_mediation",
    "direct_logit_attribution",
)
DEFAULT_METHODS = ("activation_patching", "attribution_patching", "mean_ablation", "direct_logit_attribution")
"""What ``[attribution] methods`` runs when it is not set (attention mediation, one forward per head, on request)."""


def z_site(layer: int) -> str:
    return f"blocks.{layer}.{SiteKind.Z.value}"


def bias_measure(
    model: LoadedModel,
    batch: TokenBatch,
    contrast: ContrastBatch,
    interventions: Sequence[Intervention] = (),
    backend: str = "hf",
) -> torch.Tensor:
    """Per-pair logit difference of ``batch`` under ``interventions``: shape (n_pairs,)."""
    plan = HookPlan.for_interventions(interventions, model.architecture.n_layers, model.architecture.n_heads)
    logits = run_forward(model, batch.to(model.device), plan, backend)
    return logit_difference(logits.float(), contrast.target_ids, contrast.foil_ids).cpu()


def head_outputs(model: LoadedModel, batch: TokenBatch, backend: str = "hf") -> torch.Tensor:
    """hook_z of every layer: [n_layers, batch, seq, n_heads, d_head] (float32, CPU)."""
    n_layers = model.architecture.n_layers
    plan = HookPlan()
    store: dict[int, torch.Tensor] = {}
    for layer in range(n_layers):

        def keep(z: torch.Tensor, layer: int = layer) -> None:
            store[layer] = z.detach().float().cpu()

        plan.add_reader(layer, SiteKind.Z, keep)
    run_forward(model, batch.to(model.device), plan, backend)
    return torch.stack([store[layer] for layer in range(n_layers)])


def total_effect(model: LoadedModel, contrast: ContrastBatch, backend: str = "hf") -> torch.Tensor:
    """m(counterfactual) - m(clean) per pair: shape (n_pairs,)."""
    return bias_measure(model, contrast.counterfactual, contrast, backend=backend) - bias_measure(
        model, contrast.clean, contrast, backend=backend
    )


def activation_patching_effects(
    model: LoadedModel, contrast: ContrastBatch, source_z: torch.Tensor, backend: str = "hf"
) -> torch.Tensor:
    """Mean effect of patching each head's z from ``source_z`` ([L, B, T, H, d_head]) into
    the clean run: [n_layers, n_heads]. One forward per head."""
    arch = model.architecture
    clean = bias_measure(model, contrast.clean, contrast, backend=backend)
    effects = torch.zeros(arch.n_layers, arch.n_heads)
    for layer in range(arch.n_layers):
        for head in range(arch.n_heads):
            patch = Intervention(z_site(layer), "patch", value=source_z[layer], heads=(head,))
            effects[layer, head] = (bias_measure(model, contrast.clean, contrast, [patch], backend) - clean).mean()
    return effects


def attribution_patching_effects(model: LoadedModel, contrast: ContrastBatch, source_z: torch.Tensor) -> torch.Tensor:
    """First-order estimate of :func:`activation_patching_effects`: [n_layers, n_heads].

    One forward and one backward of the clean batch through native hooks (gradients need the
    ``hf`` mechanism; the hook layer's ``run_forward`` runs under inference mode).
    """
    arch = model.architecture
    batch = contrast.clean.to(model.device)
    store: dict[int, torch.Tensor] = {}
    plan = HookPlan()

    def keep(layer: int) -> Callable[[torch.Tensor], None]:
        def read(z: torch.Tensor) -> None:
            store[layer] = z

        return read

    for layer in range(arch.n_layers):
        plan.add_reader(layer, SiteKind.Z, keep(layer))
    with (
        torch.enable_grad(),
        native_hooks(model.model, layout_for(arch.model_type, arch.vision_type), arch.n_heads, plan),
    ):
        logits = model.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        ).logits
        measure = logit_difference(logits.float(), contrast.target_ids, contrast.foil_ids)
        zs = [store[layer] for layer in range(arch.n_layers)]
        grads = torch.autograd.grad(measure.sum(), zs)
    effects = torch.zeros(arch.n_layers, arch.n_heads)
    for layer, (z, grad) in enumerate(zip(zs, grads)):
        delta = source_z[layer].to(z.device) - z.detach().float()
        effects[layer] = (grad.float() * delta).sum(dim=(1, 3)).mean(dim=0).cpu()
    return effects


def mean_ablation_effects(model: LoadedModel, contrast: ContrastBatch, backend: str = "hf") -> torch.Tensor:
    """Mean effect of replacing each head's z by its mean over pairs and real tokens: [L, H]."""
    arch = model.architecture
    clean_z = head_outputs(model, contrast.clean, backend)
    mask = contrast.clean.attention_mask.float().view(1, *contrast.clean.attention_mask.shape, 1, 1)
    means = (clean_z * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2))  # [L, H, d_head]
    clean = bias_measure(model, contrast.clean, contrast, backend=backend)
    effects = torch.zeros(arch.n_layers, arch.n_heads)
    for layer in range(arch.n_layers):
        for head in range(arch.n_heads):
            ablate = Intervention(z_site(layer), "mean", value=means[layer, head : head + 1], heads=(head,))
            effects[layer, head] = (bias_measure(model, contrast.clean, contrast, [ablate], backend) - clean).mean()
    return effects


def head_effects(
    model: LoadedModel, contrast: ContrastBatch, methods: Sequence[str] = DEFAULT_METHODS, backend: str = "hf"
) -> dict[str, torch.Tensor]:
    """The requested methods' [n_layers, n_heads] tables, counterfactual run as the source.

    ``backend`` serves activation patching and mean ablation; attribution patching, attention
    mediation and direct logit attribution run on the Hugging Face modules themselves."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown attribution method(s) {unknown}; use {METHODS}")
    tables: dict[str, torch.Tensor] = {}
    if {"activation_patching", "attribution_patching"} & set(methods):
        source_z = head_outputs(model, contrast.counterfactual, backend)
        if "activation_patching" in methods:
            tables["activation_patching"] = activation_patching_effects(model, contrast, source_z, backend)
        if "attribution_patching" in methods:
            tables["attribution_patching"] = attribution_patching_effects(model, contrast, source_z)
    if "mean_ablation" in methods:
        tables["mean_ablation"] = mean_ablation_effects(model, contrast, backend)
    if "attention_mediation" in methods:
        tables["attention_mediation"] = attention_mediation_effects(model, contrast)
    if "direct_logit_attribution" in methods:
        tables["direct_logit_attribution"] = direct_logit_attribution_effects(model, contrast)
    return tables
