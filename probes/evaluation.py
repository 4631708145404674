"""Per-layer probe scores over repeated grouped splits, with control arms and selectivity.

Arms (RUN_FOLDER.md ``layer_scores.csv``):
- ``probe``: the probe fitted on the training split, scored on the test split;
- ``shuffled_labels``: the same probe fitted on permuted training labels (a control task);
- ``random_direction``: a random unit direction per layer, Platt-scaled on the training split.
Selectivity is the probe's accuracy minus a control arm's, split by split. A probe that decodes
a concept shows that the information is linearly present, not that the model uses it.

Given a streamed view (:class:`~probes.streaming.StreamedActivations`) instead of an array, every
split's probe and shuffled-label fits are one streamed fit of ``2 x splits`` models
(``probes.streamed_solvers``), the random directions are Platt-scaled on the record sample, and one
more pass reads every split's test probabilities; the seeds, splits and permutations are the
in-memory evaluation's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from probes.batched_solvers import calibrate_projections, resolve_device
from probes.errors import ProbeInputError
from probes.estimators import LinearProbe, encode_binary_labels
from probes.layerwise import LayerwiseProbe, check_activations
from probes.metrics import SCORE_RANGE, SELECTIVITY_RANGE, accuracy, auc, interval_over_splits, predicted_class_ece
from probes.splits import GroupedSplit, grouped_splits
from probes.streamed_solvers import FitTargets, FixedDirections, StreamingSettings, stream_probabilities
from probes.streaming import StreamedActivations
from workbench.metrics.statistics import Estimate

ARMS = ("probe", "shuffled_labels", "random_direction")
METRICS = {"accuracy": accuracy, "auc": auc, "ece": predicted_class_ece}
"""The scores of every arm; each lies in :data:`~probes.metrics.SCORE_RANGE`, and so do their intervals."""


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


def random_directions(n_layers: int, width: int, seed: int) -> torch.Tensor:
    """[layers, width] float64 unit directions drawn from a normal with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(n_layers, width, generator=generator, dtype=torch.float64)
    return directions / directions.norm(dim=1, keepdim=True)


def random_direction_probability(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, seed: int, device: str | None
) -> np.ndarray:
    """Control arm: positive probability [n_test, layers] along random unit directions.

    Args:
        train: [n_train, layers, width] activations; test: [n_test, layers, width].
        train_labels: [n_train] in {0, 1}, used only for the 1-D Platt scaling.
    """
    directions = random_directions(train.shape[1], train.shape[2], seed)
    target = resolve_device(device)
    readouts = calibrate_projections(
        torch.from_numpy(train.transpose(1, 0, 2)).double().to(target),
        directions.to(target),
        torch.from_numpy(train_labels).to(target),
    )
    logits = np.einsum("nld,ld->nl", test.astype(np.float64), readouts.coef.cpu().numpy())
    return 1.0 / (1.0 + np.exp(-(logits + readouts.intercept.cpu().numpy())))


@dataclass(frozen=True)
class SplitDraw:
    """One split and the random draws its control arms use.

    Attributes:
        split: the train / test rows.
        shuffled: [n_train] the training labels permuted (the shuffled-labels arm).
        direction_seed: seed of the random-direction arm's directions.
    """

    split: GroupedSplit
    shuffled: np.ndarray
    direction_seed: int


