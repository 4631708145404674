"""Probe estimators: scikit-learn conformance, planted directions, batched vs scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from probes.errors import NonFiniteActivationsError, SingleClassError
from probes.estimators import CCSProbe, LogisticProbe, MeanDifferenceProbe
from probes.layerwise import LayerwiseProbe

ODD_WIDTH = "CCS takes [first | second] pairs, so an odd number of columns is refused"
CCS_EXPECTED_FAILURES = {
    name: ODD_WIDTH
    for name in (
        "check_fit_score_takes_y",
        "check_dont_overwrite_parameters",
        "check_estimators_dtypes",
        "check_pipeline_consistency",
        "check_estimators_nan_inf",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_supervised_y_2d",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_fit2d_1feature",
        "check_dict_unchanged",
        "check_fit2d_predict1d",
    )
}


def expected_failures(estimator: object) -> dict[str, str]:
    return CCS_EXPECTED_FAILURES if isinstance(estimator, CCSProbe) else {}


@parametrize_with_checks(
    [LogisticProbe(), MeanDifferenceProbe(), CCSProbe(n_restarts=2, n_epochs=50)],
    expected_failed_checks=expected_failures,
)
def test_scikit_learn_estimator_checks(estimator: object, check: object) -> None:
    check(estimator)


def planted(n: int, layers: int, d: int, signal_layer: int, seed: int = 0):
    """Gaussian activations with the label written along axis 0 of one layer only."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    activations = rng.normal(size=(n, layers, d))
    activations[:, signal_layer, 0] += 3.0 * (2 * labels - 1)
    return activations, labels


@pytest.mark.parametrize("estimator", [LogisticProbe(), MeanDifferenceProbe()])
def test_layerwise_probe_recovers_planted_direction(estimator: object) -> None:
    activations, labels = planted(400, 3, 8, signal_layer=1)
    probe = LayerwiseProbe(estimator).fit(activations[:300], labels[:300])
    direction = probe.probe_for_layer(1).direction_
    assert abs(direction[0]) > 0.9
    accuracy = ((probe.predict_proba(activations[300:]) > 0.5) == labels[300:, None]).mean(axis=0)
    assert accuracy[1] > 0.9
    assert accuracy[0] < 0.7 and accuracy[2] < 0.7


def test_ccs_finds_the_pair_direction_without_labels() -> None:
    rng = np.random.default_rng(1)
    n, d = 200, 6
    truth = rng.integers(0, 2, n)
    first = rng.normal(size=(n, d))
    second = rng.normal(size=(n, d))
    first[:, 0] += 4.0 * (2 * truth - 1)
    second[:, 0] -= 4.0 * (2 * truth - 1)
    pairs = np.concatenate([first, second], axis=1)
    probe = CCSProbe(n_restarts=3, n_epochs=300, learning_rate=1e-2).fit(pairs, truth)
    assert abs(probe.direction_[0]) > 0.9
    assert probe.score(pairs, truth) > 0.95


def test_single_layer_and_layerwise_fits_agree() -> None:
    activations, labels = planted(200, 2, 5, signal_layer=0)
    single = LogisticProbe().fit(activations[:, 0], labels)
    layerwise = LayerwiseProbe(LogisticProbe()).fit(activations, labels)
    np.testing.assert_allclose(layerwise.coef_[0], single.coef_, rtol=1e-3, atol=1e-4)


def test_batched_logistic_matches_scikit_learn_within_one_point() -> None:
    rng = np.random.default_rng(2)
    n, layers, d = 600, 4, 20
    labels = rng.integers(0, 2, n)
    mixing = rng.normal(size=(layers, d, d))
    activations = np.einsum("nld,lde->nle", rng.normal(size=(n, layers, d)), mixing)
    activations += 0.4 * np.arange(1, layers + 1)[None, :, None] * (2 * labels - 1)[:, None, None]
    train, test = slice(0, 450), slice(450, None)
    batched = LayerwiseProbe(LogisticProbe(C=1.0)).fit(activations[train], labels[train])
    batched_accuracy = ((batched.predict_proba(activations[test]) > 0.5) == labels[test, None]).mean(0)
    for layer in range(layers):
        reference = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
        reference.fit(activations[train, layer], labels[train])
        assert abs(reference.score(activations[test, layer], labels[test]) - batched_accuracy[layer]) <= 0.01


def test_logistic_coefficients_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4)) * [1.0, 5.0, 0.1, 2.0] + [0.0, 3.0, -1.0, 0.0]
    y = (X @ [1.0, -0.2, 4.0, 0.5] + rng.normal(size=300) > 0).astype(int)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, tol=1e-10)).fit(X, y)
    probe = LogisticProbe(C=0.5, tol=1e-10).fit(X, y)
    scaler, model = reference
    np.testing.assert_allclose(probe.coef_, model.coef_[0] / scaler.scale_, rtol=1e-5)


