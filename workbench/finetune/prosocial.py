"""ProSocialTuning's head regulariser (Liu et al., Findings ACL 2024; docs/protocols.md §7).

The paper's formula is not public. This module implements

    E_tuning = λ Σ_{h ∈ selected} ω_h Σ_{M ∈ {q, k, v, o}} ‖M_h - M_h^debiased‖²_F

where, for head h of layer l (head_dim d_h):
- q: rows [h d_h, (h+1) d_h) of q_proj.weight (and of q_proj.bias when the model has one);
- k, v: rows [g d_h, (g+1) d_h) of k_proj / v_proj (weight and bias) with g = h // (H / H_kv)
  the head's KV group (GQA: heads of one group share these rows, so two selected heads of one
  group each pull on them with their own weight);
- o: columns [h d_h, (h+1) d_h) of o_proj.weight (o_proj.bias is shared by all heads: excluded);
- ω_h: the head's weight (how much its bias effect fell from base to debiased checkpoint);
- λ: ``coefficient``, default 0.01 (the value in the MABEL driver's checkpoint names).
Parameters are found by their name suffix ``layers.{l}.self_attn.{q,k,v,o}_proj.{weight,bias}``,
so the model may wrap the causal LM (e.g. a classifier whose backbone is the debiased LM).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from workbench.models.architecture import ModelArchitecture

PROJECTIONS = ("q", "k", "v", "o")


class HeadParameterError(ValueError):
    """A selected head's projection parameters cannot be found or do not fit the geometry."""


@dataclass(frozen=True)
class SelectedHead:
    """A successfully debiased head and its regularisation weight ω (≥ 0)."""

    layer: int
    head: int
    weight: float


@dataclass(frozen=True)
class AttentionGeometry:
    """Heads per layer (H), KV heads (H_kv) and head dimension (d_h)."""

    n_heads: int
    n_kv_heads: int
    head_dim: int

    @classmethod
    def from_config(cls, config: Any) -> AttentionGeometry:
        """From an HF config, read as the hook layer reads it (:class:`ModelArchitecture`)."""
        architecture = ModelArchitecture.from_config(config)
        return cls(architecture.n_heads, architecture.n_kv_heads, architecture.d_head)

    def kv_group(self, head: int) -> int:
        """The KV head that query head ``head`` reads."""
        return head // (self.n_heads // self.n_kv_heads)


def _find_by_suffix(named: Mapping[str, torch.Tensor], suffix: str) -> str | None:
    matches = [name for name in named if name == suffix or name.endswith("." + suffix)]
    if len(matches) > 1:
        raise HeadParameterError(f"several parameters end with {suffix!r}: {matches}")
    return matches[0] if matches else None


def head_slices(
    named: Mapping[str, torch.Tensor], geometry: AttentionGeometry, layer: int, head: int
) -> list[tuple[str, tuple[slice, slice] | tuple[slice]]]:
    """(parameter name, index) pairs selecting head ``head`` of ``layer`` in ``named``."""
    if not 0 <= head < geometry.n_heads:
        raise HeadParameterError(f"head {head} is outside 0..{geometry.n_heads - 1}")
    rows_q = slice(head * geometry.head_dim, (head + 1) * geometry.head_dim)
    group = geometry.kv_group(head)
    rows_kv = slice(group * geometry.head_dim, (group + 1) * geometry.head_dim)
    found: list[tuple[str, tuple[slice, slice] | tuple[slice]]] = []
    for projection in PROJECTIONS:
        for kind in ("weight", "bias"):
            if projection == "o" and kind == "bias":
                continue
            name = _find_by_suffix(named, f"layers.{layer}.self_attn.{projection}_proj.{kind}")
            if name is None:
                if kind == "weight":
                    raise HeadParameterError(
                        f"no parameter ending in layers.{layer}.self_attn.{projection}_proj.weight; "
                        "ProSocialTuning supports Llama/Qwen/Gemma-style attention modules"
                    )
                continue
            if projection == "o":
                found.append((name, (slice(None), rows_q)))
            else:
                found.append((name, (rows_q if projection == "q" else rows_kv,)))
    return found


class ProSocialPenalty:
    """E_tuning over the selected heads; call it to get a 0-d tensor differentiable in the model."""

    def __init__(
        self,
        model: nn.Module,
        debiased_state: Mapping[str, torch.Tensor],
        heads: Sequence[SelectedHead],
        geometry: AttentionGeometry,
        coefficient: float = 0.01,
    ) -> None:
        parameters = dict(model.named_parameters())
        self.coefficient = coefficient
        self.terms: list[tuple[nn.Parameter, tuple[slice, ...], torch.Tensor, float]] = []
        for head in heads:
            if head.weight < 0:
                raise HeadParameterError(f"head L{head.layer}H{head.head} has negative weight {head.weight}")
            for name, index in head_slices(parameters, geometry, head.layer, head.head):
                suffix = re.sub(r"^.*?(layers\.\d+\.self_attn\.)", r"\1", name)
                debiased_name = _find_by_suffix(debiased_state, suffix)
                if debiased_name is None:
                    raise HeadParameterError(f"debiased checkpoint has no parameter ending in {suffix!r}")
                reference = debiased_state[debiased_name]
                if reference.shape != parameters[name].shape:
                    raise HeadParameterError(
                        f"{name} has shape {tuple(parameters[name].shape)} but the debiased "
                        f"{debiased_name} has {tuple(reference.shape)}: different architectures"
                    )
                target = reference[index].detach().clone().to(parameters[name].device, parameters[name].dtype)
                self.terms.append((parameters[name], index, target, head.weight))

    def __call__(self) -> torch.Tensor:
        """λ Σ ω_h ‖slice - debiased slice‖² (same dtype as the parameters)."""
        if not self.terms:
            raise HeadParameterError("no heads selected: the ProSocialTuning penalty is empty")
        squared = (weight * (param[index] - target).square().sum() for param, index, target, weight in self.terms)
        total = cast(torch.Tensor, sum(squared))  # a tensor: the terms are not empty, so never sum's start 0
        return self.coefficient * total


def read_selected_heads(path: Path) -> list[SelectedHead]:
    """Heads from ``attribution/selected_heads.csv``; the weight ω is the row's ``drop``."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("layer", "head", "drop") if c not in (reader.fieldnames or [])]
        if missing:
            raise HeadParameterError(
                f"{path}: missing column(s) {missing}; expected selected_heads.csv of `workbench attribute`"
            )
        heads = [SelectedHead(int(row["layer"]), int(row["head"]), float(row["drop"])) for row in reader]
    if not heads:
        raise HeadParameterError(
            f"{path}: no heads selected; relax attribute.top_k / min_drop or check the debiased checkpoint"
        )
    return heads
