"""Paper 4's regressions of the latent concept and the uncertainty (docs/protocols.md §2.4).

HaitaoMao/LLM-self-correction@c0c67e8 ``analysis/regression_analysis.py``:

- ``regression_analysis``: the records of rounds 1-2 (``round_threshold = 2``), an 80/20 split
  (``train_test_split(..., test_size=0.2, random_state=42)``), a linear regression of the concept
  similarity on the uncertainty fitted on the training part, and ``f_regression(test_predict,
  y_test)``: the F-test of the held-out similarities on their predictions (one regressor, so
  ``F = r^2 / (1 - r^2) * (n_test - 2)``). As written upstream passes 1-D lists where scikit-learn
  wants one column; here the uncertainty is that column.
- ``variable_analysis``: the round-1 records, class-balanced by downsampling the larger of correct
  and wrong, shuffled, the first 80% for training; features ``[last-layer state, uncertainty,
  bias_sim]`` standardized on the training part; ``LogisticRegression()`` (defaults); its test
  accuracy and coefficients.

Rounds here are 0-based: upstream's rounds 1-2 are rounds 0-1, its round 1 is round 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.feature_selection import f_regression
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from probes.apply import RunRecords

FTEST_LAST_ROUND = 1
"""Upstream's ``round_threshold = 2`` (rounds 1 and 2), 0-based."""
LOGISTIC_ROUND = 0
"""Upstream's round 1, 0-based."""
UPSTREAM_SPLIT_SEED = 42
MIN_TEST_POINTS = 3


@dataclass(frozen=True)
class FTest:
    """The held-out F-test of concept similarity on uncertainty.

    Attributes:
        f_statistic, p_value: of the held-out similarities on their predictions (1 and
            ``n_test - 2`` degrees of freedom).
        slope: the fitted similarity per nat of uncertainty; n_train, n_test: the split's sizes.
    """

    f_statistic: float
    p_value: float
    slope: float
    n_train: int
    n_test: int


def concept_uncertainty_ftest(
    uncertainty: np.ndarray, activation: np.ndarray, seed: int = UPSTREAM_SPLIT_SEED
) -> FTest | None:
    """Paper 4's ``regression_analysis`` on [n] uncertainties and [n] concept activations.

    Records with a non-finite value are left out. ``None`` when fewer than
    :data:`MIN_TEST_POINTS` records would be held out or the held-out predictions are constant.
    """
    keep = np.isfinite(uncertainty) & np.isfinite(activation)
    x, y = uncertainty[keep].reshape(-1, 1), activation[keep]
    if int(np.ceil(0.2 * len(y))) < MIN_TEST_POINTS:
        return None
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed)
    model = LinearRegression().fit(x_train, y_train)
    predicted = model.predict(x_test)
    if np.ptp(predicted) == 0 or np.ptp(y_test) == 0:
        return None
    f_statistic, p_value = f_regression(predicted.reshape(-1, 1), y_test)
    return FTest(float(f_statistic[0]), float(p_value[0]), float(model.coef_[0]), len(y_train), len(y_test))


@dataclass(frozen=True)
class CorrectnessRegression:
    """The logistic regression of per-record correctness on the state, the uncertainty and the concept.

    Attributes:
        accuracy: on the held-out 20%; n_train, n_test: the split's sizes (both classes balanced).
        coef_uncertainty, coef_concept: standardized coefficients of the uncertainty and of the
            concept activation (the state's coefficients are not reported).
    """

    accuracy: float
    n_train: int
    n_test: int
    coef_uncertainty: float
    coef_concept: float


def correctness_logistic(
    states: np.ndarray, uncertainty: np.ndarray, activation: np.ndarray, correct: np.ndarray, seed: int
) -> CorrectnessRegression | None:
    """Paper 4's ``variable_analysis``.

    Args:
        states: [n, width] each record's last-layer state; uncertainty, activation: [n].
        correct: [n] 1.0 right, 0.0 wrong, NaN unparsed (left out, as non-finite values are).
        seed: seed of the downsampling and the shuffle.

    Returns ``None`` when the smaller class leaves fewer than :data:`MIN_TEST_POINTS` test records.
    """
    keep = np.isfinite(uncertainty) & np.isfinite(activation) & np.isfinite(correct)
    rows = np.flatnonzero(keep)
    positive, negative = rows[correct[rows] == 1], rows[correct[rows] == 0]
    per_class = min(len(positive), len(negative))
    n_train = int(per_class * 2 * 0.8)
    if 2 * per_class - n_train < MIN_TEST_POINTS:
        return None
    rng = np.random.default_rng(seed)
    balanced = [rng.choice(side, per_class, replace=False) for side in (positive, negative)]
    chosen = rng.permutation(np.concatenate(balanced))
    features = np.column_stack([states[chosen], uncertainty[chosen], activation[chosen]])
    labels = correct[chosen].astype(int)
    scaler = StandardScaler().fit(features[:n_train])
    model = LogisticRegression().fit(scaler.transform(features[:n_train]), labels[:n_train])
    accuracy = float(model.score(scaler.transform(features[n_train:]), labels[n_train:]))
    coef_uncertainty, coef_concept = (float(value) for value in model.coef_[0, -2:])
    return CorrectnessRegression(accuracy, n_train, len(chosen) - n_train, coef_uncertainty, coef_concept)


def regression_summary(
    records: RunRecords, activation: np.ndarray, states: np.ndarray, seed: int
) -> dict[str, dict[str, Any]]:
    """Per condition, the F-test (rounds 0-1) and the correctness regression (round 0) of the run.

    Args:
        activation: [n] each record's concept activation (the summary's site and layer).
        states: [n, width] each record's cached state at that site and layer (upstream's
            ``hidden_states[-1]`` of the whole round input).

    Returns:
        condition -> ``{"ftest": {...} | None, "correctness_logistic": {...} | None, "uncertainty":
        the measure}``, ``None`` where there are too few records.
    """
    summary = {}
    for condition in sorted(set(map(str, records.condition))):
        in_condition = records.condition == condition
        early = in_condition & (records.round <= FTEST_LAST_ROUND)
        first = in_condition & (records.round == LOGISTIC_ROUND)
        ftest = concept_uncertainty_ftest(records.uncertainty[early], activation[early])
        logistic = correctness_logistic(
            states[first], records.uncertainty[first], activation[first], records.correct[first], seed
        )
        summary[condition] = {
            "ftest": dataclasses.asdict(ftest) if ftest is not None else None,
            "correctness_logistic": dataclasses.asdict(logistic) if logistic is not None else None,
            "uncertainty": records.uncertainty_measure,
        }
    return summary
