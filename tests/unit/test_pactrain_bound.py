"""The PAC-Bayes training bound's terms against direct computations.

Upstream terms: the block marked "Copy from Auto-Tune" in Avra98/prob_prune @
8fc04fadc95233531a1c0a0a561f365d87dd5145, utility/prune_pac.py:
- ``weight_decay_mulb``: Σ_l ‖w_l - w0_l‖² e^{-2 b_l};
- ``get_kl_term_layer_pb``: ½[Σ_l e^{-2b_l} Σ_{i∈l} e^{2p_i} - (2Σp - 2Σ_l b_l t_l + d) + wdecay];
- ``prune_by_noise_trainable_prior``: gamma1 = K^-1 (2 (kl + 60 + 3L) / n / 3)^0.5 clipped to
  [0.5, 10]; kl_loss = 3 K² gamma1 / 2 + (kl + 60 + 3L) / n / gamma1;
- ``compute_K_sample``: x starts at the previous knot's K (first 1e-3) and is multiplied by 1.1
  while ``min(func_sum(x, gamma_grid, ...)) < 0``, on 10 log-spaced gammas of [0.5, 10] and
  prior scales exp(linspace(-6, -2.5, 8)); the K list is then made non-decreasing;
- ``fun_K_auto``: linear interpolation between the knots.
The expected values below are computed here, in numpy float64, from those definitions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.pactrain.bound import (
    BoundReport,
    bound_terms,
    estimate_k_curve,
    gamma_grid,
    posterior_prior_kl,
    prior_scales,
    require_non_vacuous,
    search_k,
    weight_distance_term,
)
from workbench.pactrain.config import BoundSettings, PACTrainError

SHAPES = {"layer.weight": (5, 3), "layer.bias": (5,), "head.weight": (2, 5)}


def _random_state(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weights = {name: torch.randn(shape, generator=generator) for name, shape in SHAPES.items()}
    initial = {name: torch.randn(shape, generator=generator) * 0.3 for name, shape in SHAPES.items()}
    n_weights = sum(math.prod(shape) for shape in SHAPES.values())
    p = torch.randn(n_weights, generator=generator) * 0.5 - 2.0
    b = torch.randn(len(SHAPES), generator=generator) * 0.5 - 1.5
    return weights, initial, p, b


def _diagonal_gaussian_kl(mean_q: np.ndarray, std_q: np.ndarray, mean_p: np.ndarray, std_p: np.ndarray) -> float:
    """KL(N(mean_q, diag std_q²) || N(mean_p, diag std_p²)) by the textbook closed form, float64."""
    return float(np.sum(np.log(std_p / std_q) + (std_q**2 + (mean_q - mean_p) ** 2) / (2 * std_p**2) - 0.5))


def test_kl_matches_the_closed_form_of_two_diagonal_gaussians() -> None:
    weights, initial, p, b = _random_state()
    mean_q = np.concatenate([weights[name].double().numpy().ravel() for name in SHAPES])
    mean_p = np.concatenate([initial[name].double().numpy().ravel() for name in SHAPES])
    std_q = np.exp(p.double().numpy())
    std_p = np.concatenate(
        [np.full(math.prod(shape), math.exp(float(b[index]))) for index, shape in enumerate(SHAPES.values())]
    )
    expected = _diagonal_gaussian_kl(mean_q, std_q, mean_p, std_p)
    kl = posterior_prior_kl(weights, initial, p, b)
    assert kl.dtype == torch.float64
    assert float(kl) == pytest.approx(expected, rel=1e-5)


def test_kl_is_zero_when_the_posterior_is_the_prior() -> None:
    weights, _, _, b = _random_state()
    sizes = [math.prod(shape) for shape in SHAPES.values()]
    p = torch.repeat_interleave(b, torch.tensor(sizes))
    assert float(posterior_prior_kl(weights, weights, p, b)) == pytest.approx(0.0, abs=1e-6)


def test_weight_distance_term_is_upstream_weight_decay_mulb() -> None:
    weights, initial, _, b = _random_state()
    expected = sum(
        float(np.sum((weights[name].double().numpy() - initial[name].double().numpy()) ** 2))
        * math.exp(-2 * float(b[index]))
        for index, name in enumerate(SHAPES)
    )
    assert float(weight_distance_term(weights, initial, b)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("kl", "k", "clipped"), [(800.0, 0.3, False), (3.0, 0.01, True), (1e6, 0.05, True)])
def test_gamma_and_complexity_follow_the_auto_tune_formula(kl: float, k: float, clipped: bool) -> None:
    settings = BoundSettings()
    n_tensors, n = 6, 1257
    complexity_constant = kl + 60 + 3 * n_tensors
    raw_gamma = (2 * complexity_constant / n / 3) ** 0.5 / k
    gamma = min(max(raw_gamma, 0.5), 10.0)
    assert (gamma != raw_gamma) is clipped
    expected = 3 * k**2 * gamma / 2 + complexity_constant / n / gamma
    got_gamma, got_complexity = bound_terms(
        torch.tensor(kl, dtype=torch.float64), torch.tensor(k, dtype=torch.float64), n_tensors, n, settings
    )
    assert float(got_gamma) == pytest.approx(gamma, rel=1e-12)
    assert float(got_complexity) == pytest.approx(expected, rel=1e-12)


def _upstream_holds(x: float, losses: np.ndarray, gammas: np.ndarray) -> bool:
    """Upstream's test: not min_r Σ_models -(mean exp(γ_r(ē - e)) - exp(3 γ_r² x² / 2)) < 0 (ē over all models)."""
    grand_mean = np.mean(losses.mean(axis=1))
    sums = np.zeros(len(gammas), dtype=np.longdouble)
    for model_losses in losses:
        for r, gamma in enumerate(gammas):
            sums[r] += -(
                np.mean(np.exp(np.longdouble(gamma * (grand_mean - model_losses))))
                - np.exp(np.longdouble(3 * gamma**2 * x**2 / 2))
            )
    return not sums.min() < 0


