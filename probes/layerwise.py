"""One probe per layer, all layers fitted as one batched torch problem, in memory or streamed from a cache."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from probes.batched_solvers import resolve_device
from probes.errors import NonFiniteActivationsError, ProbeInputError
from probes.estimators import LinearProbe, LogisticProbe, encode_binary_labels
from probes.streamed_solvers import FitTargets, StreamingSettings, stream_probabilities
from probes.streaming import StreamedActivations


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
    it all layers as one float32 [layers, n, d] batch. Given a
    :class:`~probes.streaming.StreamedActivations` view instead of an array, it fits the kind's
    streamed path (``_fit_streamed``: ``probes.streamed_solvers``), reading the cache chunk-row by
    chunk-row in bounded memory; ``predict_proba`` streams the same way.

    Args:
        estimator: an unfitted ``LogisticProbe``, ``MeanDifferenceProbe`` or ``CCSProbe`` whose
            hyperparameters (and device) are used for every layer; ``None`` is ``LogisticProbe()``.
        streaming: how a streamed fit runs; ``None`` is ``StreamingSettings()``. Unused in memory.

    Fitted attributes:
        coef_: [layers, d] per-layer weights (logits per activation unit).
        intercept_: [layers] per-layer biases.
        classes_: [2] label values; ``classes_[1]`` is the positive class.
        n_features_in_: width d of each layer's input (CCS: 2 * d).
        n_iter_: [layers] (logistic only) Newton iterations run, one count shared by all layers
            (streamed: the passes over the cache).
        pair_means_: [layers, 2, d] (CCS only) the per-side centring means.
        centred_intercept_: [layers] (CCS only) biases on centred pairs.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "estimator": [LinearProbe, None],
        "streaming": [StreamingSettings, None],
    }

    def __init__(self, estimator: LinearProbe | None = None, streaming: StreamingSettings | None = None) -> None:
        self.estimator = estimator
        self.streaming = streaming

    def _probe_template(self) -> LinearProbe:
        return LogisticProbe() if self.estimator is None else self.estimator

    def fit(self, X: np.ndarray | StreamedActivations, y: np.ndarray) -> LayerwiseProbe:
        """Fit on X [n, layers, d] (CCS: [n, layers, 2 * d] pairs), or a streamed view, and labels y [n].

        Raises:
            sklearn.utils._param_validation.InvalidParameterError: ``estimator`` is not a probe,
                or one of its hyperparameters is outside its constraints.
            ProbeInputError: a streamed view of another number of records than ``y``, or a kind
                without a streamed fit (CCS).
        """
        self._validate_params()
        template = self._probe_template()
        template._validate_params()
        self.classes_, encoded = encode_binary_labels(np.asarray(y), "LayerwiseProbe")
        device = resolve_device(template.device)
        if isinstance(X, StreamedActivations):
            if X.n != len(encoded):
                raise ProbeInputError(f"LayerwiseProbe.fit: {X.source} streams {X.n} records, y holds {len(encoded)}")
            settings = self.streaming or StreamingSettings()
            readouts = template._fit_streamed(X, FitTargets.everyone(encoded), settings, device)
            for name, values in template._streamed_attributes(readouts, 0).items():
                setattr(self, name, values)
            self.n_features_in_ = X.width
            return self
        X = check_activations(X, "LayerwiseProbe.fit")
        features = torch.from_numpy(np.ascontiguousarray(X.transpose(1, 0, 2))).to(device)
        fitted = template._fit_layers(features, torch.from_numpy(encoded).to(device))
        for name in template._layer_attributes:
            setattr(self, name, fitted[name])
        self.n_features_in_ = X.shape[2]
        return self

    def predict_proba(self, X: np.ndarray | StreamedActivations) -> np.ndarray:
        """Positive-class probability [n, layers] for X [n, layers, d] (CCS: pairs) or a streamed view.

        Raises:
            ProbeInputError: X of another shape than the probe was fitted on, or a streamed view
                given to a CCS probe (pairs are not streamed).
        """
        check_is_fitted(self)
        template = self._probe_template()
        if isinstance(X, StreamedActivations):
            self._check_shape(X.shape)
            if not template._streamable:
                raise ProbeInputError(f"LayerwiseProbe.predict_proba: {type(template).__name__} reads pairs, no stream")
            return stream_probabilities(X, self.coef_[None], self.intercept_[None])[0]
        X = check_activations(X, "LayerwiseProbe.predict_proba")
        self._check_shape(X.shape)
        fitted = {name: getattr(self, name) for name in template._layer_attributes}
        return template._layer_probability(X.astype(np.float64), fitted)

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if tuple(shape[1:]) != (self.coef_.shape[0], self.n_features_in_):
            raise ProbeInputError(
                f"LayerwiseProbe.predict_proba: X is [n, {shape[1]}, {shape[2]}] but the probe "
                f"was fitted on [n, {self.coef_.shape[0]}, {self.n_features_in_}]"
            )

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
