"""Uncertainty of metrics over items: bootstrap intervals, paired tests, 2x2x2 factorial effects and
weighted cell contrasts (the effects of a factor whose levels exist in only some cells, such as the
in-context demonstrations).

All resampling is over items (rows) with ``numpy.random.default_rng(seed)``; intervals are
percentile intervals at ``level`` (0.95 by default).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as scipy_stats

from workbench.metrics import undefined

Statistic = Callable[[np.ndarray], float]
FACTORS: tuple[str, ...] = ("instruction", "cot", "feedback")
EFFECTS: tuple[str, ...] = (
    "instruction",
    "cot",
    "feedback",
    "instruction:cot",
    "instruction:feedback",
    "cot:feedback",
    "instruction:cot:feedback",
)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its percentile bootstrap interval over ``n`` items.

    Undefined is a value, not an error: when the statistic cannot be computed on the items (no
    items; a statistic that is nan on them, such as a bias score without a non-unknown answer)
    ``estimate`` and both bounds are nan and ``undefined_reason`` says why (a phrase of
    :mod:`workbench.metrics.undefined`; a nan estimate given without one gets
    :data:`~workbench.metrics.undefined.NOT_COMPUTABLE`). A defined estimate has
    ``undefined_reason`` ``None``; its bounds are nan when the interval is not computable
    (fewer than two items).
    """

    estimate: float
    ci_low: float
    ci_high: float
    n: int
    undefined_reason: str | None = None

    def __post_init__(self) -> None:
        if not np.isfinite(self.estimate) and self.undefined_reason is None:
            object.__setattr__(self, "undefined_reason", undefined.NOT_COMPUTABLE)
        if self.undefined_reason is not None:
            if np.isfinite(self.estimate):
                raise ValueError(f"an estimate of {self.estimate} cannot be undefined ({self.undefined_reason})")
            object.__setattr__(self, "ci_low", float("nan"))
            object.__setattr__(self, "ci_high", float("nan"))

    @property
    def defined(self) -> bool:
        """Whether the statistic has a value (``undefined_reason`` is ``None``)."""
        return self.undefined_reason is None

    def explained(self, reason: str) -> Estimate:
        """This estimate, or, when it is undefined, the same with ``reason`` as its undefined reason."""
        return self if self.defined else replace(self, undefined_reason=reason)

    def csv_cells(self) -> dict[str, float | str]:
        """``value``, ``ci_low``, ``ci_high``, ``undefined_reason`` as tidy-CSV cells.

        An undefined value and a bound that is not computable are empty cells; ``undefined_reason``
        is empty for a defined value (RUN_FOLDER.md, "Undefined values").
        """
        return {
            "value": self.estimate if self.defined else "",
            "ci_low": self.ci_low if np.isfinite(self.ci_low) else "",
            "ci_high": self.ci_high if np.isfinite(self.ci_high) else "",
            "undefined_reason": self.undefined_reason or "",
        }


