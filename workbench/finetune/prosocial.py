"""ProSocialTuning's head regulariser (Liu et al., Findings ACL 2024; docs/protocols.md §7).

The paper's formula is not public. This module implements

    E_tuning = λ Σ_{h ∈ selected} ω_h Σ_{M ∈ {q, k, v, o}} ‖M_h - M_h^debiased‖²_F

where, for head h of layer l (head_dim d_h, H query heads, H_kv key/value heads):
- q: the query projection's outputs [h d_h, (h+1) d_h) (weight and bias when the model has one);
- k, v: the outputs [g d_h, (g+1) d_h) of the key / value projections with g = h // (H / H_kv)
  the head's KV group (GQA: heads of one group share these, so two selected heads of one group
  each pull on them with their own weight);
- o: the output projection's inputs [h d_h, (h+1) d_h) (its bias is shared by all heads: excluded);
- ω_h: the head's weight (how much its bias effect fell from base to debiased checkpoint);
- λ: ``coefficient``, default 0.01 (the value in the MABEL driver's checkpoint names).

Where those slices live depends on the family (:data:`HEAD_LAYOUTS`, by ``config.model_type``):
- Llama-style (Llama, Mistral, Qwen, Gemma, OLMo, Granite, SmolLM3, and the default for any other
  model type): rows of ``layers.{l}.self_attn.{q,k,v}_proj``, columns of ``o_proj.weight``;
- Phi-3: rows of the fused ``self_attn.qkv_proj`` (q block, then k, then v), columns of ``o_proj``;
- GPT-2: columns of the fused ``h.{l}.attn.c_attn`` (a Conv1D, weight [d_model, 3 d_model]: q, k,
  v blocks of d_model each, bias likewise) and rows of ``attn.c_proj.weight`` (Conv1D [in, out]);
- BERT / RoBERTa: rows of ``encoder.layer.{l}.attention.self.{query,key,value}``, columns of
  ``attention.output.dense.weight``.
Parameters are found by name suffix, so the model may wrap the checkpoint (e.g. a classifier whose
backbone is the debiased model), and the debiased state dict may carry another prefix.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
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
    """Heads per layer (H), KV heads (H_kv), head dimension (d_h) and the family (``model_type``)."""

    n_heads: int
    n_kv_heads: int
    head_dim: int
    model_type: str = "llama"

    @classmethod
    def from_config(cls, config: Any) -> AttentionGeometry:
        """From an HF config, read as the hook layer reads it (:class:`ModelArchitecture`)."""
        architecture = ModelArchitecture.from_config(config)
        return cls(architecture.n_heads, architecture.n_kv_heads, architecture.d_head, architecture.model_type)

    def kv_group(self, head: int) -> int:
        """The KV head that query head ``head`` reads."""
        return head // (self.n_heads // self.n_kv_heads)


def _find_by_suffix(named: Mapping[str, torch.Tensor], suffix: str) -> str | None:
    matches = [name for name in named if name == suffix or name.endswith("." + suffix)]
    if len(matches) > 1:
        raise HeadParameterError(f"several parameters end with {suffix!r}: {matches}")
    return matches[0] if matches else None


Index = tuple[slice, ...]


@dataclass(frozen=True)
class HeadSlice:
    """One part of a head: its projection (q, k, v or o), the parameter (by name suffix), the
    index selecting the head in it, and whether a model of the family must have it (biases need not)."""

    projection: str
    suffix: str
    index: Index
    required: bool = True


def _rows(start: int, width: int) -> Index:
    return (slice(start, start + width),)


def _columns(start: int, width: int) -> Index:
    return (slice(None), slice(start, start + width))


def _llama_style(geometry: AttentionGeometry, layer: int, head: int) -> list[HeadSlice]:
    d, group = geometry.head_dim, geometry.kv_group(head)
    base = f"layers.{layer}.self_attn"
    return [
        HeadSlice("q", f"{base}.q_proj.weight", _rows(head * d, d)),
        HeadSlice("q", f"{base}.q_proj.bias", _rows(head * d, d), required=False),
        *(
            HeadSlice(name, f"{base}.{name}_proj.{kind}", _rows(group * d, d), required=kind == "weight")
            for name in ("k", "v")
            for kind in ("weight", "bias")
        ),
        HeadSlice("o", f"{base}.o_proj.weight", _columns(head * d, d)),
    ]


def _phi3(geometry: AttentionGeometry, layer: int, head: int) -> list[HeadSlice]:
    d, group = geometry.head_dim, geometry.kv_group(head)
    q_width, kv_width = geometry.n_heads * d, geometry.n_kv_heads * d
    base = f"layers.{layer}.self_attn"
    return [
        HeadSlice("q", f"{base}.qkv_proj.weight", _rows(head * d, d)),
        HeadSlice("k", f"{base}.qkv_proj.weight", _rows(q_width + group * d, d)),
        HeadSlice("v", f"{base}.qkv_proj.weight", _rows(q_width + kv_width + group * d, d)),
        HeadSlice("o", f"{base}.o_proj.weight", _columns(head * d, d)),
    ]


def _gpt2(geometry: AttentionGeometry, layer: int, head: int) -> list[HeadSlice]:
    d, width = geometry.head_dim, geometry.n_heads * geometry.head_dim
    base = f"h.{layer}.attn"
    return [
        *(
            part
            for block, name in enumerate(PROJECTIONS[:3])
            for part in (
                HeadSlice(name, f"{base}.c_attn.weight", _columns(block * width + head * d, d)),
                HeadSlice(name, f"{base}.c_attn.bias", _rows(block * width + head * d, d)),
            )
        ),
        HeadSlice("o", f"{base}.c_proj.weight", _rows(head * d, d)),
    ]


def _bert(geometry: AttentionGeometry, layer: int, head: int) -> list[HeadSlice]:
    d = geometry.head_dim
    base = f"encoder.layer.{layer}.attention"
    return [
        *(
            HeadSlice(name[0], f"{base}.self.{name}.{kind}", _rows(head * d, d))
            for name in ("query", "key", "value")
            for kind in ("weight", "bias")
        ),
        HeadSlice("o", f"{base}.output.dense.weight", _columns(head * d, d)),
    ]


HEAD_LAYOUTS: dict[str, Callable[[AttentionGeometry, int, int], list[HeadSlice]]] = {
    "phi3": _phi3,
    "gpt2": _gpt2,
    "bert": _bert,
    "roberta": _bert,
}
"""Head-slice layouts by ``config.model_type``; any other type is read as Llama-style."""


def head_slices(
    named: Mapping[str, torch.Tensor], geometry: AttentionGeometry, layer: int, head: int
) -> list[tuple[str, HeadSlice]]:
    """(parameter name in ``named``, its :class:`HeadSlice`) for every part of head ``head`` of ``layer``
    that the model has (an optional bias it lacks is skipped)."""
    if not 0 <= head < geometry.n_heads:
        raise HeadParameterError(f"head {head} is outside 0..{geometry.n_heads - 1}")
    layout = HEAD_LAYOUTS.get(geometry.model_type, _llama_style)
    found: list[tuple[str, HeadSlice]] = []
    for part in layout(geometry, layer, head):
        name = _find_by_suffix(named, part.suffix)
        if name is None:
            if part.required:
                raise HeadParameterError(
                    f"no parameter ending in {part.suffix} (model type {geometry.model_type!r}); ProSocialTuning "
                    f"knows {', '.join(sorted(HEAD_LAYOUTS))} and Llama-style self_attn.{{q,k,v,o}}_proj attention"
                )
            continue
        found.append((name, part))
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
        self.terms: list[tuple[nn.Parameter, Index, torch.Tensor, float]] = []
        for head in heads:
            if head.weight < 0:
                raise HeadParameterError(f"head L{head.layer}H{head.head} has negative weight {head.weight}")
            for name, part in head_slices(parameters, geometry, head.layer, head.head):
                debiased_name = _find_by_suffix(debiased_state, part.suffix)
                if debiased_name is None:
                    raise HeadParameterError(f"debiased checkpoint has no parameter ending in {part.suffix!r}")
                reference = debiased_state[debiased_name]
                if reference.shape != parameters[name].shape:
                    raise HeadParameterError(
                        f"{name} has shape {tuple(parameters[name].shape)} but the debiased "
                        f"{debiased_name} has {tuple(reference.shape)}: different architectures"
                    )
                target = reference[part.index].detach().clone().to(parameters[name].device, parameters[name].dtype)
                self.terms.append((parameters[name], part.index, target, head.weight))

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
