"""PAC-tuning: KL and bound terms against closed forms, K curve and search, the hand-written p
gradient, learned noise scales, and the stage switch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from workbench.finetune.pac import (
    KCurve,
    PACConfig,
    PACTuning,
    estimate_k_curve,
    gaussian_kl,
    k_condition_holds,
    pac_bound_loss,
    search_k,
)


def test_kl_matches_summed_closed_form_gaussian_kl() -> None:
    torch.manual_seed(0)
    sizes = [3, 5]
    w, w0 = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    p, b = torch.randn(8, dtype=torch.float64) * 0.3 - 2, torch.tensor([-1.5, -2.5], dtype=torch.float64)
    b_full = torch.repeat_interleave(b, torch.tensor(sizes))
    wdecay = (torch.exp(-2 * b_full) * (w - w0) ** 2).sum()
    posterior = torch.distributions.Normal(w, torch.exp(p))
    prior = torch.distributions.Normal(w0, torch.exp(b_full))
    expected = torch.distributions.kl_divergence(posterior, prior).sum()
    # every tensor is float64 (no model forward): float64 precision is the right tolerance
    assert float(gaussian_kl(p, b, sizes, wdecay)) == pytest.approx(float(expected), rel=1e-12)


def test_bound_loss_at_unclipped_and_clipped_gamma() -> None:
    kl, k = torch.tensor(5.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    free = PACConfig(gamma_min=1e-3, gamma_max=1e3)
    gamma, loss2 = pac_bound_loss(kl, k, n_tensors=2, train_size=100, config=free)
    # complexity = 5 + 10 + 3*2 = 21; gamma = sqrt(2*21/300)/0.5; both terms then equal.
    assert float(gamma) == pytest.approx(math.sqrt(0.14) / 0.5)
    assert float(loss2) == pytest.approx(2 * 1.5 * 0.25 * math.sqrt(0.14) / 0.5)
    gamma, loss2 = pac_bound_loss(kl, k, n_tensors=2, train_size=100, config=PACConfig())
    assert float(gamma) == 10.0 and float(loss2) == pytest.approx(3.75 + 21 / 1000)


def test_k_curve_interpolates_knots_exactly() -> None:
    curve = KCurve((1.0, 2.0, 3.0, 4.0), (1.0, 3.0, 3.0, 5.0))
    values = [float(curve(torch.tensor(x))) for x in (0.5, 1.5, 2.5, 3.5, 5.0)]
    assert values == pytest.approx([1.0, 2.0, 3.0, 4.0, 7.0])


def test_k_search_returns_smallest_grid_point_satisfying_condition() -> None:
    losses = np.array([[0.0, 2.0]])  # deviations ±1: mean exp = cosh(gamma)
    gammas = np.array([1.0])
    threshold = math.sqrt(math.log(math.cosh(1.0)) / 1.5)
    assert k_condition_holds(threshold * 1.001, losses, gammas)
    assert not k_condition_holds(threshold * 0.999, losses, gammas)
    found = search_k(losses, gammas, start=1e-3)
    assert threshold <= found < threshold * 1.1


def test_k_curve_estimate_is_monotone_and_restores_weights() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    inputs, labels = torch.randn(16, 4), torch.randint(0, 2, (16,))
    before = [p.detach().clone() for p in model.parameters()]
    curve = estimate_k_curve(
        list(model.parameters()),
        lambda: nn.functional.cross_entropy(model(inputs), labels, reduction="none"),
        PACConfig(k_prior_log_scales=(-4.0, 0.0, 4), k_models=3),
        torch.Generator().manual_seed(0),
    )
    assert len(curve.k_values) == 4 and list(curve.k_values) == sorted(curve.k_values)
    assert curve.prior_scales[0] == pytest.approx(math.exp(-4.0))
    for p, original in zip(model.parameters(), before):
        assert torch.equal(p, original)


def small_task() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
    inputs = torch.randn(32, 6)
    labels = (inputs[:, 0] > 0).long()
    return model, inputs, labels


def test_hand_written_p_gradient_and_kl_gradient() -> None:
    weight = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
    coefficients = torch.tensor([1.0, -2.0, 3.0])
    config = PACConfig(lr_plm=0.0, noise_plm_step=0.0)
    pac = PACTuning(
        [("w", weight)],
        train_size=10,
        config=config,
        k_curve=KCurve((0.1, 1.0), (0.5, 0.5)),
        generator=torch.Generator().manual_seed(3),
    )
    p0, b0 = pac.p.detach().clone(), pac.b.detach().clone()
    report = pac.step(lambda: (coefficients * weight).sum(), epoch=0)
    eps = torch.randn(3, generator=torch.Generator().manual_seed(3)).clamp(-2, 2)
    # d loss1/dw = c; dKL/dp_i = e^{2p_i - 2b} - 1; d loss2/dKL = 1/(n gamma) with gamma clipped to 10.
    expected = coefficients * eps * torch.exp(p0) + (torch.exp(2 * p0 - 2 * b0) - 1) / (10 * report.gamma)
    torch.testing.assert_close(pac.p.grad, expected)
    assert report.stage == 1 and report.gamma == 10.0 and report.k == pytest.approx(0.5)


def test_noise_scales_move_and_stage_switch_freezes_them() -> None:
    model, inputs, labels = small_task()
    named = list(model.named_parameters())
    pac = PACTuning(
        named,
        train_size=32,
        config=PACConfig(stage1_epochs=3),
        k_curve=KCurve((0.01, 0.1), (0.05, 0.2)),
        classifier_param_names={"2.weight", "2.bias"},
        generator=torch.Generator().manual_seed(0),
    )
    initial_p, initial_b = pac.p.detach().clone(), pac.b.detach().clone()
    # the classifier tensors start at log(mean|w|), the PLM tensors at 2 log(mean|w|)
    plm_mean = torch.cat([model[0].weight.reshape(-1), model[0].bias]).detach().abs().mean()
    assert float(initial_b[0]) == pytest.approx(2 * math.log(float(plm_mean)), rel=1e-5)
    loss = lambda: nn.functional.cross_entropy(model(inputs), labels)  # noqa: E731
    reports = [pac.step(loss, epoch) for epoch in range(3)]
    assert all(r.stage == 1 and r.loss2 is not None for r in reports)
    assert (pac.p - initial_p).abs().max() > 1e-3 and (pac.b - initial_b).abs().max() > 1e-3
    frozen_p, frozen_b = pac.p.detach().clone(), pac.b.detach().clone()
    weights_before = model[2].weight.detach().clone()
    report = pac.step(loss, epoch=3)
    assert report.stage == 2 and report.loss2 is None and report.kl is None
    assert torch.equal(pac.p, frozen_p) and torch.equal(pac.b, frozen_b)
    assert not torch.equal(model[2].weight, weights_before)


def test_config_rejects_unknown_keys_and_bad_gamma() -> None:
    with pytest.raises(ValueError, match="gama"):
        PACConfig.from_dict({"gama": 1})
    with pytest.raises(ValueError, match="gamma range"):
        PACConfig(gamma_min=5, gamma_max=1)
    assert PACConfig.from_dict({"k_prior_log_scales": [-5, -1, 3]}).k_prior_log_scales == (-5.0, -1.0, 3)
