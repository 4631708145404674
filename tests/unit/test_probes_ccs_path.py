"""CCS has one fitting path: the single-layer probe and the layerwise wrapper agree exactly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from probes.errors import ProbeInputError
from probes.estimators import CCSProbe, ccs_pair_probability
from probes.layerwise import LayerwiseProbe

FITTED = ("coef_", "intercept_", "pair_means_", "centred_intercept_")
# Fitted attributes and probabilities are float64 arithmetic on the same inputs (checked: predict_proba
# returns float64), so the comparisons below hold at float64 precision (rtol 1e-12) on any CPU.


def contrast_pairs(n: int = 120, layers: int = 3, d: int = 4, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pairs [n, layers, 2 * d] float32 whose first column separates the two statements (weaker with depth)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    first = rng.normal(size=(n, layers, d))
    second = rng.normal(size=(n, layers, d))
    strength = (3.0 - np.arange(layers))[None, :] * (2 * truth - 1)[:, None]
    first[:, :, 0] += strength
    second[:, :, 0] -= strength
    return np.concatenate([first, second], axis=2).astype(np.float32), truth


def ccs() -> CCSProbe:
    return CCSProbe(n_restarts=2, n_epochs=100, learning_rate=1e-2, random_state=3)


def test_single_layer_fit_is_the_layerwise_fit_of_one_layer() -> None:
    pairs, truth = contrast_pairs()
    for layer in range(pairs.shape[1]):
        single = ccs().fit(pairs[:, layer], truth)
        layerwise = LayerwiseProbe(ccs()).fit(pairs[:, [layer]], truth)
        for name in FITTED:
            np.testing.assert_array_equal(getattr(layerwise, name)[0], getattr(single, name), err_msg=name)
        np.testing.assert_allclose(
            layerwise.predict_proba(pairs[:, [layer]])[:, 0], single.predict_proba(pairs[:, layer])[:, 1], rtol=1e-12
        )


def test_probe_for_layer_reproduces_the_layerwise_probabilities() -> None:
    pairs, truth = contrast_pairs()
    layerwise = LayerwiseProbe(ccs()).fit(pairs, truth)
    probabilities = layerwise.predict_proba(pairs)
    for layer in range(pairs.shape[1]):
        probe = layerwise.probe_for_layer(layer)
        assert isinstance(probe, CCSProbe)
        np.testing.assert_allclose(probe.predict_proba(pairs[:, layer])[:, 1], probabilities[:, layer], rtol=1e-12)


def test_labels_only_orient_the_sign() -> None:
    pairs, truth = contrast_pairs()
    fitted = LayerwiseProbe(ccs()).fit(pairs, truth)
    flipped = LayerwiseProbe(ccs()).fit(pairs, 1 - truth)
    np.testing.assert_array_equal(flipped.pair_means_, fitted.pair_means_)
    for name in ("coef_", "intercept_", "centred_intercept_"):
        np.testing.assert_array_equal(getattr(flipped, name), -getattr(fitted, name), err_msg=name)
    accuracy = ((fitted.predict_proba(pairs) > 0.5) == truth[:, None]).mean(axis=0)
    assert (accuracy >= 0.5).all()


def test_intercept_reads_uncentred_activations() -> None:
    pairs, truth = contrast_pairs()
    fitted = LayerwiseProbe(ccs()).fit(pairs, truth)
    centre = fitted.pair_means_.mean(axis=1)
    np.testing.assert_allclose(
        fitted.intercept_, fitted.centred_intercept_ - np.einsum("ld,ld->l", centre, fitted.coef_), rtol=1e-12
    )
    probability = ccs_pair_probability(
        pairs.astype(np.float64), fitted.coef_, fitted.centred_intercept_, fitted.pair_means_
    )
    np.testing.assert_allclose(fitted.predict_proba(pairs), probability, rtol=1e-12)


def test_odd_width_is_refused_on_both_paths() -> None:
    pairs, truth = contrast_pairs()
    with pytest.raises(ProbeInputError, match="odd width"):
        ccs().fit(pairs[:, 0, :-1], truth)
    with pytest.raises(ProbeInputError, match="odd width"):
        LayerwiseProbe(ccs()).fit(pairs[:, :, :-1], truth)


@pytest.mark.parametrize(
    ("parameters", "name"),
    [
        ({"n_restarts": 0}, "n_restarts"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"random_state": -1}, "random_state"),
    ],
)
def test_ccs_hyperparameters_are_validated_on_both_paths(parameters: dict[str, float], name: str) -> None:
    pairs, truth = contrast_pairs(n=20, layers=1)
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of CCSProbe"):
        CCSProbe(**parameters).fit(pairs[:, 0], truth)
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of CCSProbe"):
        LayerwiseProbe(CCSProbe(**parameters)).fit(pairs, truth)
