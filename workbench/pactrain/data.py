"""scikit-learn's 8x8 digits (it ships inside the wheel, so nothing is downloaded), split per seed.

1797 images of the digits 0-9, 64 pixels each with integer intensities 0-16. The workbench scales
them to [0, 1] and splits them stratified by class, so each seed has its own split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from workbench.pactrain.config import PACTrainError

DIGITS_PIXELS = 64
DIGITS_CLASSES = 10
DIGITS_MAX_INTENSITY = 16.0


@dataclass(frozen=True)
class DigitsSplit:
    """One seed's split. Features are float32 (N, 64) in [0, 1]; labels int64 (N,) in 0..9."""

    train_features: torch.Tensor
    train_labels: torch.Tensor
    test_features: torch.Tensor
    test_labels: torch.Tensor

    @property
    def num_classes(self) -> int:
        return DIGITS_CLASSES

    @property
    def train_size(self) -> int:
        return int(self.train_labels.shape[0])


def digits_split(seed: int, test_fraction: float, train_size: int | None = None) -> DigitsSplit:
    """The stratified train/test split of ``seed``; ``train_size`` keeps a stratified subset of the training part.

    Raises:
        PACTrainError: ``train_size`` larger than the training part of the split.
    """
    digits = load_digits()
    features = np.asarray(digits.data, dtype=np.float32) / DIGITS_MAX_INTENSITY
    labels = np.asarray(digits.target, dtype=np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        features, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    if train_size is not None:
        available = len(train_y)
        if train_size > available:
            raise PACTrainError(
                f"[pactrain] train_size = {train_size} exceeds the {available} training digits left by "
                f"test_fraction = {test_fraction}; give at most {available} or a smaller test_fraction"
            )
        if train_size < available:
            train_x, _, train_y, _ = train_test_split(
                train_x, train_y, train_size=train_size, stratify=train_y, random_state=seed
            )
    return DigitsSplit(
        torch.from_numpy(np.ascontiguousarray(train_x)),
        torch.from_numpy(np.ascontiguousarray(train_y)),
        torch.from_numpy(np.ascontiguousarray(test_x)),
        torch.from_numpy(np.ascontiguousarray(test_y)),
    )


def validation_split(
    features: torch.Tensor, labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stratified (fit features, fit labels, validation features, validation labels) of a training set.

    Raises:
        PACTrainError: a validation part with fewer examples than classes.
    """
    n_classes = int(labels.unique().numel())
    n_validation = int(np.ceil(fraction * labels.shape[0]))
    if n_validation < n_classes or labels.shape[0] - n_validation < n_classes:
        raise PACTrainError(
            f"[pactrain] validation_fraction = {fraction} of {labels.shape[0]} training digits leaves "
            f"{n_validation} for validation; both parts need >= {n_classes} (one per class): raise train_size"
        )
    fit_x, val_x, fit_y, val_y = train_test_split(
        features.numpy(), labels.numpy(), test_size=n_validation, stratify=labels.numpy(), random_state=seed
    )
    return (
        torch.from_numpy(np.ascontiguousarray(fit_x)),
        torch.from_numpy(np.ascontiguousarray(fit_y)),
        torch.from_numpy(np.ascontiguousarray(val_x)),
        torch.from_numpy(np.ascontiguousarray(val_y)),
    )