def test_one_class_is_refused_with_a_named_error() -> None:
    activations = np.zeros((10, 2, 3))
    with pytest.raises(SingleClassError, match="one class"):
        LayerwiseProbe().fit(activations, np.ones(10))


def test_nan_activations_name_the_layer() -> None:
    activations, labels = planted(20, 3, 4, signal_layer=0)
    activations[5, 2, 1] = np.nan
    with pytest.raises(NonFiniteActivationsError, match="layer index 2"):
        LayerwiseProbe().fit(activations, labels)


def test_predict_on_other_width_is_refused() -> None:
    activations, labels = planted(40, 2, 4, signal_layer=0)
    probe = LayerwiseProbe().fit(activations, labels)
    with pytest.raises(ValueError, match="fitted on"):
        probe.predict_proba(np.zeros((3, 2, 5)))


@pytest.mark.parametrize(
    ("estimator", "name"),
    [(LogisticProbe(C=0), "C"), (LogisticProbe(max_iter=-1), "max_iter"), (LogisticProbe(tol="small"), "tol")],
)
def test_invalid_hyperparameters_raise_scikit_learns_error(estimator: LogisticProbe, name: str) -> None:
    activations, labels = planted(20, 2, 3, signal_layer=0)
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of LogisticProbe must be"):
        estimator.fit(activations[:, 0], labels)
    with pytest.raises(ValueError, match=f"'{name}' parameter of LogisticProbe"):
        LayerwiseProbe(estimator).fit(activations, labels)


def test_layerwise_refuses_an_estimator_that_is_not_a_probe() -> None:
    activations, labels = planted(20, 2, 3, signal_layer=0)
    with pytest.raises(InvalidParameterError, match="'estimator' parameter of LayerwiseProbe"):
        LayerwiseProbe(LogisticRegression()).fit(activations, labels)


def test_saturated_layer_does_not_stop_the_batched_newton_fit() -> None:
    """A layer whose probabilities saturate reaches a singular Hessian (its intercept is not
    penalised); it falls back to a gradient step and every other layer is fitted as if alone."""
    import torch

    from probes.batched_solvers import fit_logistic_layers

    generator = torch.Generator().manual_seed(0)
    n = 64
    labels = torch.ones(n)
    labels[: n // 2] = 0
    features = torch.randn(2, n, 3, generator=generator)
    features[1] = 0.0  # layer 1: constant activations, so only the intercept can move
    single_class = torch.ones(n)  # all positive: the intercept runs off until float32 saturates
    with pytest.warns(Warning):
        saturated = fit_logistic_layers(features, single_class, C=1.0, max_iter=60, tol=0.0)
    assert torch.isfinite(saturated.coef).all() and torch.isfinite(saturated.intercept).all()
    assert float(saturated.intercept[1]) > 15.0  # sigmoid(15) rounds to 1 in float32

    together = fit_logistic_layers(features, labels, C=1.0, max_iter=100, tol=1e-6)
    alone = fit_logistic_layers(features[:1], labels, C=1.0, max_iter=100, tol=1e-6)
    torch.testing.assert_close(together.coef[:1], alone.coef, rtol=1e-4, atol=1e-5)


def test_newton_steps_replace_unsolvable_systems_by_gradient_steps() -> None:
    import torch

    from probes.batched_solvers import newton_steps

    hessian = torch.eye(3, dtype=torch.float64).repeat(4, 1, 1) * 2.0
    hessian[1] = 0.0  # singular
    hessian[2, 0, 0] = float("nan")  # non-finite
    gradient = torch.tensor([[1.0, 2.0, 3.0]] * 4, dtype=torch.float64)
    active = torch.tensor([True, True, True, False])
    steps = newton_steps(hessian, gradient, active)
    torch.testing.assert_close(steps[0], -gradient[0] / 2)
    torch.testing.assert_close(steps[1], -gradient[1])
    torch.testing.assert_close(steps[2], -gradient[2])
    torch.testing.assert_close(steps[3], torch.zeros(3, dtype=torch.float64))


def test_batched_newton_fit_survives_an_explicit_thread_count() -> None:
    """torch 2.13's CPU LU solve fails on float64 systems a few hundred wide once a process has called
    ``torch.set_num_threads(2)`` (oneMKL DLASWP); the Newton steps are Cholesky solves, which do not."""
    import subprocess
    import sys

    script = (
        "import torch\n"
        "torch.set_num_threads(2)\n"
        "from probes.batched_solvers import fit_logistic_layers\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = torch.randn(3, 400, 300, generator=g)\n"
        "y = (x[0, :, 0] > 0).float()\n"
        "r = fit_logistic_layers(x, y, C=1.0, max_iter=5, tol=1e-4)\n"
        "assert torch.isfinite(r.coef).all()\n"
        "print('fitted')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "fitted" in done.stdout, done.stderr[-2000:]
