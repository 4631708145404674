"""Scores of probabilistic predictions and their intervals: accuracy, AUC, ECE, CIs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score

from workbench.metrics.statistics import bootstrap_ci


@dataclass(frozen=True)
class Estimate:
    """A value with a 95% interval; the bounds are ``None`` when not computable (n = 1)."""

    value: float
    ci_low: float | None
    ci_high: float | None
    n: int

    def csv_cells(self) -> dict[str, object]:
        """``value``, ``ci_low``, ``ci_high`` as tidy-CSV cells (an empty cell for a missing bound)."""
        return {
            "value": self.value,
            "ci_low": "" if self.ci_low is None else self.ci_low,
            "ci_high": "" if self.ci_high is None else self.ci_high,
        }


def accuracy(labels: np.ndarray, probability: np.ndarray) -> float:
    """Share of rows where ``probability > 0.5`` matches ``labels`` in {0, 1}."""
    return float(np.mean((probability > 0.5) == labels.astype(bool)))


def auc(labels: np.ndarray, probability: np.ndarray) -> float:
    """ROC AUC of ``probability`` for ``labels`` in {0, 1}; NaN when one class is absent."""
    if np.unique(labels).size < 2:
        return float("nan")
    return float(roc_auc_score(labels, probability))


def expected_calibration_error(labels: np.ndarray, probability: np.ndarray, n_bins: int = 10) -> float:
    """ECE of the predicted class: ``sum_b (n_b / N) * |accuracy_b - confidence_b|``.

    Confidence is ``max(p, 1 - p)``; bins are equal-width over [0.5, 1], the last one closed,
    so every row counts (unlike the papers' [min, max] binning, docs/protocols.md §2.3).
    """
    confidence = np.maximum(probability, 1.0 - probability)
    correct = (probability > 0.5) == labels.astype(bool)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    error = 0.0
    for b in np.unique(bins):
        members = bins == b
        error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def interval_over_splits(values: np.ndarray) -> Estimate:
    """Mean of per-split scores with a 95% Student-t interval over splits (NaNs dropped)."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return Estimate(float("nan"), None, None, 0)
    mean = float(values.mean())
    if values.size < 2:
        return Estimate(mean, None, None, int(values.size))
    half_width = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return Estimate(mean, mean - float(half_width), mean + float(half_width), int(values.size))


def bootstrap_mean(values: np.ndarray, *, n_resamples: int = 2000, seed: int = 0) -> Estimate:
    """Mean of per-item values with a 95% percentile bootstrap interval over items.

    Args:
        values: [n_items] one value per item (average an item's records first).
    """
    if values.size == 0:
        return Estimate(float("nan"), None, None, 0)
    result = bootstrap_ci(values, np.mean, n_resamples, seed)
    if values.size < 2:
        return Estimate(result.estimate, None, None, 1)
    return Estimate(result.estimate, result.ci_low, result.ci_high, int(values.size))
