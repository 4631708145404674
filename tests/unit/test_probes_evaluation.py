"""Grouped splits, metrics, per-layer evaluation with controls, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from activations_cache import config_sha256
from probes.errors import DimensionMismatchError, ProbeInputError
from probes.estimators import LogisticProbe, MeanDifferenceProbe
from probes.evaluation import evaluate_layers
from probes.metrics import (
    SCORE_RANGE,
    SELECTIVITY_RANGE,
    accuracy,
    bootstrap_mean,
    estimate_cells,
    interval_over_splits,
    predicted_class_ece,
)
from probes.persistence import ProbeProvenance, load_probe, save_probe
from probes.splits import grouped_splits
from probes.tables import layer_score_rows


def test_grouped_splits_never_put_a_group_on_both_sides() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, 300)
    labels = rng.integers(0, 2, 300)
    splits = grouped_splits(labels, groups, n_folds=4, n_repeats=3, seed=7)
    assert len(splits) == 12
    for split in splits:
        assert not set(groups[split.train]) & set(groups[split.test])
    for repeat in range(3):
        tested = np.concatenate([s.test for s in splits if s.repeat == repeat])
        assert sorted(tested) == list(range(300))


def test_too_few_groups_for_the_folds() -> None:
    with pytest.raises(ProbeInputError, match="3 distinct groups for 5 folds"):
        grouped_splits(np.array([0, 1, 0, 1]), np.array([0, 1, 2, 2]), n_folds=5, n_repeats=1, seed=0)


def test_metrics_on_hand_computed_values() -> None:
    labels = np.array([1, 0, 1, 0])
    probability = np.array([0.9, 0.2, 0.4, 0.7])
    assert accuracy(labels, probability) == 0.5
    # confidences 0.9, 0.8, 0.6, 0.7 (correct, correct, wrong, wrong), one per bin of width 0.05
    assert predicted_class_ece(labels, probability) == pytest.approx((0.1 + 0.2 + 0.6 + 0.7) / 4)
    # confidences 0.62 (correct) and 0.68 (wrong) lie in two bins of width 0.05, not in one of width 0.1 (0.15)
    assert predicted_class_ece(np.array([1, 0]), np.array([0.62, 0.68])) == pytest.approx((0.38 + 0.68) / 2)
    estimate = interval_over_splits(np.array([1.0, 3.0]), value_range=(-100.0, 100.0))
    assert estimate.estimate == 2.0
    assert estimate.ci_high == pytest.approx(2.0 + 12.7062047 * np.sqrt(2) / np.sqrt(2))
    assert estimate_cells(bootstrap_mean(np.array([4.0]))) == {"value": 4.0, "ci_low": "", "ci_high": ""}
    undefined = interval_over_splits(np.array([np.nan, np.nan]), value_range=SCORE_RANGE)
    assert undefined.n == 0 and not undefined.defined
    assert str(estimate_cells(undefined)["value"]) == "nan" and estimate_cells(undefined)["ci_low"] == ""


def test_split_interval_is_the_t_interval_clipped_to_the_score_range() -> None:
    # mean 0.97, sample sd sqrt(0.008 / 4), standard error 0.02; t(0.975, 4 df) = 2.7764451
    estimate = interval_over_splits(np.array([0.9, 1.0, 1.0, 0.95, 1.0]), value_range=SCORE_RANGE)
    assert estimate.estimate == pytest.approx(0.97)
    assert estimate.ci_low == pytest.approx(0.97 - 2.7764451 * 0.02, rel=1e-6)
    assert estimate.ci_high == 1.0  # 0.97 + 0.0555 is no accuracy: clipped
    # two splits: 1 degree of freedom, t = 12.71, an interval wider than the range on both sides
    wide = interval_over_splits(np.array([0.5, 0.8]), value_range=SCORE_RANGE)
    assert (wide.estimate, wide.ci_low, wide.ci_high) == (pytest.approx(0.65), 0.0, 1.0)
    assert interval_over_splits(np.array([-0.2, 0.4]), value_range=SELECTIVITY_RANGE).ci_low == -1.0


def test_layer_scores_stay_in_range_with_two_folds() -> None:
    """n_folds = 2: a t interval over 2 split means; every bound of layer_scores.csv stays in its metric's range."""
    rng = np.random.default_rng(3)
    n, d = 40, 8
    labels = rng.integers(0, 2, n)
    activations = rng.normal(size=(n, 2, d))
    activations[:, 1, 0] += 0.8 * (2 * labels - 1)  # a weak concept: split accuracies differ
    evaluation = evaluate_layers(
        activations, labels, np.arange(n) // 2, LogisticProbe(), layers=[0, 1], n_folds=2, n_repeats=1
    )
    rows = layer_score_rows(evaluation, "hook_resid_post", "last_prompt")
    bounded = [row for row in rows if row["ci_low"] != ""]
    assert {row["metric"] for row in bounded} == {"accuracy", "auc", "ece", "selectivity"}
    clipped = 0
    for row in bounded:
        lowest, highest = SELECTIVITY_RANGE if row["metric"] == "selectivity" else SCORE_RANGE
        assert lowest <= row["ci_low"] <= row["value"] <= row["ci_high"] <= highest, row
        clipped += row["ci_low"] == lowest or row["ci_high"] == highest
    assert clipped > 0  # the planted case reaches a bound (it fell outside the range before clipping)


