"""Single-layer probes with scikit-learn's estimator API: logistic, mean difference and CCS.

Each probe is a linear readout ``decision(x) = x @ coef_ + intercept_`` (logits) of one layer's
activations ``x`` [n, d]. Every probe kind has one fitting path, ``_fit_layers``, which fits all
layers at once with the batched torch solvers (``probes.batched_solvers``); ``fit`` runs it on one
layer and ``probes.layerwise.LayerwiseProbe`` on all of them. The logistic and mean-difference
kinds also fit from a cache streamed chunk-row by chunk-row (``_fit_streamed``:
``probes.streamed_solvers``), for caches larger than memory. Labels may be any two values;
``classes_[1]`` is the positive class (the concept: stereotyped, immoral, toxic) whose probability
is reported. Hyperparameters are checked at fit against ``_parameter_constraints``
(scikit-learn's ``InvalidParameterError``, a ``ValueError`` naming the parameter).
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any, ClassVar, Self

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import Tags
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from probes.batched_solvers import (
    fit_ccs_layers,
    fit_logistic_layers,
    fit_mean_difference_layers,
    resolve_device,
)
from probes.errors import ProbeInputError, SingleClassError
from probes.streamed_solvers import (
    FitTargets,
    FixedDirections,
    StreamingSettings,
    StreamReadouts,
    fit_logistic_stream,
    fit_mean_difference_stream,
)
from probes.streaming import StreamedActivations


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


def ccs_pair_probability(
    pairs: np.ndarray, coef: np.ndarray, centred_intercept: np.ndarray, pair_means: np.ndarray
) -> np.ndarray:
    """CCS positive-class probability ``(p(first) + 1 - p(second)) / 2`` per record and layer.

    Args:
        pairs: [n, layers, 2 * d] contrast pairs as ``[first | second]`` (raw activations).
        coef: [layers, d] weights on centred activations (logits per activation unit).
        centred_intercept: [layers] biases on centred activations (logits).
        pair_means: [layers, 2, d] centring means of the first and of the second statements.

    Returns:
        [n, layers] probabilities.
    """
    half = pairs.shape[2] // 2
    first = np.einsum("nld,ld->nl", pairs[:, :, :half] - pair_means[:, 0], coef)
    second = np.einsum("nld,ld->nl", pairs[:, :, half:] - pair_means[:, 1], coef)
    p_first = 1.0 / (1.0 + np.exp(-(first + centred_intercept)))
    p_second = 1.0 / (1.0 + np.exp(-(second + centred_intercept)))
    probability: np.ndarray = 0.5 * (p_first + 1.0 - p_second)
    return probability


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Shared fit and prediction side of the linear probes (fitted ``coef_`` [d] and ``intercept_``).

    A probe kind implements ``_fit_layers``, its one fitting path over [layers, n, d], and names
    the fitted attributes that returns in ``_layer_attributes``; ``fit`` runs it on one layer.
    ``_fit_dtype`` is the torch dtype a single-layer fit solves in. A kind that reads single
    activations (``_streamable``) also implements ``_fit_streamed``, its fit from a streamed cache.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"device": [str, None]}
    _layer_attributes: ClassVar[tuple[str, ...]] = ("coef_", "intercept_")
    _fit_dtype: ClassVar[torch.dtype] = torch.float64
    _streamable: ClassVar[bool] = True
    device: str | None

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, X: np.ndarray, y: np.ndarray) -> Self:
        """Fit on activations X [n, d] (CCS: pairs [n, 2 * d]) and two-valued labels y [n].

        Raises:
            sklearn.utils._param_validation.InvalidParameterError: a hyperparameter outside its
                ``_parameter_constraints`` (a ``ValueError`` naming the parameter).
        """
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=False)
        y = column_or_1d(y, warn=True)
        self.classes_, encoded = encode_binary_labels(y, type(self).__name__)
        device = resolve_device(self.device)
        features = torch.tensor(X, dtype=self._fit_dtype, device=device)[None]
        fitted = self._fit_layers(features, torch.from_numpy(encoded).to(device))
        for name in self._layer_attributes:
            setattr(self, name, fitted[name][0] if fitted[name].ndim > 1 else fitted[name][0].item())
        return self

    def _fit_layers(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
        """Fit every layer at once: the one fitting path of this probe kind.

        Args:
            features: [layers, n, d] activations on the device to fit on (CCS: [first | second] pairs).
            labels: [n] in {0, 1} (float32, same device).

        Returns:
            Each name of ``_layer_attributes`` -> its float64 (``n_iter_``: int) values with a
            leading layers axis: ``coef_`` [layers, d], ``intercept_`` [layers], ...
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement _fit_layers")

    def _fit_streamed(
        self,
        view: StreamedActivations,
        targets: FitTargets,
        settings: StreamingSettings,
        device: torch.device,
        fixed: FixedDirections | None = None,
    ) -> StreamReadouts:
        """Fit ``targets.models`` probes of every layer of ``view`` from passes over its chunk-rows,
        and Platt-scale ``fixed`` directions on the record sample (their readouts follow).

        Raises:
            ProbeInputError: the kind has no streamed fit.
        """
        raise ProbeInputError(
            f'{type(self).__name__} has no streamed fit; fit it in memory ([probe] memory = "in-memory")'
        )

    @classmethod
    def _streamed_attributes(cls, readouts: StreamReadouts, model: int) -> dict[str, np.ndarray]:
        """The fitted attributes (``_layer_attributes``, with a leading layers axis) of one model of ``readouts``."""
        return {"coef_": readouts.coef[model], "intercept_": readouts.intercept[model]}

    @classmethod
    def _layer_probability(cls, X: np.ndarray, fitted: Mapping[str, np.ndarray]) -> np.ndarray:
        """Positive-class probability [n, layers] of X [n, layers, d] under per-layer ``fitted`` attributes."""
        logits = np.einsum("nld,ld->nl", X, fitted["coef_"]) + fitted["intercept_"]
        probability: np.ndarray = 1.0 / (1.0 + np.exp(-logits))
        return probability

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


