"""Per-layer probe scores over repeated grouped splits, with control arms and selectivity.

Arms (RUN_FOLDER.md ``layer_scores.csv``):
- ``probe``: the probe fitted on the training split, scored on the test split;
- ``shuffled_labels``: the same probe fitted on permuted training labels (a control task);
- ``random_direction``: a random unit direction per layer, Platt-scaled on the training split.
Selectivity is the probe's accuracy minus a control arm's, split by split. A probe that decodes
a concept shows that the information is linearly present, not that the model uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from probes.batched_solvers import calibrate_projections, resolve_device
from probes.estimators import LinearProbe, encode_binary_labels
from probes.layerwise import LayerwiseProbe, check_activations
from probes.metrics import (
    Estimate,
    accuracy,
    auc,
    expected_calibration_error,
    interval_over_splits,
)
from probes.splits import grouped_splits

ARMS = ("probe", "shuffled_labels", "random_direction")
METRICS = {"accuracy": accuracy, "auc": auc, "ece": expected_calibration_error}


@dataclass(frozen=True)
class LayerScore:
    """One row of ``layer_scores.csv`` (without site and position)."""

    layer: int
    arm: str
    metric: str
    estimate: Estimate


@dataclass(frozen=True)
class LayerEvaluation:
    """Scores of every layer and arm, plus selectivity against each control arm.

    Attributes:
        scores: one ``LayerScore`` per (layer, arm, metric).
        selectivity: (layer, control arm) -> accuracy(probe) - accuracy(control), over splits.
    """

    scores: list[LayerScore]
    selectivity: dict[tuple[int, str], Estimate]

    def score(self, layer: int, arm: str, metric: str) -> Estimate:
        """The estimate for one (layer, arm, metric)."""
        for row in self.scores:
            if (row.layer, row.arm, row.metric) == (layer, arm, metric):
                return row.estimate
        raise KeyError(f"no score for layer {layer}, arm {arm!r}, metric {metric!r}")


def random_direction_probability(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, seed: int, device: str | None
) -> np.ndarray:
    """Control arm: positive probability [n_test, layers] along random unit directions.

    Args:
        train: [n_train, layers, width] activations; test: [n_test, layers, width].
        train_labels: [n_train] in {0, 1}, used only for the 1-D Platt scaling.
    """
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(train.shape[1], train.shape[2], generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=1, keepdim=True)
    target = resolve_device(device)
    readouts = calibrate_projections(
        torch.from_numpy(train.transpose(1, 0, 2)).double().to(target),
        directions.to(target),
        torch.from_numpy(train_labels).to(target),
    )
    logits = np.einsum("nld,ld->nl", test.astype(np.float64), readouts.coef.cpu().numpy())
    return 1.0 / (1.0 + np.exp(-(logits + readouts.intercept.cpu().numpy())))


def evaluate_layers(
    activations: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    estimator: LinearProbe,
    *,
    layers: Sequence[int],
    n_folds: int = 5,
    n_repeats: int = 2,
    seed: int = 0,
) -> LayerEvaluation:
    """Score a probe kind on every layer over repeated grouped splits, with both control arms.

    Args:
        activations: [n, layers, width] (CCS: pairs, width 2 * d).
        labels: [n] two-valued labels.
        groups: [n] group ids (item ids): never on both sides of a split.
        estimator: the unfitted single-layer probe whose kind and hyperparameters to use.
        layers: the model layer number of each activations column, for the output rows.
        n_folds, n_repeats, seed: the grouped k-fold scheme (``probes.splits``).
    """
    activations = check_activations(activations, "evaluate_layers")
    if activations.shape[1] != len(layers):
        raise ValueError(
            f"evaluate_layers: activations have {activations.shape[1]} layers but {len(layers)} "
            "layer numbers were given"
        )
    _, encoded = encode_binary_labels(np.asarray(labels), "evaluate_layers")
    rng = np.random.default_rng(seed)
    per_split: dict[tuple[str, str], list[np.ndarray]] = {(arm, metric): [] for arm in ARMS for metric in METRICS}
    for split in grouped_splits(encoded, np.asarray(groups), n_folds=n_folds, n_repeats=n_repeats, seed=seed):
        train, test = activations[split.train], activations[split.test]
        train_labels, test_labels = encoded[split.train], encoded[split.test]
        probabilities = {
            "probe": LayerwiseProbe(estimator).fit(train, train_labels).predict_proba(test),
            "shuffled_labels": LayerwiseProbe(estimator).fit(train, rng.permutation(train_labels)).predict_proba(test),
            "random_direction": random_direction_probability(
                train, train_labels, test, int(rng.integers(2**31)), estimator.device
            ),
        }
        for arm, probability in probabilities.items():
            for metric, score in METRICS.items():
                per_split[arm, metric].append(
                    np.array([score(test_labels, probability[:, j]) for j in range(len(layers))])
                )
    scores = [
        LayerScore(layer, arm, metric, interval_over_splits(np.array(values)[:, j]))
        for (arm, metric), values in per_split.items()
        for j, layer in enumerate(layers)
    ]
    probe_accuracy = np.array(per_split["probe", "accuracy"])
    selectivity = {
        (layer, arm): interval_over_splits(probe_accuracy[:, j] - np.array(per_split[arm, "accuracy"])[:, j])
        for arm in ARMS[1:]
        for j, layer in enumerate(layers)
    }
    return LayerEvaluation(scores=scores, selectivity=selectivity)