def _percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_ci(
    values: np.ndarray,
    statistic: Statistic = np.mean,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """``statistic`` of per-item ``values`` (shape ``(n_items, ...)``) with a bootstrap interval.

    The interval is nan for fewer than two items. With no items, or when ``statistic`` is not
    finite on the items, the estimate is undefined (:attr:`Estimate.undefined_reason`
    :data:`~workbench.metrics.undefined.NO_ITEMS` / ``NOT_COMPUTABLE``; callers that know the
    cause name it with :meth:`Estimate.explained`) and no resample is drawn.
    """
    data = np.asarray(values, dtype=float)
    n = data.shape[0]
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, undefined.NO_ITEMS)
    point = float(statistic(data))
    if not np.isfinite(point):
        return Estimate(float("nan"), float("nan"), float("nan"), n, undefined.NOT_COMPUTABLE)
    if n < 2:
        return Estimate(point, float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    if statistic is np.mean:  # one vectorised draw of the same resamples as the loop below
        draws = data[rng.integers(0, n, size=(n_boot, n))].reshape(n_boot, -1).mean(axis=1)
    else:
        draws = np.array([statistic(data[rng.integers(0, n, n)]) for _ in range(n_boot)], dtype=float)
    low, high = _percentile_interval(draws, level)
    return Estimate(point, low, high, n)


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Estimate:
    """Mean of ``a - b`` over items measured under both conditions, with a paired bootstrap CI."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal shapes, got {a.shape} and {b.shape}")
    return bootstrap_ci(a - b, np.mean, n_boot, seed, level)


def sign_flip_p_value(
    differences: np.ndarray, n_permutations: int = 10000, seed: int = 0, exact_up_to: int = 16
) -> float:
    """Two-sided sign-flip permutation p-value for mean(differences) = 0.

    With n <= ``exact_up_to`` items all 2^n sign patterns are enumerated (exact test);
    otherwise ``n_permutations`` random patterns are drawn and ``p = (1 + #extreme) / (1 + draws)``.
    A pattern is extreme when ``|mean(s * d)| >= |mean(d)|`` (with a 1e-12 tolerance). nan for no items.
    """
    d = np.asarray(differences, dtype=float)
    n = d.size
    if n == 0:
        return float("nan")
    observed = abs(d.mean()) - 1e-12
    if n <= exact_up_to:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        return float(np.mean(np.abs(signs @ d / n) >= observed))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(n_permutations, n))
    extreme = int(np.sum(np.abs(signs @ d / n) >= observed))
    return (1 + extreme) / (1 + n_permutations)


@dataclass(frozen=True)
class PairedChange:
    """The mean of a paired difference over ``n`` items with its interval and two-sided p-value.

    ``ci_low``/``ci_high`` are ``None`` for fewer than two items.
    """

    difference: float
    ci_low: float | None
    ci_high: float | None
    p_value: float
    n: int


def paired_change(differences: np.ndarray, *, level: float, n_boot: int, seed: int) -> PairedChange:
    """Mean of per-item differences in {-1, 0, +1} (a 0/1 outcome at two rounds) with interval and p-value.

    The interval is the percentile bootstrap over items: a resample of ``n`` items is a draw of the
    counts of -1, 0 and +1 differences from a multinomial with the observed proportions, which is the
    same distribution as resampling the items themselves (``n_boot`` draws, ``seed``). The p-value is
    the exact two-sided sign-flip test: flipping the signs of the ``m`` non-zero differences makes the
    count of +1s Binomial(m, 1/2), so ``p = min(1, 2 P(X <= min(k, m - k)))`` for ``k`` observed +1s
    (McNemar's exact test); 1 when every difference is 0.

    Args:
        differences: [n] values in {-1, 0, 1}, n >= 1.

    Raises:
        ValueError: an empty array or a value outside {-1, 0, 1}.
    """
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        raise ValueError("a paired change needs at least one item")
    if not np.isin(d, (-1.0, 0.0, 1.0)).all():
        raise ValueError("paired differences of 0/1 outcomes must be -1, 0 or +1")
    n = int(d.size)
    counts = np.array([np.sum(d == -1.0), np.sum(d == 0.0), np.sum(d == 1.0)])
    difference = float(d.mean())
    low: float | None = None
    high: float | None = None
    if n >= 2:
        draws = np.random.default_rng(seed).multinomial(n, counts / n, size=n_boot)
        means = (draws[:, 2] - draws[:, 0]) / n
        tail = (1.0 - level) / 2.0 * 100.0
        low, high = (float(bound) for bound in np.percentile(means, [tail, 100.0 - tail]))
    discordant = int(counts[0] + counts[2])
    p_value = 1.0
    if discordant:
        p_value = min(1.0, 2.0 * float(scipy_stats.binom.cdf(min(counts[2], counts[0]), discordant, 0.5)))
    return PairedChange(difference, low, high, p_value, n)


def _effect_contrasts() -> dict[str, np.ndarray]:
    """Sign vectors over the 8 cells in ``itertools.product((0, 1), repeat=3)`` order."""
    cells = np.array(list(itertools.product((0, 1), repeat=3)))
    coded = 2 * cells - 1
    contrasts = {}
    for effect in EFFECTS:
        columns = [FACTORS.index(f) for f in effect.split(":")]
        contrasts[effect] = coded[:, columns].prod(axis=1).astype(float)
    return contrasts


def factorial_effects(
    outcomes: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Estimate]:
    """Main effects and interactions of a 2x2x2 design (instruction x CoT x feedback).

    Args:
        outcomes: shape ``(n_items, 2, 2, 2)``: the per-item outcome (e.g. 0/1 correct in the last
            round) in each cell, indexed ``[item, instruction, cot, feedback]`` with 0 = low level
            (no instruction / no CoT / no feedback) and 1 = high level. Rows with a nan are dropped.
    Returns:
        for each name in :data:`EFFECTS`, the estimate ``sum_cells sign * mean_outcome / 4``
        (signs: products of the +-1 codes of the factors in the effect). A main effect is thus the
        difference of the marginal means (high - low); a two-factor interaction is half the
        difference between one factor's effect at the other's high and low levels (Box, Hunter &
        Hunter convention). Intervals resample items, keeping each item's 8 cells together.
    """
    data = np.asarray(outcomes, dtype=float)
    if data.ndim != 4 or data.shape[1:] != (2, 2, 2):
        raise ValueError(f"outcomes must have shape (n_items, 2, 2, 2), got {data.shape}")
    flat = data.reshape(data.shape[0], 8)
    flat = flat[np.isfinite(flat).all(axis=1)]
    contrasts = _effect_contrasts()
    results = {}
    for effect, signs in contrasts.items():

        def effect_of(rows: np.ndarray, s: np.ndarray = signs) -> float:
            return float(rows.mean(axis=0) @ s / 4.0)

        results[effect] = bootstrap_ci(flat, effect_of, n_boot, seed, level)
    return results


def weighted_contrast(
    outcomes: np.ndarray, weights: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> Estimate:
    """A linear contrast of cell means, ``sum_cells weight * mean_outcome``, with an item bootstrap.

    Args:
        outcomes: shape ``(n_items, n_cells)``: the per-item outcome in each cell of the contrast.
            Rows with a nan are dropped, so every cell mean is over the same items.
        weights: shape ``(n_cells,)``. A main effect over ``m`` cell pairs is ``+1/m`` on each high
            cell and ``-1/m`` on each low one (the mean paired difference); a two-factor interaction
            over ``m`` cells of the other factors is ``(2a - 1)(2b - 1) / (2m)`` for levels a, b in
            {0, 1}, half the difference of one factor's effect at the other's two levels, the
            convention of :func:`factorial_effects`.
    Returns:
        the contrast, with the percentile interval of ``n_boot`` resamples of items (each item's
        cells kept together).
    """
    data = np.asarray(outcomes, dtype=float)
    signs = np.asarray(weights, dtype=float)
    if data.ndim != 2 or signs.shape != (data.shape[1],):
        raise ValueError(f"outcomes must be (n_items, n_cells) and weights (n_cells,), got {data.shape}, {signs.shape}")
    complete = data[np.isfinite(data).all(axis=1)]

    def contrast_of(rows: np.ndarray) -> float:
        return float(rows.mean(axis=0) @ signs)

    return bootstrap_ci(complete, contrast_of, n_boot, seed, level)
