"""Percentile bootstrap intervals for the mean of per-item scores, as bias_levels.csv cells."""

from __future__ import annotations

import numpy as np

from workbench.metrics.statistics import bootstrap_ci


def bootstrap_mean_interval(
    values: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of ``values.mean()`` (items resampled with replacement).

    Args:
        values: shape (n,), one score per item.
    Returns:
        (low, high), or (None, None) when n < 2 (RUN_FOLDER.md: empty when not computable).
    """
    estimate = bootstrap_ci(values, np.mean, n_resamples, seed, confidence)
    if estimate.n < 2:
        return None, None
    return estimate.ci_low, estimate.ci_high