def test_probe_beats_its_controls_on_a_planted_layer() -> None:
    rng = np.random.default_rng(0)
    n, d = 240, 32
    labels = rng.integers(0, 2, n)
    activations = rng.normal(size=(n, 2, d))
    activations[:, 1, 3] += 2.5 * (2 * labels - 1)
    groups = np.arange(n) // 3
    evaluation = evaluate_layers(
        activations, labels, groups, MeanDifferenceProbe(), layers=[10, 11], n_folds=3, n_repeats=2
    )
    assert evaluation.score(11, "probe", "accuracy").estimate > 0.9
    assert evaluation.score(11, "shuffled_labels", "accuracy").estimate < 0.7
    assert evaluation.score(11, "random_direction", "accuracy").estimate < 0.75
    assert evaluation.score(10, "probe", "accuracy").estimate < 0.65
    assert evaluation.selectivity[11, "shuffled_labels"].estimate > 0.25
    assert evaluation.score(11, "probe", "auc").n == 6


def saved(tmp_path: Path, width: int) -> Path:
    provenance = ProbeProvenance(
        kind="logistic",
        site="hook_resid_post",
        position="last_prompt",
        layer=4,
        cache_path="runs/demo/cache.h5",
        cache_config_hash=config_sha256({"model": "m"}),
        probe_config={"kind": "logistic"},
        hyperparameters=LogisticProbe().get_params(),
        classes=[0, 1],
        scores={"accuracy": 0.75},
    )
    return save_probe(tmp_path, np.arange(width, dtype=float), -0.5, provenance)


def test_probe_round_trips_through_safetensors_and_json(tmp_path: Path) -> None:
    path = saved(tmp_path, 3)
    assert path.name == "hook_resid_post.last_prompt.L4.logistic.safetensors"
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["cache_config_hash"] == config_sha256({"model": "m"})
    probe = load_probe(path)
    assert probe.intercept == -0.5
    np.testing.assert_allclose(probe.direction, np.array([0, 1, 2]) / np.sqrt(5))
    # logits: 0*1 + 1*1 + 2*1 - 0.5 = 2.5
    assert probe.probability(np.ones((1, 3)), "test")[0] == pytest.approx(1 / (1 + np.exp(-2.5)))


def test_probe_from_another_model_is_refused(tmp_path: Path) -> None:
    probe = load_probe(saved(tmp_path, 3))
    with pytest.raises(DimensionMismatchError, match="4 wide .* fitted on 3"):
        probe.probability(np.ones((2, 4)), "cache.h5")


def test_config_hash_ignores_key_order() -> None:
    assert config_sha256({"a": 1, "b": [2]}) == config_sha256({"b": [2], "a": 1})
    assert config_sha256({"a": 1}) != config_sha256({"a": 2})
