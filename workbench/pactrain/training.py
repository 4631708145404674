"""PAC-Bayes training from a random initialisation: the bound is the training objective.

The run, for one network and seed (``train_pac_bayes``):

1. w0 = the network's random initial weights; the prior is centred there.
2. K(ν) is estimated on the training set from random models w0 + ν N(0, I) (``bound.estimate_k_curve``).
3. p (one log-std per weight) and b (one log-std per weight tensor) both start at log(mean |w0|),
   the mean taken over all weights (the Auto-tune code's ``initialization_pac``).
4. Stage 1 (the first ``stage1_epoch_count`` epochs), each mini-batch: ε ~ N(0, I); loss1 = mean cross-entropy of
   the network at w + e^p ⊙ ε; objective = loss1 + 3K²γ/2 + (KL + c + 3L)/(nγ) with K read at
   exp(mean b) and γ clipped (``bound.bound_terms``); one Adam step on w (``learning_rate``) and on
   p and b (``noise_learning_rate``). The gradients reach p through the noise by autograd, which
   equals PAC-tuning's hand-written (ε ⊙ ∂loss1/∂w) ⊙ e^p.
5. Stage 2 (later epochs): p and b are fixed; Adam steps w on loss1 alone, the noise still injected
   (PAC-tuning's perturbed gradient descent, ``MSU-NLP-CSS/PAC-tuning`` @ f9efe2d ``pac_tuning.py``).
6. No weight decay, no dropout. The network is evaluated at the posterior mean w; the bound is
   evaluated once at the end (``BoundReport``), its empirical term averaged over ``bound_samples``
   noise draws on the whole training set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workbench.finetune.pac import KCurve
from workbench.pactrain.bound import (
    BoundReport,
    bound_terms,
    estimate_k_curve,
    posterior_prior_kl,
)
from workbench.pactrain.config import PACTrainConfig
from workbench.pactrain.data import DigitsSplit
from workbench.pactrain.loop import (
    accuracy,
    current_weights,
    epoch_batches,
    network_logits,
    reproducible_cpu,
)


@dataclass(frozen=True)
class PACBayesRun:
    """A finished PAC-Bayes run.

    Attributes:
        weights: the posterior mean w, name -> tensor.
        posterior_log_std: (d,) p; prior_log_std: (L,) b (natural log of weight-space stds).
        k_curve: the K(ν) estimate the run used.
        test_accuracy / train_accuracy: of the posterior mean, in [0, 1].
        report: the bound's terms at the end.
    """

    weights: dict[str, torch.Tensor]
    posterior_log_std: torch.Tensor
    prior_log_std: torch.Tensor
    k_curve: KCurve
    test_accuracy: float
    train_accuracy: float
    report: BoundReport


def perturbed(
    weights: dict[str, torch.Tensor], posterior_log_std: torch.Tensor, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """w + e^p ⊙ ε with ε ~ N(0, I) drawn from ``generator``, tensor by tensor (differentiable in w and p)."""
    noisy: dict[str, torch.Tensor] = {}
    offset = 0
    for name, tensor in weights.items():
        size = tensor.numel()
        scale = torch.exp(posterior_log_std[offset : offset + size]).reshape(tensor.shape)
        noisy[name] = tensor + scale * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
        offset += size
    return noisy


def initial_log_std(initial: dict[str, torch.Tensor]) -> float:
    """log(mean |w0|) over every weight of every tensor."""
    return math.log(float(torch.cat([tensor.reshape(-1).abs() for tensor in initial.values()]).mean()))


def train_pac_bayes(network: nn.Module, split: DigitsSplit, config: PACTrainConfig, seed: int) -> PACBayesRun:
    """Train ``network`` (freshly initialised) on ``split`` by minimising the bound; deterministic given ``seed``.

    The module's own parameters stay at w0 (the run works on copies); ``network.load_state_dict(run.weights)``
    puts the posterior mean into it.
    """
    with reproducible_cpu():
        return _train(network, split, config, seed)


def _train(network: nn.Module, split: DigitsSplit, config: PACTrainConfig, seed: int) -> PACBayesRun:
    generator = torch.Generator().manual_seed(seed)
    features, labels = split.train_features, split.train_labels
    n_examples = split.train_size
    initial = current_weights(network)

    def per_example_losses(weights: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(network_logits(network, weights, features), labels, reduction="none")

    k_curve = estimate_k_curve(per_example_losses, initial, config.bound, generator)
    weights = {name: tensor.clone().requires_grad_() for name, tensor in initial.items()}
    n_weights = sum(tensor.numel() for tensor in initial.values())
    start = initial_log_std(initial)
    posterior_log_std = torch.full((n_weights,), start, requires_grad=True)
    prior_log_std = torch.full((len(initial),), start, requires_grad=True)
    optimizer = torch.optim.Adam(
        [
            {"params": list(weights.values()), "lr": config.learning_rate},
            {"params": [posterior_log_std, prior_log_std], "lr": config.noise_learning_rate},
        ]
    )
    for epoch in range(config.epochs):
        stage1 = epoch < config.stage1_epoch_count
        for batch in epoch_batches(n_examples, config.batch_size, generator):
            noise_scales = posterior_log_std if stage1 else posterior_log_std.detach()
            noisy = perturbed(weights, noise_scales, generator)
            objective = F.cross_entropy(network_logits(network, noisy, features[batch]), labels[batch])
            if stage1:
                kl = posterior_prior_kl(weights, initial, posterior_log_std, prior_log_std)
                k = k_curve(torch.exp(prior_log_std.mean()))
                _, complexity = bound_terms(kl, k, len(initial), n_examples, config.bound)
                objective = objective + complexity
            optimizer.zero_grad(set_to_none=True)
            objective.backward()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in torch
            optimizer.step()
    final = {name: tensor.detach().clone() for name, tensor in weights.items()}
    p, b = posterior_log_std.detach().clone(), prior_log_std.detach().clone()
    report = bound_report(network, final, initial, p, b, k_curve, split, config, generator)
    return PACBayesRun(
        weights=final,
        posterior_log_std=p,
        prior_log_std=b,
        k_curve=k_curve,
        test_accuracy=accuracy(network, final, split.test_features, split.test_labels),
        train_accuracy=accuracy(network, final, features, labels),
        report=report,
    )


@torch.no_grad()
def bound_report(
    network: nn.Module,
    weights: dict[str, torch.Tensor],
    initial: dict[str, torch.Tensor],
    posterior_log_std: torch.Tensor,
    prior_log_std: torch.Tensor,
    k_curve: KCurve,
    split: DigitsSplit,
    config: PACTrainConfig,
    generator: torch.Generator,
) -> BoundReport:
    """The bound at (w, p, b): E_Q[train cross-entropy] over ``config.bound_samples`` draws + the complexity."""
    risks = [
        float(
            F.cross_entropy(
                network_logits(network, perturbed(weights, posterior_log_std, generator), split.train_features),
                split.train_labels,
            )
        )
        for _ in range(config.bound_samples)
    ]
    empirical_risk = sum(risks) / len(risks)
    kl = posterior_prior_kl(weights, initial, posterior_log_std, prior_log_std)
    prior_scale = torch.exp(prior_log_std.mean())
    k = k_curve(prior_scale)
    gamma, complexity = bound_terms(kl, k, len(initial), split.train_size, config.bound)
    return BoundReport(
        empirical_risk=empirical_risk,
        kl=float(kl),
        k=float(k),
        gamma=float(gamma),
        complexity=float(complexity),
        bound=empirical_risk + float(complexity),
        prior_scale=float(prior_scale),
        inside_k_grid=k_curve.prior_scales[0] <= float(prior_scale) <= k_curve.prior_scales[-1],
        posterior_scale=float(torch.exp(posterior_log_std.mean())),
        trivial_bound=math.log(split.num_classes),
    )
