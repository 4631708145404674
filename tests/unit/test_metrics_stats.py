"""Bootstrap intervals, paired tests and 2x2x2 factorial effects."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from workbench.metrics.statistics import (
    Estimate,
    bootstrap_ci,
    factorial_effects,
    paired_difference,
    sign_flip_p_value,
)


def test_bootstrap_ci_contains_mean_and_is_seeded() -> None:
    values = np.array([0, 1] * 50, dtype=float)
    estimate = bootstrap_ci(values, n_boot=500, seed=1)
    assert estimate.estimate == 0.5 and estimate.n == 100
    assert 0.38 < estimate.ci_low < 0.5 < estimate.ci_high < 0.62
    assert bootstrap_ci(values, n_boot=500, seed=1) == estimate
    constant = bootstrap_ci(np.ones(5), n_boot=50)
    assert (constant.ci_low, constant.ci_high) == (1.0, 1.0)
    assert math.isnan(bootstrap_ci(np.array([3.0])).ci_low)


def test_undefined_estimate_carries_its_reason_and_blank_cells() -> None:
    empty = bootstrap_ci(np.array([]), n_boot=20)
    assert (empty.defined, empty.undefined_reason, empty.n) == (False, "no items", 0)
    nan_statistic = bootstrap_ci(np.array([1.0, 2.0, 3.0]), lambda v: float("nan"), n_boot=20)
    assert (nan_statistic.undefined_reason, nan_statistic.n) == ("not computable", 3)
    assert math.isnan(nan_statistic.ci_low) and math.isnan(nan_statistic.ci_high)
    explained = nan_statistic.explained("no non-unknown answer")
    assert explained.undefined_reason == "no non-unknown answer" and explained.n == 3
    assert explained.csv_cells() == {
        "value": "",
        "ci_low": "",
        "ci_high": "",
        "undefined_reason": "no non-unknown answer",
    }
    # a defined estimate keeps its value whatever reason is offered; only a missing bound is blank
    single = bootstrap_ci(np.array([0.25]), n_boot=20).explained("no parsed answer")
    assert single.defined and single.csv_cells() == {"value": 0.25, "ci_low": "", "ci_high": "", "undefined_reason": ""}
    # a nan built by hand is undefined too, never a number with a missing reason
    assert Estimate(float("nan"), 0.1, 0.2, 5).undefined_reason == "not computable"
    assert math.isnan(Estimate(float("nan"), 0.1, 0.2, 5).ci_low)
    with pytest.raises(ValueError, match="cannot be undefined"):
        Estimate(0.5, 0.4, 0.6, 5, "one class")


def test_paired_difference() -> None:
    a = np.array([1.0, 1.0, 1.0, 0.0])
    b = np.array([0.0, 1.0, 0.0, 0.0])
    estimate = paired_difference(a, b, n_boot=200)
    assert estimate.estimate == 0.5 and estimate.n == 4
    with pytest.raises(ValueError, match="equal shapes"):
        paired_difference(a, b[:3])


def test_sign_flip_exact_p_values() -> None:
    # d = (1, 1, 1): of 8 sign patterns only +++ and --- reach |mean| = 1 -> p = 2/8
    assert sign_flip_p_value(np.array([1.0, 1.0, 1.0])) == pytest.approx(0.25)
    # d = (1, -1): patterns give means 0, 1, -1, 0 -> |mean| >= 0 always -> p = 1
    assert sign_flip_p_value(np.array([1.0, -1.0])) == 1.0
    # d = (2, 1): means 1.5, .5, -.5, -1.5 -> 2 of 4 reach 1.5 -> 0.5
    assert sign_flip_p_value(np.array([2.0, 1.0])) == 0.5
    approx = sign_flip_p_value(np.ones(30), n_permutations=2000, seed=0)
    assert approx == pytest.approx(1 / 2001, abs=2e-3)


def test_factorial_effects_recover_known_contrasts() -> None:
    # cell mean = 0.2 + 0.1*I + 0.3*C + 0.04*I*C (0/1 coding); per-item noise-free
    n_items = 5
    outcomes = np.zeros((n_items, 2, 2, 2))
    for i, c, f in itertools.product((0, 1), repeat=3):
        outcomes[:, i, c, f] = 0.2 + 0.1 * i + 0.3 * c + 0.04 * i * c
    effects = factorial_effects(outcomes, n_boot=100)
    # main effect of I = mean(I=1) - mean(I=0) = 0.1 + 0.04*0.5 = 0.12
    assert effects["instruction"].estimate == pytest.approx(0.12)
    assert effects["cot"].estimate == pytest.approx(0.3 + 0.04 * 0.5)
    assert effects["feedback"].estimate == pytest.approx(0.0)
    # interaction I:C = half of (effect of I at C=1 minus at C=0) = 0.04 / 2
    assert effects["instruction:cot"].estimate == pytest.approx(0.02)
    assert effects["instruction:feedback"].estimate == pytest.approx(0.0)
    assert effects["instruction:cot:feedback"].estimate == pytest.approx(0.0)
    assert effects["instruction"].ci_low == pytest.approx(0.12)  # no between-item variance
    with pytest.raises(ValueError, match="shape"):
        factorial_effects(np.zeros((3, 2, 2)))
