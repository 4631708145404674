"""Comparing head-effect tables: agreement between methods, two checkpoints of one
architecture, and the selection of "successfully debiased heads" (ProSocialTuning).

A head's drop is ``|effect_before| - |effect_after|`` (logits): how much of its effect on the
bias measure disappeared between the base and the debiased checkpoint. Heads with a positive
drop are candidates; keep the ``top_k`` largest and/or those with drop >= ``min_drop``.
"""

from __future__ import annotations

import numpy as np

from workbench.models.architecture import ModelArchitecture
from workbench.run_tables import DebiasedHead


class ArchitectureMismatch(ValueError):
    """Two checkpoints whose heads cannot be compared one to one."""


def require_same_architecture(before: ModelArchitecture, after: ModelArchitecture) -> None:
    """Refuse checkpoints that differ in model type, layers, heads or head width."""
    keys = ("model_type", "n_layers", "n_heads", "n_kv_heads", "d_head")
    differing = [k for k in keys if getattr(before, k) != getattr(after, k)]
    if differing:
        detail = ", ".join(f"{k}: {getattr(before, k)} vs {getattr(after, k)}" for k in differing)
        raise ArchitectureMismatch(
            f"cannot compare heads of different architectures ({detail}); debias a copy of the base model"
        )


def top_k_agreement(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Share of the k heads with the largest |effect| in ``a`` that are also top-k in ``b``."""
    if a.shape != b.shape:
        raise ValueError(f"effect tables differ in shape: {a.shape} vs {b.shape}")
    k = min(k, a.size)
    top_a = set(np.argsort(-np.abs(a).reshape(-1), kind="stable")[:k].tolist())
    top_b = set(np.argsort(-np.abs(b).reshape(-1), kind="stable")[:k].tolist())
    return len(top_a & top_b) / k


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of |effect| over all heads (average ranks for ties)."""

    def ranks(values: np.ndarray) -> np.ndarray:
        flat = np.abs(values).reshape(-1)
        order = np.argsort(flat, kind="stable")
        rank = np.empty(flat.size)
        rank[order] = np.arange(flat.size, dtype=float)
        for value in np.unique(flat):
            tied = flat == value
            rank[tied] = rank[tied].mean()
        return rank

    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def select_debiased_heads(
    before: np.ndarray, after: np.ndarray, top_k: int | None = 10, min_drop: float | None = None
) -> list[DebiasedHead]:
    """Heads whose |effect| fell, largest drop first; ``top_k`` and ``min_drop`` both apply
    when both are given. Tables are [n_layers, n_heads]."""
    if before.shape != after.shape:
        raise ArchitectureMismatch(f"effect tables differ in shape: {before.shape} vs {after.shape}")
    if top_k is None and min_drop is None:
        raise ValueError("give top_k, min_drop or both to select heads")
    drop = np.abs(before) - np.abs(after)
    order = np.argsort(-drop.reshape(-1), kind="stable")
    rows = []
    for flat in order:
        layer, head = divmod(int(flat), before.shape[1])
        if drop[layer, head] <= 0 or (min_drop is not None and drop[layer, head] < min_drop):
            break
        rows.append(
            DebiasedHead(layer, head, float(before[layer, head]), float(after[layer, head]), float(drop[layer, head]))
        )
    return rows[:top_k] if top_k is not None else rows
