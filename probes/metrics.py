"""Scores of a probe's probabilistic predictions and their intervals: accuracy, AUC, ECE, CIs.

The value-with-interval type is the package's :class:`workbench.metrics.statistics.Estimate`
(bounds nan when not computable) and the calibration error is
:func:`workbench.metrics.calibration.expected_calibration_error`; this module adapts them to a
probe's positive-class probabilities and to the probe tables' cells.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score

from workbench.metrics.calibration import expected_calibration_error
from workbench.metrics.statistics import Estimate, bootstrap_ci

BOOTSTRAP_RESAMPLES = 2000
"""Resamples of the per-item bootstrap of ``morality.csv``."""
CALIBRATION_BINS = 20
"""Equal-width bins over [0, 1] of the calibration error: a predicted class's confidence lies in
[0.5, 1], so it falls in the upper 10 bins, each 0.05 wide."""
SCORE_RANGE = (0.0, 1.0)
"""The values accuracy, AUC and the calibration error can take."""
SELECTIVITY_RANGE = (-1.0, 1.0)
"""The values a difference of two accuracies (selectivity) can take."""


def accuracy(labels: np.ndarray, probability: np.ndarray) -> float:
    """Share of rows where ``probability > 0.5`` matches ``labels`` in {0, 1}."""
    return float(np.mean((probability > 0.5) == labels.astype(bool)))


def auc(labels: np.ndarray, probability: np.ndarray) -> float:
    """ROC AUC of ``probability`` for ``labels`` in {0, 1}; NaN when one class is absent."""
    if np.unique(labels).size < 2:
        return float("nan")
    return float(roc_auc_score(labels, probability))


def predicted_class_ece(labels: np.ndarray, probability: np.ndarray) -> float:
    """ECE of the predicted class, ``sum_b (n_b / N) * |accuracy_b - confidence_b|``.

    The prediction is ``probability > 0.5`` and its confidence ``max(p, 1 - p)``, binned into 10
    equal-width bins over [0.5, 1] (:data:`CALIBRATION_BINS` uniform bins over [0, 1], the last one
    closed), so every row counts (unlike the papers' [min, max] binning, docs/protocols.md §2.3).

    Args:
        labels: [n] in {0, 1}; probability: [n] positive-class probabilities.
    """
    confidence = np.maximum(probability, 1.0 - probability)
    correct = (probability > 0.5) == labels.astype(bool)
    return expected_calibration_error(confidence, correct, n_bins=CALIBRATION_BINS, binning="uniform")


def interval_over_splits(values: np.ndarray, *, value_range: tuple[float, float]) -> Estimate:
    """Mean of per-split scores [n_splits] with a 95% Student-t interval over splits, kept inside
    ``value_range`` (NaNs dropped; bounds nan for fewer than two splits, undefined for none).

    The t interval is symmetric about the mean and, with few splits, far wider than the score's
    range (2 splits: 1 degree of freedom, ``t = 12.7``), so each bound is clipped to ``value_range``,
    the values the score can take (:data:`SCORE_RANGE`, :data:`SELECTIVITY_RANGE`). Clipping drops
    only values the score cannot have, so the interval covers the score exactly when the t interval
    does; an interval as wide as the whole range says that the splits do not pin the score down.
    """
    values = values[~np.isnan(values)]
    if values.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    mean = float(values.mean())
    if values.size < 2:
        return Estimate(mean, float("nan"), float("nan"), int(values.size))
    half_width = float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    lowest, highest = value_range
    return Estimate(mean, max(lowest, mean - half_width), min(highest, mean + half_width), int(values.size))


def bootstrap_mean(values: np.ndarray, *, seed: int = 0) -> Estimate:
    """Mean of per-item values [n_items] (an item's records averaged first) with a 95% percentile
    bootstrap interval over items (:data:`BOOTSTRAP_RESAMPLES` resamples)."""
    return bootstrap_ci(values, np.mean, BOOTSTRAP_RESAMPLES, seed)


def estimate_cells(estimate: Estimate) -> dict[str, object]:
    """``value``, ``ci_low``, ``ci_high`` cells of the probe tables (RUN_FOLDER.md): the value as
    computed (``nan`` when undefined), an empty cell for a bound that is not computable."""
    return {
        "value": estimate.estimate,
        "ci_low": estimate.ci_low if np.isfinite(estimate.ci_low) else "",
        "ci_high": estimate.ci_high if np.isfinite(estimate.ci_high) else "",
    }
