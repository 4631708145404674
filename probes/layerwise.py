"""One probe per layer, all layers fitted as one batched torch problem."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from probes.batched_solvers import (
    CCSReadouts,
    LayerReadouts,
    fit_ccs_layers,
    fit_logistic_layers,
    fit_mean_difference_layers,
    resolve_device,
)
from probes.errors import NonFiniteActivationsError, ProbeInputError
from probes.estimators import (
    CCSProbe,
    LinearProbe,
    LogisticProbe,
    MeanDifferenceProbe,
    encode_binary_labels,
)


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
    """Fits ``estimator``'s kind of probe on every layer at once.

    Args:
        estimator: an unfitted ``LogisticProbe``, ``MeanDifferenceProbe`` or ``CCSProbe`` whose
            hyperparameters (and device) are used for every layer.

    Fitted attributes:
        coef_: [layers, d] per-layer weights (logits per activation unit).
        intercept_: [layers] per-layer biases.
        classes_: [2] label values; ``classes_[1]`` is the positive class.
        pair_means_: [layers, 2, d] (CCS only) the per-side centring means.
        centred_intercept_: [layers] (CCS only) biases on centred pairs.
    """

    def __init__(self, estimator: LinearProbe | None = None) -> None:
        self.estimator = estimator

    def _probe_template(self) -> LinearProbe:
        template = LogisticProbe() if self.estimator is None else self.estimator
        if not isinstance(template, (LogisticProbe, MeanDifferenceProbe, CCSProbe)):
            raise ProbeInputError(
                f"LayerwiseProbe: estimator {template!r} is not a LogisticProbe, MeanDifferenceProbe or CCSProbe"
            )
        return template

    def fit(self, X: np.ndarray, y: np.ndarray) -> LayerwiseProbe:
        """Fit on X [n, layers, d] (CCS: [n, layers, 2 * d] pairs) and labels y [n]."""
        template = self._probe_template()
        X = check_activations(X, "LayerwiseProbe.fit")
        self.classes_, encoded = encode_binary_labels(np.asarray(y), "LayerwiseProbe")
        device = resolve_device(template.device)
        features = torch.from_numpy(np.ascontiguousarray(X.transpose(1, 0, 2))).to(device)
        labels = torch.from_numpy(encoded).to(device)
        readouts: LayerReadouts | CCSReadouts
        if isinstance(template, LogisticProbe):
            readouts = fit_logistic_layers(features, labels, C=template.C, max_iter=template.max_iter, tol=template.tol)
        elif isinstance(template, MeanDifferenceProbe):
            readouts = fit_mean_difference_layers(features, labels)
        else:
            readouts = self._fit_ccs(template, features, labels)
        self.coef_ = readouts.coef.double().cpu().numpy()
        self.intercept_ = readouts.intercept.double().cpu().numpy()
        self.n_features_in_ = X.shape[2]
        return self

    def _fit_ccs(self, template: CCSProbe, features: torch.Tensor, labels: torch.Tensor) -> CCSReadouts:
        if features.shape[2] % 2:
            raise ProbeInputError(
                f"LayerwiseProbe(CCSProbe): width {features.shape[2]} is odd; pass pairs as "
                "[first | second], 2 * d wide"
            )
        half = features.shape[2] // 2
        readouts = fit_ccs_layers(
            features[:, :, :half],
            features[:, :, half:],
            n_restarts=template.n_restarts,
            n_epochs=template.n_epochs,
            learning_rate=template.learning_rate,
            weight_decay=template.weight_decay,
            generator=torch.Generator().manual_seed(template.random_state),
        )
        self.pair_means_ = readouts.pair_means.double().cpu().numpy()
        self.centred_intercept_ = readouts.intercept.double().cpu().numpy()
        coef = readouts.coef.double().cpu().numpy()
        pairs = features.double().cpu().numpy().transpose(1, 0, 2)
        agreement = (self._pair_probability(pairs, coef) > 0.5) == labels.cpu().numpy()[:, None]
        sign = np.where(agreement.mean(axis=0) < 0.5, -1.0, 1.0)
        self.centred_intercept_ = self.centred_intercept_ * sign
        coef = coef * sign[:, None]
        intercept = self.centred_intercept_ - np.einsum("ld,ld->l", self.pair_means_.mean(axis=1), coef)
        return CCSReadouts(
            coef=torch.from_numpy(coef),
            intercept=torch.from_numpy(intercept),
            pair_means=readouts.pair_means,
            loss=readouts.loss,
        )

    def _pair_probability(self, pairs: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """CCS pair probability [n, layers] for pairs [n, layers, 2 * d]."""
        half = pairs.shape[2] // 2
        first = np.einsum("nld,ld->nl", pairs[:, :, :half] - self.pair_means_[:, 0], coef)
        second = np.einsum("nld,ld->nl", pairs[:, :, half:] - self.pair_means_[:, 1], coef)
        p_first = 1.0 / (1.0 + np.exp(-(first + self.centred_intercept_)))
        p_second = 1.0 / (1.0 + np.exp(-(second + self.centred_intercept_)))
        probability: np.ndarray = 0.5 * (p_first + 1.0 - p_second)
        return probability

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Positive-class probability [n, layers] for X [n, layers, d] (CCS: pairs)."""
        check_is_fitted(self)
        X = check_activations(X, "LayerwiseProbe.predict_proba")
        if X.shape[1:] != (self.coef_.shape[0], self.n_features_in_):
            raise ProbeInputError(
                f"LayerwiseProbe.predict_proba: X is [n, {X.shape[1]}, {X.shape[2]}] but the probe "
                f"was fitted on [n, {self.coef_.shape[0]}, {self.n_features_in_}]"
            )
        if hasattr(self, "pair_means_"):
            return self._pair_probability(X.astype(np.float64), self.coef_)
        logits = np.einsum("nld,ld->nl", X.astype(np.float64), self.coef_) + self.intercept_
        probability: np.ndarray = 1.0 / (1.0 + np.exp(-logits))
        return probability

    def probe_for_layer(self, layer_index: int) -> LinearProbe:
        """The fitted single-layer probe at ``layer_index`` (an index into the fitted layers)."""
        check_is_fitted(self)
        probe: LinearProbe = clone(self._probe_template())
        probe.coef_ = self.coef_[layer_index].copy()
        probe.intercept_ = float(self.intercept_[layer_index])
        probe.classes_ = self.classes_
        if hasattr(self, "pair_means_"):
            probe.pair_means_ = self.pair_means_[layer_index].copy()
            probe.centred_intercept_ = float(self.centred_intercept_[layer_index])
            probe.n_features_in_ = 2 * self.coef_.shape[1]
        else:
            probe.n_features_in_ = self.coef_.shape[1]
        return probe
