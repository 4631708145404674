"""Deterministic subsets of a task's items: the first N, or a seeded sample kept in file order."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def check_limit(limit: int | None) -> int | None:
    """Return ``limit`` if it is ``None`` or a positive int; raise ``ValueError`` otherwise."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r} must be a positive integer or None (no limit)")
    return limit


def limit_items(items: Sequence[T], limit: int | None, seed: int | None) -> list[T]:
    """Keep at most ``limit`` of ``items``.

    With ``seed=None`` the first ``limit`` items are kept. With a seed, ``limit`` positions are
    drawn with ``random.Random(seed).sample`` and the chosen items are returned in their original
    order, so the same seed always gives the same subset for the same file.
    """
    check_limit(limit)
    if limit is None or limit >= len(items):
        return list(items)
    if seed is None:
        return list(items[:limit])
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen]
