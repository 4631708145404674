"""The PAC-Bayes bound for unbounded losses that PAC-Bayes training minimises (arXiv 2305.19243).

Posterior Q = N(w, diag(e^{2p})) with one log-std p_i per weight; prior P = N(w0, diag_l e^{2 b_l})
centred on the random initialisation w0, with one trainable log-std b_l per weight tensor l.
With n training examples, L tensors, d weights (t_l in tensor l) and γ in [γ1, γ2]:

    KL(Q || P) = ½ Σ_l Σ_{i∈l} [ e^{2 p_i - 2 b_l} + e^{-2 b_l} (w_i - w0_i)² - 1 + 2 b_l - 2 p_i ]   (nats)
    γ          = clip( K^{-1} sqrt(2 (KL + c + 3L) / (3n)), γ1, γ2 )
    bound      = E_Q[train loss] + 3 K² γ / 2 + (KL + c + 3L) / (n γ)                             (nats)

where K = K(exp(mean_l b_l)) is the loss's exponential-moment constant at the prior's scale:
for prior scales ν on a grid, K(ν) is the smallest x (on the search grid) with
mean_{models, i} exp(γ (ē - e_i)) <= exp(3 γ² x² / 2) for every γ of the grid, e_i the per-example
training losses of random models w0 + ν N(0, I) and ē their mean. The bound holds for the
expected loss of Q at any γ in [γ1, γ2]; K is interpolated between the ν knots.

Sources: the terms are those of the block marked "Copy from Auto-Tune" (the training paper's code)
in ``Avra98/prob_prune`` @ 8fc04fadc95233531a1c0a0a561f365d87dd5145 ``utility/prune_pac.py``
(``func_sum``, ``compute_K_sample``, ``fun_K_auto``, ``weight_decay_mulb``,
``get_kl_term_layer_pb``, and ``kl + 60 + len(prior)*3`` in ``prune_by_noise_trainable_prior``).
The KL, γ and bound formulas are the PAC-tuning ones (``MSU-NLP-CSS/PAC-tuning`` @ f9efe2d
``utils.py``), so :func:`workbench.finetune.pac.gaussian_kl`, :func:`~workbench.finetune.pac.pac_bound_loss`,
:func:`~workbench.finetune.pac.k_condition_holds` and :class:`~workbench.finetune.pac.KCurve` are reused.
What differs from PAC-tuning is carried by :class:`~workbench.pactrain.config.BoundSettings`
(c = 60 instead of 10, γ in [0.5, 10] instead of [10, 10], ν in exp([-6, -2.5]) instead of
exp([-6, -2])) and by the K search here (grow by x1.1 from the previous knot's K until the
condition holds, with no shrinking pass).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from workbench.finetune.pac import KCurve, PACConfig, gaussian_kl, k_condition_holds, pac_bound_loss
from workbench.pactrain.config import BoundSettings, PACTrainError

Weights = Mapping[str, torch.Tensor]


def weight_distance_term(weights: Weights, initial: Weights, prior_log_std: torch.Tensor) -> torch.Tensor:
    """Σ_l e^{-2 b_l} ‖w_l - w0_l‖² (float64, 0-d), tensors in ``weights`` order.

    Args:
        weights / initial: name -> tensor, the posterior mean w and the prior mean w0 (same shapes).
        prior_log_std: (L,) the prior log-std b_l of each tensor, in ``weights`` order.
    """
    terms = [
        torch.exp(-2 * prior_log_std[index].double()) * (weights[name] - initial[name]).double().square().sum()
        for index, name in enumerate(weights)
    ]
    return torch.stack(terms).sum()


def posterior_prior_kl(
    weights: Weights, initial: Weights, posterior_log_std: torch.Tensor, prior_log_std: torch.Tensor
) -> torch.Tensor:
    """KL(N(w, diag e^{2p}) || N(w0, diag_l e^{2 b_l})) in nats (float64, 0-d, differentiable in w, p, b).

    Args:
        weights / initial: name -> tensor, w and w0.
        posterior_log_std: (d,) p, the tensors of ``weights`` flattened and concatenated in order.
        prior_log_std: (L,) b.
    """
    sizes = [tensor.numel() for tensor in weights.values()]
    return gaussian_kl(posterior_log_std, prior_log_std, sizes, weight_distance_term(weights, initial, prior_log_std))


def bound_terms(
    kl: torch.Tensor, k: torch.Tensor, n_tensors: int, train_size: int, settings: BoundSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """(γ, complexity) with γ clipped to [γ1, γ2] and complexity = 3K²γ/2 + (KL + c + 3L)/(nγ) (nats).

    Args:
        kl: 0-d KL in nats; k: 0-d K at the prior's scale; n_tensors: L; train_size: n.
    """
    constants = PACConfig(
        gamma_min=settings.gamma_min, gamma_max=settings.gamma_max, bound_constant=settings.bound_constant
    )
    return pac_bound_loss(kl, k, n_tensors, train_size, constants)


def search_k(losses: np.ndarray, gammas: np.ndarray, start: float, growth: float) -> float:
    """The first x = start * growth^j (j >= 0) for which the moment condition holds at every γ.

    Args:
        losses: (n_models, n_examples) per-example losses (nats) of random models around w0.
        gammas: the γ grid.
    """
    x = start
    while not k_condition_holds(x, losses, gammas):
        x *= growth
    return x


def prior_scales(settings: BoundSettings) -> np.ndarray:
    """The ν knots exp(linspace(log-scale min, log-scale max, count)) (weight-space standard deviations)."""
    return np.exp(np.linspace(settings.prior_log_scale_min, settings.prior_log_scale_max, settings.prior_scale_count))


def gamma_grid(settings: BoundSettings) -> np.ndarray:
    """10 log-spaced γ in [γ1, γ2], the grid the moment condition is checked on."""
    return np.exp(np.linspace(math.log(settings.gamma_min), math.log(settings.gamma_max), 10))


@torch.no_grad()
def estimate_k_curve(
    per_example_losses: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    initial: Weights,
    settings: BoundSettings,
    generator: torch.Generator,
) -> KCurve:
    """K(ν) on the ν knots, each search started at the previous knot's K, then made non-decreasing.

    Args:
        per_example_losses: weights -> (n,) training-set losses in nats of the network with those weights.
        initial: w0, the centre of every random model w0 + ν N(0, I).
        generator: the source of the random models.
    """
    scales = prior_scales(settings)
    gammas = gamma_grid(settings)
    k_values: list[float] = []
    x = settings.k_start
    for scale in scales:
        losses = []
        for _ in range(settings.k_models):
            sampled = {
                name: tensor + float(scale) * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
                for name, tensor in initial.items()
            }
            losses.append(per_example_losses(sampled).double().numpy())
        x = search_k(np.stack(losses), gammas, x, settings.k_growth)
        k_values.append(x)
    return KCurve(tuple(float(s) for s in scales), tuple(np.maximum.accumulate(k_values).tolist()))


@dataclass(frozen=True)
class BoundReport:
    """The bound's terms at the end of a run (nats unless said).

    Attributes:
        empirical_risk: E_Q[train cross-entropy], averaged over noise draws.
        kl: KL(Q || P).
        k: K at ``prior_scale``; gamma: the clipped γ.
        complexity: 3K²γ/2 + (KL + c + 3L)/(nγ).
        bound: empirical_risk + complexity, a bound on Q's expected test cross-entropy.
        prior_scale: exp(mean_l b_l), where K is read; inside_k_grid: whether it lies on the ν grid.
        posterior_scale: exp(mean_i p_i).
        trivial_bound: ln(n_classes), the cross-entropy of the uniform prediction, which needs no data.
    """

    empirical_risk: float
    kl: float
    k: float
    gamma: float
    complexity: float
    bound: float
    prior_scale: float
    inside_k_grid: bool
    posterior_scale: float
    trivial_bound: float

    @property
    def vacuous(self) -> bool:
        """True when the bound is no better than the uniform prediction's ln(n_classes)."""
        return not self.bound < self.trivial_bound


def vacuous_message(culprit: str, bound: float, trivial_bound: float, kl: float, k: float) -> str:
    """The one line that says a bound is vacuous, with its value and the fix."""
    return (
        f"the PAC-Bayes bound of {culprit} is vacuous: {bound:.4f} nats >= ln(classes) = {trivial_bound:.4f} "
        f"(KL {kl:.1f}, K {k:.3f}); train on more data (train_size), use a smaller network, or more epochs"
    )


def require_non_vacuous(report: BoundReport, culprit: str) -> None:
    """Raise one line when ``report``'s bound is vacuous.

    Raises:
        PACTrainError: naming ``culprit`` (for example ``"mlp seed 3"``), the value and the fix.
    """
    if report.vacuous:
        raise PACTrainError(vacuous_message(culprit, report.bound, report.trivial_bound, report.kl, report.k))
