"""Percentile bootstrap intervals for the mean of per-item scores."""

from __future__ import annotations

import numpy as np


def bootstrap_mean_interval(
    values: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of ``values.mean()`` (items resampled with replacement).

    Args:
        values: shape (n,), one score per item.
    Returns:
        (low, high), or (None, None) when n < 2 (RUN_FOLDER.md: empty when not computable).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return None, None
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, values.size, size=(n_resamples, values.size))
    means = values[draws].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))
