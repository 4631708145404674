"""One probe per layer, all layers fitted as one batched torch problem."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from probes.batched_solvers import resolve_device
from probes.errors import NonFiniteActivationsError, ProbeInputError
from probes.estimators import LinearProbe, LogisticProbe, encode_binary_labels


def check_activations(activations: np.ndarray, source: str) -> np.ndarray:
    """Validate activations [n, layers, width]; returns them as a float32 array.

    Raises:
        ProbeInputError: not three-dimensional or empty.
        NonFiniteActivationsError: NaN or infinite entries (names the first bad layer index).
    """
    array = np.asarray(activations, dtype=np.float32)
    if array.ndim != 3 or 0 in array.shape:
        raise ProbeInputError(f"{source}: activations must be [n, layers, d] and non-empty, got shape {array.shape}")
    finite = np.isfinite(array).all(axis=(0, 2))
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise NonFiniteActivationsError(
            f"{source}: activations at layer index {bad} contain NaN or inf "
            f"({int((~finite).sum())} layer(s) affected); recapture or drop those records"
        )
    return array


class LayerwiseProbe(BaseEstimator):  # type: ignore[misc, unused-ignore]  # sklearn ships no type hints
    """Fits ``estimator``'s kind of probe on every layer at once, through that kind's ``_fit_layers``.

    The single-layer probe and this wrapper share the kind's one fitting path; this wrapper hands
    it all layers as one float32 [layers, n, d] batch.

    Args:
        estimator: an unfitted ``LogisticProbe``, ``MeanDifferenceProbe`` or ``CCSProbe`` whose
            hyperparameters (and device) are used for every layer; ``None`` is ``LogisticProbe()``.

    Fitted attributes:
        coef_: [layers, d] per-layer weights (logits per activation unit).
        intercept_: [layers] per-layer biases.
        classes_: [2] label values; ``classes_[1]`` is the positive class.
        n_features_in_: width d of each layer's input (CCS: 2 * d).
        n_iter_: [layers] (logistic only) Newton iterations run, one count shared by all layers.
        pair_means_: [layers, 2, d] (CCS only) the per-side centring means.
        centred_intercept_: [layers] (CCS only) biases on centred pairs.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"estimator": [LinearProbe, None]}

    def __init__(self, estimator: LinearProbe | None = None) -> None:
        self.estimator = estimator

    def _probe_template(self) -> LinearProbe:
        return LogisticProbe() if self.estimator is None else self.estimator

    def fit(self, X: np.ndarray, y: np.ndarray) -> LayerwiseProbe:
        """Fit on X [n, layers, d] (CCS: [n, layers, 2 * d] pairs) and labels y [n].

        Raises:
            sklearn.utils._param_validation.InvalidParameterError: ``estimator`` is not a probe,
                or one of its hyperparameters is outside its constraints.
        """
        self._validate_params()
        template = self._probe_template()
        template._validate_params()
        X = check_activations(X, "LayerwiseProbe.fit")
        self.classes_, encoded = encode_binary_labels(np.asarray(y), "LayerwiseProbe")
        device = resolve_device(template.device)
        features = torch.from_numpy(np.ascontiguousarray(X.transpose(1, 0, 2))).to(device)
        fitted = template._fit_layers(features, torch.from_numpy(encoded).to(device))
        for name in template._layer_attributes:
            setattr(self, name, fitted[name])
        self.n_features_in_ = X.shape[2]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Positive-class probability [n, layers] for X [n, layers, d] (CCS: pairs)."""
        check_is_fitted(self)
        X = check_activations(X, "LayerwiseProbe.predict_proba")
        if X.shape[1:] != (self.coef_.shape[0], self.n_features_in_):
            raise ProbeInputError(
                f"LayerwiseProbe.predict_proba: X is [n, {X.shape[1]}, {X.shape[2]}] but the probe "
                f"was fitted on [n, {self.coef_.shape[0]}, {self.n_features_in_}]"
            )
        template = self._probe_template()
        fitted = {name: getattr(self, name) for name in template._layer_attributes}
        return template._layer_probability(X.astype(np.float64), fitted)

    def probe_for_layer(self, layer_index: int) -> LinearProbe:
        """The fitted single-layer probe at ``layer_index`` (an index into the fitted layers)."""
        check_is_fitted(self)
        probe: LinearProbe = clone(self._probe_template())
        for name in probe._layer_attributes:
            values = getattr(self, name)[layer_index]
            setattr(probe, name, values.copy() if values.ndim else values.item())
        probe.classes_ = self.classes_
        probe.n_features_in_ = self.n_features_in_
        return probe
