"""Expected calibration error and reliability-diagram bins.

``ECE = sum_b (n_b / N) * |accuracy_b - mean_confidence_b|`` over non-empty bins b, N = number of
items.

Binning:

- ``"uniform"`` (default): ``n_bins`` equal-width bins over [0, 1]; bin i is
  ``[i/n, (i+1)/n)`` and the last bin is closed, so every item lands in a bin.
- ``"minmax_faithful"``: paper 4's ``ECEError.ece_score`` (HaitaoMao/LLM-self-correction@071c790
  ``analysis/uncerntainty.py``; docs/protocols.md §2.3): ``interval = (max - min) / n_bins`` and bin
  i is ``[min + interval * i, min + interval * (i + 1))``, edges computed in that order so that
  they round as upstream's do. The maximum-confidence item(s) therefore usually fall in no bin and
  are dropped from the numerator while N still counts every item, unless the last edge rounds
  above the maximum (``min + interval * n_bins > max``), where upstream keeps them too; empty bins
  are skipped instead of dividing by zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Binning = Literal["uniform", "minmax_faithful"]


@dataclass(frozen=True)
class ReliabilityBin:
    """One reliability-diagram bin: its edges, mean confidence, accuracy and item count."""

    low: float
    high: float
    mean_confidence: float
    accuracy: float
    count: int


def reliability_bins(
    confidences: np.ndarray, correct: np.ndarray, n_bins: int = 10, binning: Binning = "uniform"
) -> list[ReliabilityBin]:
    """The non-empty bins of the chosen binning.

    Args:
        confidences: shape ``(n_items,)``, in [0, 1].
        correct: shape ``(n_items,)``, bool or 0/1.
    """
    conf = np.asarray(confidences, dtype=float)
    hit = np.asarray(correct, dtype=float)
    if conf.shape != hit.shape or conf.ndim != 1:
        raise ValueError(f"confidences {conf.shape} and correct {hit.shape} must be equal 1-D shapes")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if binning == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        index = np.clip(np.floor(conf * n_bins).astype(int), 0, n_bins - 1)
    elif binning == "minmax_faithful":
        if conf.size == 0:
            return []
        low, high = float(conf.min()), float(conf.max())
        edges = low + (high - low) / n_bins * np.arange(n_bins + 1, dtype=np.float64)
        index = np.full(conf.shape, -1)
        for b in range(n_bins):
            index[(conf >= edges[b]) & (conf < edges[b + 1])] = b
    else:
        raise ValueError(f"unknown binning {binning!r}; choose 'uniform' or 'minmax_faithful'")
    bins = []
    for b in range(n_bins):
        members = index == b
        count = int(members.sum())
        if count:
            bins.append(
                ReliabilityBin(
                    float(edges[b]), float(edges[b + 1]), float(conf[members].mean()), float(hit[members].mean()), count
                )
            )
    return bins


def expected_calibration_error(
    confidences: np.ndarray, correct: np.ndarray, n_bins: int = 10, binning: Binning = "uniform"
) -> float:
    """ECE in [0, 1]; nan for no items."""
    n = np.asarray(confidences).size
    if n == 0:
        return float("nan")
    bins = reliability_bins(confidences, correct, n_bins, binning)
    return float(sum(b.count / n * abs(b.accuracy - b.mean_confidence) for b in bins))
