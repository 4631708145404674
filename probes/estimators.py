"""Single-layer probes with scikit-learn's estimator API: logistic, mean difference and CCS.

Each probe is a linear readout ``decision(x) = x @ coef_ + intercept_`` (logits) of one layer's
activations ``x`` [n, d]. ``fit`` runs the same batched torch solver that fits all layers at once
(``probes.batched_solvers``) with one layer. Labels may be any two values; ``classes_[1]`` is the
positive class (the concept: stereotyped, immoral, toxic) whose probability is reported.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import Tags
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from probes.batched_solvers import (
    fit_ccs_layers,
    fit_logistic_layers,
    fit_mean_difference_layers,
    resolve_device,
)
from probes.errors import ProbeInputError, SingleClassError


def encode_binary_labels(y: np.ndarray, estimator_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Map two-valued labels to {0, 1}; returns (classes [2], encoded [n] float32).

    Raises:
        SingleClassError: only one class is present.
        ValueError: more than two classes ("Only binary classification is supported.").
    """
    check_classification_targets(y)
    classes, encoded = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise SingleClassError(
            f"{estimator_name}: the labels hold one class ({classes[0]!r}); a probe needs both "
            "classes in its training set"
        )
    if type_of_target(y) != "binary":
        raise ValueError(
            f"Only binary classification is supported. {estimator_name} got {classes.size} "
            "classes; pass labels with two values"
        )
    return classes, encoded.astype(np.float32)


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Shared prediction side of the linear probes (fitted ``coef_`` [d] and ``intercept_``)."""

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits of the positive class, [n]."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return X @ self.coef_ + self.intercept_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities [n, 2] in the order of ``classes_``."""
        positive = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.stack([1.0 - positive, positive], axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels [n] (values of ``classes_``)."""
        positive = self.decision_function(X) > 0
        return self.classes_[positive.astype(int)]

    @property
    def direction_(self) -> np.ndarray:
        """Unit vector [d] along ``coef_``: the concept direction in activation space."""
        check_is_fitted(self)
        return self.coef_ / np.linalg.norm(self.coef_)

    def _fit_readout(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=False)
        y = column_or_1d(y, warn=True)
        self.classes_, encoded = encode_binary_labels(y, type(self).__name__)
        return X, torch.from_numpy(encoded)


class LogisticProbe(LinearProbe):
    """L2-regularised logistic regression on standardised activations.

    Args:
        C: inverse regularisation strength (scikit-learn's convention).
        max_iter: Newton iterations at most.
        tol: convergence threshold on the largest gradient entry.
        device: torch device to fit on; ``None`` picks CUDA when present.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 100, tol: float = 1e-4, device: str | None = None) -> None:
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.device = device

    def fit(self, X: np.ndarray, y: np.ndarray) -> LogisticProbe:
        """Fit on activations X [n, d] and two-valued labels y [n]."""
        X, labels = self._fit_readout(X, y)
        device = resolve_device(self.device)
        features = torch.tensor(X, dtype=torch.float64, device=device)[None]
        readouts = fit_logistic_layers(features, labels.to(device), C=self.C, max_iter=self.max_iter, tol=self.tol)
        self.coef_ = readouts.coef[0].cpu().numpy()
        self.intercept_ = float(readouts.intercept[0])
        self.n_iter_ = readouts.n_iter
        return self


class MeanDifferenceProbe(LinearProbe):
    """Direction ``mean(x | positive) - mean(x | negative)``, Platt-scaled to probabilities.

    Args:
        device: torch device to fit on; ``None`` picks CUDA when present.
    """

    def __init__(self, device: str | None = None) -> None:
        self.device = device

    def fit(self, X: np.ndarray, y: np.ndarray) -> MeanDifferenceProbe:
        """Fit on activations X [n, d] and two-valued labels y [n]."""
        X, labels = self._fit_readout(X, y)
        device = resolve_device(self.device)
        features = torch.tensor(X, dtype=torch.float64, device=device)[None]
        readouts = fit_mean_difference_layers(features, labels.to(device))
        self.coef_ = readouts.coef[0].cpu().numpy()
        self.intercept_ = float(readouts.intercept[0])
        return self


class CCSProbe(LinearProbe):
    """Contrast-consistent search (Burns et al. 2022), unsupervised, on contrast pairs.

    ``X`` is [n, 2 * d]: the first half of each row is the activation of a statement asserting
    the concept, the second half that of its contrast statement. ``predict_proba`` returns
    ``(p(first) + 1 - p(second)) / 2`` for the positive class. The CCS loss does not see labels;
    ``y`` only orients the sign (flipped when the training accuracy is below one half), which
    is the usual way CCS is scored. ``coef_`` [d] and ``intercept_`` read one (uncentred)
    activation, centred at the mean of the two sides' training means.

    Args:
        n_restarts: random initialisations; the lowest final loss wins.
        n_epochs: full-batch AdamW steps.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        random_state: seed of the initialisations.
        device: torch device to fit on; ``None`` picks CUDA when present.
    """

    def __init__(
        self,
        n_restarts: int = 10,
        n_epochs: int = 1000,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.01,
        random_state: int = 0,
        device: str | None = None,
    ) -> None:
        self.n_restarts = n_restarts
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.device = device

    def fit(self, X: np.ndarray, y: np.ndarray) -> CCSProbe:
        """Fit on contrast pairs X [n, 2 * d]; y [n] (two values) orients the sign only."""
        X, labels = self._fit_readout(X, y)
        if X.shape[1] % 2:
            raise ProbeInputError(f"CCSProbe: X has {X.shape[1]} columns; pass pairs as [first | second], 2 * d wide")
        device = resolve_device(self.device)
        features = torch.tensor(X, dtype=torch.float32, device=device)
        half = X.shape[1] // 2
        readouts = fit_ccs_layers(
            features[None, :, :half],
            features[None, :, half:],
            n_restarts=self.n_restarts,
            n_epochs=self.n_epochs,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            generator=torch.Generator().manual_seed(self.random_state),
        )
        self.coef_ = readouts.coef[0].double().cpu().numpy()
        self.pair_means_ = readouts.pair_means[0].double().cpu().numpy()
        self.centred_intercept_ = float(readouts.intercept[0])
        if np.mean((self._pair_probability(X) > 0.5) == labels.numpy()) < 0.5:
            self.coef_ = -self.coef_
            self.centred_intercept_ = -self.centred_intercept_
        self.intercept_ = self.centred_intercept_ - float(self.pair_means_.mean(axis=0) @ self.coef_)
        return self

    def _pair_probability(self, X: np.ndarray) -> np.ndarray:
        half = X.shape[1] // 2
        first = (X[:, :half] - self.pair_means_[0]) @ self.coef_ + self.centred_intercept_
        second = (X[:, half:] - self.pair_means_[1]) @ self.coef_ + self.centred_intercept_
        p_first, p_second = 1.0 / (1.0 + np.exp(-first)), 1.0 / (1.0 + np.exp(-second))
        return 0.5 * (p_first + 1.0 - p_second)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logit of the pair probability, [n]; X is [n, 2 * d]."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        probability = np.clip(self._pair_probability(X), 1e-12, 1 - 1e-12)
        return np.log(probability) - np.log1p(-probability)