def test_k_search_grows_by_one_tenth_from_the_start_as_upstream() -> None:
    rng = np.random.default_rng(3)
    gammas = gamma_grid(BoundSettings())
    for spread in (0.02, 0.1, 0.4):
        losses = 2.3 + spread * rng.standard_normal((10, 200))
        expected = 1e-3
        while not _upstream_holds(expected, losses, gammas):
            expected *= 1.1
        assert search_k(losses, gammas, 1e-3, 1.1) == pytest.approx(expected, rel=1e-12)
        assert not _upstream_holds(expected / 1.1, losses, gammas)


def test_k_grids_are_the_auto_tune_ones() -> None:
    settings = BoundSettings()
    np.testing.assert_allclose(prior_scales(settings), np.exp(np.linspace(-6, -2.5, 8)), rtol=1e-12)
    np.testing.assert_allclose(gamma_grid(settings), np.exp(np.linspace(np.log(0.5), np.log(10), 10)), rtol=1e-12)


def test_k_curve_is_non_decreasing_interpolates_its_knots_and_leaves_w0_unchanged() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(64, 4, generator=generator)
    labels = torch.randint(0, 3, (64,), generator=generator)
    initial = {"weight": torch.randn(3, 4, generator=generator) * 0.1}
    kept = initial["weight"].clone()

    def per_example_losses(weights: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(features @ weights["weight"].T * 20, labels, reduction="none")

    settings = BoundSettings()
    curve = estimate_k_curve(per_example_losses, initial, settings, torch.Generator().manual_seed(1))
    assert torch.equal(initial["weight"], kept)
    assert curve.prior_scales == pytest.approx(tuple(prior_scales(settings)), rel=1e-12)
    assert all(a <= b for a, b in zip(curve.k_values, curve.k_values[1:]))
    assert curve.k_values[-1] > curve.k_values[0]  # larger prior noise spreads the losses more
    inside = np.linspace(curve.prior_scales[0], curve.prior_scales[-1], 17)
    expected = np.interp(inside, curve.prior_scales, curve.k_values)
    got = [float(curve(torch.tensor(scale, dtype=torch.float64))) for scale in inside]
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def _report(bound: float) -> BoundReport:
    return BoundReport(
        empirical_risk=0.2,
        kl=1234.5,
        k=0.05,
        gamma=10.0,
        complexity=bound - 0.2,
        bound=bound,
        prior_scale=0.02,
        inside_k_grid=True,
        posterior_scale=0.05,
        trivial_bound=math.log(10),
    )


def test_a_vacuous_bound_is_one_line_with_its_value() -> None:
    require_non_vacuous(_report(1.0), "mlp seed 0")
    with pytest.raises(PACTrainError) as raised:
        require_non_vacuous(_report(2.5), "mlp seed 3")
    message = str(raised.value)
    assert "\n" not in message
    assert "mlp seed 3 is vacuous: 2.5000 nats >= ln(classes) = 2.3026" in message
    assert _report(math.log(10)).vacuous
