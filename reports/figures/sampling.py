"""Seeded samples of per-item rows, so that a figure of a large run stays small and the same on every build."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

SAMPLE_SEED = 0
"""Seed of every sample a report figure draws (numpy's default generator)."""

Row = TypeVar("Row")


def sample_rows(rows: Sequence[Row], size: int, seed: int = SAMPLE_SEED) -> list[Row]:
    """``rows`` when there are at most ``size``, else ``size`` of them drawn without replacement, in table order.

    The draw is ``numpy.random.default_rng(seed).choice(len(rows), size, replace=False)``, so the same
    table gives the same sample on every build.
    """
    if size < 1:
        raise ValueError(f"sample size must be at least 1, got {size}")
    if len(rows) <= size:
        return list(rows)
    chosen = np.sort(np.random.default_rng(seed).choice(len(rows), size=size, replace=False))
    return [rows[int(index)] for index in chosen]
