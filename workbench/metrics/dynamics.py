"""How answers and metrics move over rounds: flips, convergence round, per-round means."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from workbench.metrics.answers import option_letter


def transition_counts(answer_from: Sequence[int | None], answer_to: Sequence[int | None]) -> dict[tuple[str, str], int]:
    """Counts of (letter in round r, letter in round r') over items, ``"unparsed"`` for ``None``.

    ``transition_counts([0, 0, 2], [0, 2, 2])`` -> ``{("a", "a"): 1, ("a", "c"): 1, ("c", "c"): 1}``.
    """
    pairs = zip(answer_from, answer_to, strict=True)
    return dict(Counter((option_letter(a), option_letter(b)) for a, b in pairs))


def flip_rate(answer_from: Sequence[int | None], answer_to: Sequence[int | None]) -> float:
    """Fraction of items whose parsed answer changed (items unparsed in either round left out)."""
    pairs = [(a, b) for a, b in zip(answer_from, answer_to, strict=True) if a is not None and b is not None]
    if not pairs:
        return float("nan")
    return float(np.mean([a != b for a, b in pairs]))


def convergence_round(values: Sequence[float], eps: float = 0.01, stable_rounds: int = 1) -> int | None:
    """First round r with ``|v[k] - v[k-1]| < eps`` for every later round k > r, held for ``stable_rounds`` changes.

    Equivalently: the last round whose change from its predecessor is ``>= eps`` (0 if no change
    is), provided at least ``stable_rounds`` sub-eps changes follow it; otherwise the series has not
    converged within the observed rounds and ``None`` is returned. With the default 1 a single
    sub-eps change into the final round suffices (``[0.4, 0.6, 0.605]`` -> 1); with 2 that series has
    not converged. ``eps`` is in the metric's own units (0.01 = one accuracy point). Rounds are
    0-based. ``[0.4, 0.6, 0.65, 0.655, 0.656]`` with eps 0.01 -> 2. A single round is round 0.
    """
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("convergence_round needs at least one round")
    if stable_rounds < 1:
        raise ValueError(f"stable_rounds must be at least 1, got {stable_rounds}")
    if v.size == 1:
        return 0
    large = np.flatnonzero(~(np.abs(np.diff(v)) < eps))
    last = 0 if large.size == 0 else int(large[-1]) + 1
    return last if v.size - 1 - last >= stable_rounds else None


def mean_per_round(rounds: Sequence[int], values: Sequence[float | None]) -> dict[int, float]:
    """Mean of the scored values of each round (``None`` = unscored, left out of that round's mean).

    The MSU notebook divided by the number of dialogues even where some rounds lacked a score;
    here each round is averaged over its scored outputs only.
    """
    sums: dict[int, list[float]] = {}
    for r, value in zip(rounds, values, strict=True):
        if value is not None:
            sums.setdefault(r, []).append(value)
    return {r: float(np.mean(sums[r])) for r in sorted(sums)}
