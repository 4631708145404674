"""Repeated train/test splits grouped by item: no item ever sits on both sides of a split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from probes.errors import ProbeInputError


@dataclass(frozen=True)
class GroupedSplit:
    """One train/test split.

    Attributes:
        repeat: index of the repetition (each reshuffles the groups).
        fold: index of the fold within the repetition.
        train: [n_train] row indices.
        test: [n_test] row indices.
    """

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray


def grouped_splits(
    labels: np.ndarray, groups: np.ndarray, *, n_folds: int, n_repeats: int, seed: int
) -> list[GroupedSplit]:
    """``n_repeats`` shuffled, label-stratified, group-disjoint k-fold partitions.

    Args:
        labels: [n] class labels (stratification keeps both classes in every test fold).
        groups: [n] group ids (item ids); all rows of a group land on the same side.
        n_folds: folds per repetition (each row is tested once per repetition).
        n_repeats: repetitions with different shuffles.
        seed: seed of the first repetition; repetition r uses ``seed + r``.

    Raises:
        ProbeInputError: fewer distinct groups than folds.
    """
    n_groups = np.unique(groups).size
    if n_groups < n_folds:
        raise ProbeInputError(
            f"grouped splits: {n_groups} distinct groups for {n_folds} folds; lower n_folds or add items"
        )
    splits = []
    for repeat in range(n_repeats):
        folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed + repeat)
        for fold, (train, test) in enumerate(folds.split(np.zeros(len(labels)), labels, groups)):
            splits.append(GroupedSplit(repeat=repeat, fold=fold, train=train, test=test))
    return splits
