"""Option scoring on log-probabilities (docs/protocols.md §2.3).

For each option c (e.g. ``" (a)"``) the runner measures the mean-token negative log-likelihood
``NLL_c`` of ``" " + label`` after the round input. Then::

    s_c = exp(-NLL_c),    p_c = s_c / sum_c' s_c'

prediction = argmax p, confidence = max p, entropy = -sum p ln p (nats).
"""

from __future__ import annotations

import numpy as np


def option_probabilities(mean_nll: np.ndarray) -> np.ndarray:
    """Normalised option probabilities from mean-token NLLs (nats).

    Args:
        mean_nll: shape ``(..., n_options)``.
    Returns:
        same shape, summing to 1 over the last axis. Computed as a softmax of ``-mean_nll`` (the
        same value as ``exp(-NLL) / sum exp(-NLL)``, without underflow).
    """
    logits = -np.asarray(mean_nll, dtype=float)
    logits = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=-1, keepdims=True)


def option_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy in nats over the last axis, ``-sum p ln p`` (0 ln 0 = 0). Shape ``(...)``."""
    p = np.asarray(probabilities, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=-1)


def confidence(probabilities: np.ndarray) -> np.ndarray:
    """The largest option probability, shape ``(...)``."""
    return np.asarray(probabilities, dtype=float).max(axis=-1)


def predicted_option(probabilities: np.ndarray) -> np.ndarray:
    """Argmax option index, shape ``(...)`` (ties go to the lower index)."""
    return np.asarray(probabilities, dtype=float).argmax(axis=-1)
