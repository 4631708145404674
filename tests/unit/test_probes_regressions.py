"""Paper 4's regressions on planted data, checked against a hand computation of the F statistic."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.model_selection import train_test_split

from probes.regressions import concept_uncertainty_ftest, correctness_logistic


def test_ftest_of_a_planted_slope_equals_the_hand_computed_statistic() -> None:
    rng = np.random.default_rng(0)
    uncertainty = rng.uniform(0, 2, size=60)
    activation = 0.3 - 0.25 * uncertainty + rng.normal(scale=0.05, size=60)
    result = concept_uncertainty_ftest(uncertainty, activation)
    assert result is not None and (result.n_train, result.n_test) == (48, 12)
    assert result.slope == pytest.approx(-0.25, abs=0.03)
    # by hand: the same 80/20 split (upstream's random_state=42), least squares on the training part,
    # then the F statistic of one regressor on the held-out part, F = r^2 / (1 - r^2) * (n - 2)
    x_train, x_test, y_train, y_test = train_test_split(uncertainty, activation, test_size=0.2, random_state=42)
    slope, intercept = np.polyfit(x_train, y_train, 1)
    r = np.corrcoef(intercept + slope * x_test, y_test)[0, 1]
    f_statistic = r**2 / (1 - r**2) * (len(y_test) - 2)
    assert result.f_statistic == pytest.approx(f_statistic, rel=1e-9)  # float64 throughout
    assert result.p_value == pytest.approx(stats.f.sf(f_statistic, 1, len(y_test) - 2), rel=1e-6)
    assert result.p_value < 1e-6


def test_ftest_leaves_out_unmeasured_records_and_needs_enough_of_them() -> None:
    uncertainty = np.array([0.1, 0.2, np.nan, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6])
    activation = 2 * np.nan_to_num(uncertainty) + np.sin(np.arange(16))
    result = concept_uncertainty_ftest(uncertainty, activation)
    assert result is not None and result.n_train + result.n_test == 15
    assert concept_uncertainty_ftest(uncertainty[:6], activation[:6]) is None


def test_logistic_regression_finds_the_planted_uncertainty_effect() -> None:
    rng = np.random.default_rng(1)
    n = 400
    states = rng.normal(size=(n, 8))
    uncertainty = rng.uniform(0, 2, size=n)
    activation = rng.normal(scale=0.1, size=n)
    correct = (uncertainty < 0.7).astype(float)  # low uncertainty: right answer; the concept plays no part
    correct[:5] = np.nan  # unparsed answers are left out
    result = correctness_logistic(states, uncertainty, activation, correct, seed=0)
    assert result is not None
    per_class = int(min((correct == 1).sum(), (correct == 0).sum()))
    assert (result.n_train, result.n_test) == (int(per_class * 2 * 0.8), 2 * per_class - int(per_class * 2 * 0.8))
    assert result.accuracy >= 0.9
    assert result.coef_uncertainty < -1.0 and abs(result.coef_concept) < abs(result.coef_uncertainty) / 4
    assert correctness_logistic(states[:8], uncertainty[:8], activation[:8], correct[:8], seed=0) is None