def evaluate_layers(
    activations: np.ndarray | StreamedActivations,
    labels: np.ndarray,
    groups: np.ndarray,
    estimator: LinearProbe,
    *,
    layers: Sequence[int],
    n_folds: int = 5,
    n_repeats: int = 2,
    seed: int = 0,
    streaming: StreamingSettings | None = None,
) -> LayerEvaluation:
    """Score a probe kind on every layer over repeated grouped splits, with both control arms.

    Args:
        activations: [n, layers, width] (CCS: pairs, width 2 * d), or a streamed view of them.
        labels: [n] two-valued labels.
        groups: [n] group ids (item ids): never on both sides of a split.
        estimator: the unfitted single-layer probe whose kind and hyperparameters to use.
        layers: the model layer number of each activations column, for the output rows.
        n_folds, n_repeats, seed: the grouped k-fold scheme (``probes.splits``).
        streaming: how a streamed view is fitted; ``None`` is ``StreamingSettings()``.
    """
    if not isinstance(activations, StreamedActivations):
        activations = check_activations(activations, "evaluate_layers")
    if activations.shape[1] != len(layers):
        raise ValueError(
            f"evaluate_layers: activations have {activations.shape[1]} layers but {len(layers)} "
            "layer numbers were given"
        )
    _, encoded = encode_binary_labels(np.asarray(labels), "evaluate_layers")
    if activations.shape[0] != len(encoded):
        raise ProbeInputError(f"evaluate_layers: {activations.shape[0]} records but {len(encoded)} labels")
    rng = np.random.default_rng(seed)
    draws = [
        SplitDraw(split, rng.permutation(encoded[split.train]), int(rng.integers(2**31)))
        for split in grouped_splits(encoded, np.asarray(groups), n_folds=n_folds, n_repeats=n_repeats, seed=seed)
    ]
    probabilities: Iterable[dict[str, np.ndarray]] = (
        streamed_split_probabilities(activations, encoded, draws, estimator, streaming)
        if isinstance(activations, StreamedActivations)
        else split_probabilities(activations, encoded, draws, estimator)
    )
    per_split: dict[tuple[str, str], list[np.ndarray]] = {(arm, metric): [] for arm in ARMS for metric in METRICS}
    for draw, by_arm in zip(draws, probabilities):
        test_labels = encoded[draw.split.test]
        for arm, probability in by_arm.items():
            for metric, score in METRICS.items():
                per_split[arm, metric].append(
                    np.array([score(test_labels, probability[:, j]) for j in range(len(layers))])
                )
    scores = [
        LayerScore(layer, arm, metric, interval_over_splits(np.array(values)[:, j], value_range=SCORE_RANGE))
        for (arm, metric), values in per_split.items()
        for j, layer in enumerate(layers)
    ]
    probe_accuracy = np.array(per_split["probe", "accuracy"])
    selectivity = {
        (layer, arm): interval_over_splits(
            probe_accuracy[:, j] - np.array(per_split[arm, "accuracy"])[:, j], value_range=SELECTIVITY_RANGE
        )
        for arm in ARMS[1:]
        for j, layer in enumerate(layers)
    }
    return LayerEvaluation(scores=scores, selectivity=selectivity)


def split_probabilities(
    activations: np.ndarray, encoded: np.ndarray, draws: list[SplitDraw], estimator: LinearProbe
) -> Iterator[dict[str, np.ndarray]]:
    """Per split, each arm's test probabilities [n_test, layers], fitted in memory split by split."""
    for draw in draws:
        train, test = activations[draw.split.train], activations[draw.split.test]
        train_labels = encoded[draw.split.train]
        yield {
            "probe": LayerwiseProbe(estimator).fit(train, train_labels).predict_proba(test),
            "shuffled_labels": LayerwiseProbe(estimator).fit(train, draw.shuffled).predict_proba(test),
            "random_direction": random_direction_probability(
                train, train_labels, test, draw.direction_seed, estimator.device
            ),
        }


def streamed_split_probabilities(
    view: StreamedActivations,
    encoded: np.ndarray,
    draws: list[SplitDraw],
    estimator: LinearProbe,
    streaming: StreamingSettings | None,
) -> list[dict[str, np.ndarray]]:
    """Per split, each arm's test probabilities [n_test, layers] from streamed fits of all splits at once.

    Models ``2 s`` and ``2 s + 1`` are split ``s``'s probe and shuffled-labels fits; the random
    directions are Platt-scaled on the training records of the record sample; one more pass reads
    every test probability (``3 x splits`` readouts).
    """
    settings = streaming or StreamingSettings()
    n_splits = len(draws)
    labels = np.zeros((2 * n_splits, view.n), dtype=np.float32)
    train = np.zeros((2 * n_splits, view.n), dtype=bool)
    for index, draw in enumerate(draws):
        labels[2 * index] = encoded
        labels[2 * index + 1, draw.split.train] = draw.shuffled
        train[2 * index : 2 * index + 2, draw.split.train] = True
    directions = torch.stack([random_directions(len(view.layers), view.width, draw.direction_seed) for draw in draws])
    fixed = FixedDirections(directions, FitTargets(labels[0::2], train[0::2]))
    fits = estimator._fit_streamed(view, FitTargets(labels, train), settings, resolve_device(estimator.device), fixed)
    keep = np.zeros((3 * n_splits, view.n), dtype=bool)
    for index, draw in enumerate(draws):
        keep[[2 * index, 2 * index + 1, 2 * n_splits + index], draw.split.test[:, None]] = True
    tested = stream_probabilities(view, fits.coef, fits.intercept, keep)
    return [
        {
            "probe": _in_split_order(tested[2 * index], draw.split.test),
            "shuffled_labels": _in_split_order(tested[2 * index + 1], draw.split.test),
            "random_direction": _in_split_order(tested[2 * n_splits + index], draw.split.test),
        }
        for index, draw in enumerate(draws)
    ]


def _in_split_order(probabilities: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Rows of ``probabilities`` (the test records in view order) put in the order of ``test``."""
    return probabilities[np.argsort(np.argsort(test))]