class LogisticProbe(LinearProbe):
    """L2-regularised logistic regression on standardised activations.

    Args:
        C: inverse regularisation strength (scikit-learn's convention), > 0.
        max_iter: Newton iterations at most, >= 0.
        tol: convergence threshold on the largest gradient entry, >= 0.
        device: torch device to fit on; ``None`` picks CUDA when present.

    Fitted attributes (besides ``coef_``, ``intercept_``, ``classes_``):
        n_iter_: Newton iterations run (one count for all layers of a batched fit).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **LinearProbe._parameter_constraints,
        "C": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
    }
    _layer_attributes: ClassVar[tuple[str, ...]] = ("coef_", "intercept_", "n_iter_")

    def __init__(self, C: float = 1.0, max_iter: int = 100, tol: float = 1e-4, device: str | None = None) -> None:
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.device = device

    def _fit_layers(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
        readouts = fit_logistic_layers(features, labels, C=self.C, max_iter=self.max_iter, tol=self.tol)
        return {
            "coef_": readouts.coef.double().cpu().numpy(),
            "intercept_": readouts.intercept.double().cpu().numpy(),
            "n_iter_": np.full(features.shape[0], readouts.n_iter),
        }

    def _fit_streamed(
        self,
        view: StreamedActivations,
        targets: FitTargets,
        settings: StreamingSettings,
        device: torch.device,
        fixed: FixedDirections | None = None,
    ) -> StreamReadouts:
        """Mini-batch steps on the same objective (``probes.streamed_solvers.fit_logistic_stream``);
        ``max_iter`` and ``tol`` are unused, ``settings.epochs`` passes are run."""
        return fit_logistic_stream(view, targets, C=self.C, settings=settings, device=device, fixed=fixed)

    @classmethod
    def _streamed_attributes(cls, readouts: StreamReadouts, model: int) -> dict[str, np.ndarray]:
        return {
            **super()._streamed_attributes(readouts, model),
            "n_iter_": np.full(readouts.coef.shape[1], readouts.passes),
        }


class MeanDifferenceProbe(LinearProbe):
    """Direction ``mean(x | positive) - mean(x | negative)``, Platt-scaled to probabilities.

    Args:
        device: torch device to fit on; ``None`` picks CUDA when present.
    """

    def __init__(self, device: str | None = None) -> None:
        self.device = device

    def _fit_layers(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
        readouts = fit_mean_difference_layers(features, labels)
        return {"coef_": readouts.coef.double().cpu().numpy(), "intercept_": readouts.intercept.double().cpu().numpy()}

    def _fit_streamed(
        self,
        view: StreamedActivations,
        targets: FitTargets,
        settings: StreamingSettings,
        device: torch.device,
        fixed: FixedDirections | None = None,
    ) -> StreamReadouts:
        """Class moments in one pass, Platt scaling on the record sample
        (``probes.streamed_solvers.fit_mean_difference_stream``)."""
        return fit_mean_difference_stream(view, targets, settings, device, fixed)


class CCSProbe(LinearProbe):
    """Contrast-consistent search (Burns et al. 2022), unsupervised, on contrast pairs.

    ``X`` is [n, 2 * d]: the first half of each row is the activation of a statement asserting
    the concept, the second half that of its contrast statement. ``predict_proba`` returns
    ``(p(first) + 1 - p(second)) / 2`` for the positive class. The CCS loss does not see labels;
    ``y`` only orients the sign (flipped when the training accuracy is below one half), which
    is the usual way CCS is scored. ``coef_`` [d] and ``intercept_`` read one (uncentred)
    activation, centred at the mean of the two sides' training means.

    Args:
        n_restarts: random initialisations, >= 1; the lowest final loss wins.
        n_epochs: full-batch AdamW steps, >= 1.
        learning_rate: AdamW learning rate, > 0.
        weight_decay: AdamW weight decay, >= 0.
        random_state: seed of the initialisations, >= 0.
        device: torch device to fit on; ``None`` picks CUDA when present.

    Fitted attributes (besides ``coef_``, ``intercept_``, ``classes_``):
        pair_means_: [2, d] training means of the first and of the second statements.
        centred_intercept_: bias (logits) on activations centred with ``pair_means_``.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **LinearProbe._parameter_constraints,
        "n_restarts": [Interval(Integral, 1, None, closed="left")],
        "n_epochs": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    }
    _layer_attributes: ClassVar[tuple[str, ...]] = ("coef_", "intercept_", "pair_means_", "centred_intercept_")
    _fit_dtype: ClassVar[torch.dtype] = torch.float32
    _streamable: ClassVar[bool] = False

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

    def _fit_layers(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
        """CCS on every layer at once, each layer's sign oriented to agree with ``labels``.

        Raises:
            ProbeInputError: an odd width (pairs are [first | second], 2 * d wide).
        """
        if features.shape[2] % 2:
            raise ProbeInputError(
                f"CCSProbe: pairs are {features.shape[2]} wide, an odd width; "
                "pass pairs as [first | second], 2 * d wide"
            )
        half = features.shape[2] // 2
        readouts = fit_ccs_layers(
            features[:, :, :half],
            features[:, :, half:],
            n_restarts=self.n_restarts,
            n_epochs=self.n_epochs,
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            generator=torch.Generator().manual_seed(self.random_state),
        )
        pair_means = readouts.pair_means.double().cpu().numpy()
        coef = readouts.coef.double().cpu().numpy()
        centred_intercept = readouts.intercept.double().cpu().numpy()
        pairs = features.double().cpu().numpy().transpose(1, 0, 2)
        probability = ccs_pair_probability(pairs, coef, centred_intercept, pair_means)
        agreement = (probability > 0.5) == labels.cpu().numpy()[:, None]
        sign = np.where(agreement.mean(axis=0) < 0.5, -1.0, 1.0)
        coef = coef * sign[:, None]
        centred_intercept = centred_intercept * sign
        return {
            "coef_": coef,
            "intercept_": centred_intercept - np.einsum("ld,ld->l", pair_means.mean(axis=1), coef),
            "pair_means_": pair_means,
            "centred_intercept_": centred_intercept,
        }

    @classmethod
    def _layer_probability(cls, X: np.ndarray, fitted: Mapping[str, np.ndarray]) -> np.ndarray:
        """Pair probability [n, layers] of pairs X [n, layers, 2 * d]."""
        return ccs_pair_probability(X, fitted["coef_"], fitted["centred_intercept_"], fitted["pair_means_"])

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logit of the pair probability, [n]; X is [n, 2 * d]."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        fitted = {name: np.asarray(getattr(self, name))[None] for name in self._layer_attributes}
        probability = np.clip(self._layer_probability(X[:, None], fitted)[:, 0], 1e-12, 1 - 1e-12)
        return np.log(probability) - np.log1p(-probability)
