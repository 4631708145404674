"""Option probabilities, entropy and ECE with both binnings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.metrics.calibration import expected_calibration_error, reliability_bins
from workbench.metrics.options import confidence, option_entropy, option_probabilities, predicted_option


def test_option_probabilities_from_mean_nll() -> None:
    nll = np.array([[math.log(2), math.log(4), math.log(4)]])  # s = 1/2, 1/4, 1/4 -> sum 1
    p = option_probabilities(nll)
    assert p == pytest.approx(np.array([[0.5, 0.25, 0.25]]))
    assert option_entropy(p)[0] == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert confidence(p)[0] == 0.5 and predicted_option(p)[0] == 0
    assert option_entropy(np.array([1.0, 0.0])) == 0.0
    assert option_probabilities(np.array([1000.0, 1001.0])) == pytest.approx(
        [1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))]
    )


def test_uniform_ece_hand_computed() -> None:
    conf = np.array([0.95, 0.85, 0.55, 0.52, 1.0])
    correct = np.array([1, 0, 1, 1, 1])
    # bins: [0.5,0.6): {0.55, 0.52} acc 1 conf .535; [0.8,0.9): {0.85} acc 0; [0.9,1.0]: {0.95, 1.0} acc 1
    expected = 2 / 5 * abs(1 - 0.535) + 1 / 5 * abs(0 - 0.85) + 2 / 5 * abs(1 - 0.975)
    assert expected_calibration_error(conf, correct) == pytest.approx(expected)
    bins = reliability_bins(conf, correct)
    assert [(round(b.low, 2), b.count) for b in bins] == [(0.5, 2), (0.8, 1), (0.9, 2)]


def test_minmax_faithful_drops_the_maximum_item() -> None:
    conf = np.array([0.2, 0.4, 0.6, 1.0])
    correct = np.array([0, 1, 1, 1])
    # 2 bins over [0.2, 1.0]: [0.2, 0.6) = {0.2, 0.4} acc .5 conf .3; [0.6, 1.0) = {0.6}; 1.0 drops out
    expected = 2 / 4 * abs(0.5 - 0.3) + 1 / 4 * abs(1 - 0.6)
    assert expected_calibration_error(conf, correct, n_bins=2, binning="minmax_faithful") == pytest.approx(expected)
    assert sum(b.count for b in reliability_bins(conf, correct, 2, "minmax_faithful")) == 3
    # all confidences equal: every bin empty, guarded -> 0 instead of a division by zero
    assert expected_calibration_error(np.array([0.7, 0.7]), np.array([1, 0]), binning="minmax_faithful") == 0.0
    assert math.isnan(expected_calibration_error(np.array([]), np.array([])))
    with pytest.raises(ValueError, match="binning"):
        expected_calibration_error(conf, correct, binning="quantile")  # type: ignore[arg-type]


def _upstream_ece(conf: list[float], correct: list[int], num_bins: int) -> float:
    """HaitaoMao/LLM-self-correction@071c790 analysis/uncerntainty.py ``ECEError.ece_score``, line by line
    (its ``sample2predict`` dict reduced to parallel lists; an empty bin, where upstream divides by zero,
    is skipped)."""
    min_conf, max_conf = min(conf), max(conf)
    interval = (max_conf - min_conf) / num_bins
    ece_error = 0.0
    for i in range(num_bins):
        interval_start, interval_end = min_conf + interval * i, min_conf + interval * (i + 1)
        members = [k for k, c in enumerate(conf) if c >= interval_start and c < interval_end]
        if members:
            acc = sum(correct[k] for k in members) / len(members)
            mean_conf = sum(conf[k] for k in members) / len(members)
            ece_error += abs(acc - mean_conf) * (len(members) / len(conf))
    return ece_error


def test_minmax_faithful_edges_round_as_upstream() -> None:
    # 0.2 + (0.6 - 0.2) / 3 * 3 = 0.6000000000000001 > 0.6: upstream's last bin keeps the maximum item.
    # Bins {0.2} (acc 0), {0.4} (acc 1), {0.6} (acc 1): ECE = (0.2 + 0.6 + 0.4) / 3 = 0.4.
    conf, correct = [0.2, 0.4, 0.6], [0, 1, 1]
    assert expected_calibration_error(np.array(conf), np.array(correct), 3, "minmax_faithful") == pytest.approx(0.4)
    assert sum(b.count for b in reliability_bins(np.array(conf), np.array(correct), 3, "minmax_faithful")) == 3
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(2, 40))
        values = [float(v) for v in np.round(rng.uniform(0.3, 1.0, n), int(rng.integers(1, 4)))]
        hits = [int(h) for h in rng.integers(0, 2, n)]
        ours = expected_calibration_error(np.array(values), np.array(hits), 10, "minmax_faithful")
        assert ours == pytest.approx(_upstream_ece(values, hits, 10), rel=1e-12, abs=1e-15)  # float64 sums
