"""PAC-tuning (Liu et al., EMNLP 2023; docs/protocols.md §8): fine-tuning by minimising a PAC-Bayes
bound with a learned Gaussian posterior N(w, diag(e^{2p})) and prior N(w0, e^{2 b_l} I).

One step (``PACTuning.step``):
  1. ε = clip(N(0, I), -noise_clip, noise_clip); w <- w + e^p ⊙ ε.
  2. loss1 = the batch loss of the perturbed model; backpropagate it.
  3. Stage 1 only: the hand-written p gradient ∂loss1/∂p = (ε ⊙ ∂loss1/∂w) ⊙ e^p.
  4. Remove the noise.
  5. Stage 1 only, on the clean weights:
       wdecay = Σ_l e^{-2 b_l} ‖w_l - w0_l‖²
       KL     = ½[Σ_l e^{-2 b_l} Σ_{i∈l} e^{2 p_i} - (2 Σ_i p_i - 2 Σ_l b_l t_l + d) + wdecay]
       K      = K-curve evaluated at exp(mean b)
       γ      = clip(K^{-1} sqrt(2 (KL + c + 3L) / (3n)), γ_min, γ_max)
       loss2  = 3 K² γ / 2 + (KL + c + 3L) / (n γ)          (c = bound_constant = 10, L tensors)
     backpropagate loss2 (into w, p, b).
  6. Optional extra penalty (ProSocialTuning) on the clean weights, backpropagated into w.
  7. Step AdamW on w (PLM lr, classifier lr) and, in stage 1, the noise-scale Adam on p and b.
Stage 1 runs while ``epoch < stage1_epochs``; stage 2 keeps p, b frozen (perturbed GD).

Upstream computes wdecay and loss2 before removing the noise, on tensors saved from the clean
weights, so the values and gradients are the same as here.

Deviation (documented fix): upstream's ``fun_K_auto`` ReLU-sum accumulates slope *changes*
incorrectly after the second knot, so it does not pass through the estimated (ν, K) points;
``KCurve`` interpolates them exactly (flat below the first knot, last slope beyond the last).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from workbench.config_tables import dataclass_from_table


@dataclass(frozen=True)
class PACConfig:
    """PAC-tuning hyperparameters (defaults: the upstream code's).

    Attributes:
        lr_plm / lr_classifier: AdamW learning rates of the pretrained weights / the classifier.
        weight_decay: AdamW weight decay.
        gamma_min / gamma_max: γ clipping range (upstream 10 / 10).
        stage1_epochs: epochs of stage 1 (learn p and b); later epochs are stage 2.
        noise_clip: ε is clipped to [-noise_clip, noise_clip].
        bound_constant: the constant c in KL + c + 3L (10 in PAC-tuning, 60 in Auto-tune code).
        noise_plm_step: fixed step of the noise-scale Adam on the PLM part of p and b.
        k_prior_log_scales: (start, stop, count) of the ν grid exp(linspace(start, stop, count)).
        k_models: random models sampled per ν; k_start: the first x of the K search.
    """

    lr_plm: float = 5e-5
    lr_classifier: float = 1e-2
    weight_decay: float = 1e-2
    gamma_min: float = 10.0
    gamma_max: float = 10.0
    stage1_epochs: int = 200
    noise_clip: float = 2.0
    bound_constant: float = 10.0
    noise_plm_step: float = 0.1
    k_prior_log_scales: tuple[float, float, int] = (-6.0, -2.0, 8)
    k_models: int = 10
    k_start: float = 1e-3

    def __post_init__(self) -> None:
        if not 0 < self.gamma_min <= self.gamma_max:
            raise ValueError(f"pac gamma range [{self.gamma_min}, {self.gamma_max}] must satisfy 0 < min <= max")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PACConfig:
        """Build from a TOML ``[finetune.pac]`` table; unknown keys are an error naming the valid ones."""
        config = dataclass_from_table(cls, data, "finetune.pac")
        start, stop, count = config.k_prior_log_scales
        return dataclasses.replace(config, k_prior_log_scales=(float(start), float(stop), int(count)))


@dataclass(frozen=True)
class KCurve:
    """K as a function of the prior scale ν: knots (ν_j, K_j), ν increasing, K non-decreasing."""

    prior_scales: tuple[float, ...]
    k_values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.prior_scales) != len(self.k_values) or len(self.prior_scales) < 2:
            raise ValueError("KCurve needs at least 2 knots and as many K values as prior scales")

    def __call__(self, scale: torch.Tensor) -> torch.Tensor:
        """Piecewise-linear K(scale), differentiable in ``scale`` (a 0-d tensor)."""
        knots = torch.tensor(self.prior_scales, dtype=torch.float64, device=scale.device)
        values = torch.tensor(self.k_values, dtype=torch.float64, device=scale.device)
        slopes = (values[1:] - values[:-1]) / (knots[1:] - knots[:-1])
        slope_changes = torch.cat([slopes[:1], slopes[1:] - slopes[:-1]])
        return values[0] + (torch.relu(scale.double() - knots[:-1]) * slope_changes).sum()


def k_condition_holds(x: float, losses: np.ndarray, gammas: np.ndarray) -> bool:
    """Whether mean_{m,i} exp(γ(ē - e_{m,i})) <= exp(3 γ² x² / 2) for every γ in ``gammas``.

    Args:
        losses: (n_models, n_examples) per-example losses of random models around w0.
    """
    deviations = losses.mean() - losses.reshape(-1)
    for gamma in gammas:
        scaled = gamma * deviations
        log_mean = scaled.max() + math.log(np.exp(scaled - scaled.max()).mean())
        if log_mean > 1.5 * gamma**2 * x**2:
            return False
    return True


def search_k(losses: np.ndarray, gammas: np.ndarray, start: float) -> float:
    """Grow x by ×1.5 until the K condition holds, then shrink by ÷1.1 while it still holds.

    Returns the smallest x of that grid satisfying the condition (upstream stops one ÷1.1 step
    past it, at a value that just fails).
    """
    x = start
    while not k_condition_holds(x, losses, gammas):
        x *= 1.5
    while k_condition_holds(x / 1.1, losses, gammas):
        x /= 1.1
    return x


@torch.no_grad()
def estimate_k_curve(
    parameters: Sequence[nn.Parameter],
    per_example_losses: Callable[[], torch.Tensor],
    config: PACConfig,
    generator: torch.Generator | None = None,
) -> KCurve:
    """Estimate K(ν) on ν ∈ exp(linspace(*config.k_prior_log_scales)).

    For each ν, ``config.k_models`` random models w0 + ν N(0, I) (on ``parameters``, restored
    afterwards) are scored by ``per_example_losses()`` (training-set losses, shape (n,)); K(ν)
    is the search result with γ on 10 log-spaced points of [γ_min, γ_max], started at the
    previous K. The K values are then made non-decreasing (running maximum).
    """
    start, stop, count = config.k_prior_log_scales
    scales = np.exp(np.linspace(start, stop, count))
    gammas = np.exp(np.linspace(math.log(config.gamma_min), math.log(config.gamma_max), 10))
    originals = [p.detach().clone() for p in parameters]
    k_values: list[float] = []
    x = config.k_start
    for scale in scales:
        losses = []
        for _ in range(config.k_models):
            for param, original in zip(parameters, originals):
                noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
                param.copy_(original + float(scale) * noise.to(param.device))
            losses.append(per_example_losses().detach().double().cpu().numpy())
        x = search_k(np.stack(losses), gammas, x)
        k_values.append(x)
    for param, original in zip(parameters, originals):
        param.copy_(original)
    return KCurve(tuple(float(s) for s in scales), tuple(np.maximum.accumulate(k_values).tolist()))


def gaussian_kl(p: torch.Tensor, b: torch.Tensor, tensor_sizes: Sequence[int], wdecay: torch.Tensor) -> torch.Tensor:
    """KL(N(w, diag e^{2p}) || N(w0, diag_l e^{2 b_l})) in nats, float64, as in §8.

    Args:
        p: (d,) per-parameter log-std; b: (L,) per-tensor prior log-std;
        tensor_sizes: t_l, summing to d; wdecay: Σ_l e^{-2 b_l} ‖w_l - w0_l‖².
    """
    sizes = torch.tensor(list(tensor_sizes), device=b.device)
    b_per_param = torch.repeat_interleave(b.double(), sizes)
    trace = (torch.exp(-2 * b_per_param) * torch.exp(2 * p.double())).sum()
    log_det = 2 * p.double().sum() - 2 * (b.double() * sizes.double()).sum() + p.numel()
    return 0.5 * (trace - log_det + wdecay)


def pac_bound_loss(
    kl: torch.Tensor, k: torch.Tensor, n_tensors: int, train_size: int, config: PACConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """γ (clipped) and loss2 = 3K²γ/2 + (KL + c + 3L)/(nγ); both 0-d float64 tensors."""
    complexity = kl + config.bound_constant + 3 * n_tensors
    gamma = torch.clip(torch.sqrt(2 * complexity / (3 * train_size)) / k, config.gamma_min, config.gamma_max)
    return gamma, 1.5 * k**2 * gamma + complexity / (train_size * gamma)


class NoiseScaleAdam:
    """Adam on p or b as upstream's ``myAdam``: bias-corrected m̂/(√v̂+ε), with a fixed step
    ``plm_step`` on PLM entries and lr_classifier × max(50·0.9^⌊t/10⌋, 1) on classifier entries."""

    def __init__(self, values: torch.Tensor, is_plm: torch.Tensor, plm_step: float, lr_classifier: float) -> None:
        self.values = values
        self.is_plm = is_plm
        self.plm_step = plm_step
        self.lr_classifier = lr_classifier
        self.step_count = 0
        self.exp_avg = torch.zeros_like(values)
        self.exp_avg_sq = torch.zeros_like(values)

    @torch.no_grad()
    def step(self, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        """One update of ``values`` from ``values.grad``."""
        grad = self.values.grad
        if grad is None:
            raise RuntimeError("NoiseScaleAdam.step: the values have no gradient; run backward (or set .grad) first")
        self.step_count += 1
        self.exp_avg.mul_(betas[0]).add_((1 - betas[0]) * grad)
        self.exp_avg_sq.mul_(betas[1]).add_((1 - betas[1]) * grad.square())
        m_hat = self.exp_avg / (1 - betas[0] ** self.step_count)
        v_hat = self.exp_avg_sq / (1 - betas[1] ** self.step_count)
        direction = m_hat / (v_hat.sqrt() + eps)
        factor = max(50 * 0.9 ** (self.step_count // 10), 1.0)
        step_size = torch.where(self.is_plm, self.plm_step, self.lr_classifier * factor)
        self.values -= step_size * direction

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only (loadable with ``torch.load(weights_only=True)``)."""
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "step": torch.tensor(self.step_count)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.step_count = int(state["step"])


@dataclass(frozen=True)
class PACStepReport:
    """What one step computed; bound terms are None in stage 2."""

    stage: int
    loss1: float
    loss2: float | None
    kl: float | None
    k: float | None
    gamma: float | None


class PACTuning:
    """PAC-tuning as an optimizer around any module and loss.

    Usage: ``PACTuning(trainable named parameters (embeddings excluded, as upstream), train_size,
    config, k_curve, classifier_param_names={"head.weight", "head.bias"}).step(batch_loss_fn, epoch)``.
    """

    def __init__(
        self,
        trainable_params: Sequence[tuple[str, nn.Parameter]],
        train_size: int,
        config: PACConfig,
        k_curve: KCurve,
        classifier_param_names: Collection[str] = (),
        generator: torch.Generator | None = None,
    ) -> None:
        if not trainable_params:
            raise ValueError("PACTuning needs at least one trainable parameter")
        unknown = set(classifier_param_names) - {name for name, _ in trainable_params}
        if unknown:
            raise ValueError(f"classifier parameter(s) {sorted(unknown)} are not among the trainable parameters")
        self.names = [name for name, _ in trainable_params]
        self.params = [param for _, param in trainable_params]
        self.train_size = train_size
        self.config = config
        self.k_curve = k_curve
        self.generator = generator
        self.sizes = [param.numel() for param in self.params]
        is_classifier = [name in classifier_param_names for name in self.names]
        device = self.params[0].device
        self.w0 = [param.detach().clone() for param in self.params]
        initial = self._initial_log_stds(is_classifier)
        self.p = torch.repeat_interleave(torch.tensor(initial), torch.tensor(self.sizes)).to(device).requires_grad_()
        self.b = torch.tensor(initial, device=device).requires_grad_()
        b_is_plm = torch.tensor([not c for c in is_classifier], device=device)
        self.p_optimizer = NoiseScaleAdam(
            self.p,
            torch.repeat_interleave(b_is_plm, torch.tensor(self.sizes, device=device)),
            config.noise_plm_step,
            config.lr_classifier,
        )
        self.b_optimizer = NoiseScaleAdam(self.b, b_is_plm, config.noise_plm_step, config.lr_classifier)
        groups = [
            {"params": [p for p, c in zip(self.params, is_classifier) if not c], "lr": config.lr_plm},
            {"params": [p for p, c in zip(self.params, is_classifier) if c], "lr": config.lr_classifier},
        ]
        self.model_optimizer = torch.optim.AdamW(
            [g for g in groups if g["params"]], lr=config.lr_plm, weight_decay=config.weight_decay, fused=True
        )

    def _initial_log_stds(self, is_classifier: list[bool]) -> list[float]:
        """Per-tensor initial log-std of both p and b: 2·log(mean|w0_PLM|) for PLM tensors, log(mean|w0_clf|)
        for classifier tensors (means pooled over each group's entries)."""

        def pooled_log_mean_abs(group: list[torch.Tensor]) -> float:
            return math.log(float(torch.cat([w.reshape(-1).abs() for w in group]).mean()))

        plm = [w for w, c in zip(self.w0, is_classifier) if not c]
        classifier = [w for w, c in zip(self.w0, is_classifier) if c]
        plm_value = 2 * pooled_log_mean_abs(plm) if plm else 0.0
        classifier_value = pooled_log_mean_abs(classifier) if classifier else 0.0
        return [classifier_value if c else plm_value for c in is_classifier]

    def weight_decay_term(self) -> torch.Tensor:
        """wdecay = Σ_l e^{-2 b_l} ‖w_l - w0_l‖² (float64, differentiable in w and b)."""
        terms = [
            torch.exp(-2 * self.b[i].double()) * (param - w0).double().square().sum()
            for i, (param, w0) in enumerate(zip(self.params, self.w0))
        ]
        return torch.stack(terms).sum()

    def kl(self) -> torch.Tensor:
        """The KL term at the current w, p, b."""
        return gaussian_kl(self.p, self.b, self.sizes, self.weight_decay_term())

    def stage(self, epoch: int) -> int:
        """1 while ``epoch < stage1_epochs`` (learn p and b), else 2 (frozen noise scales)."""
        return 1 if epoch < self.config.stage1_epochs else 2

    def step(
        self,
        batch_loss_fn: Callable[[], torch.Tensor],
        epoch: int,
        penalty_fn: Callable[[], torch.Tensor] | None = None,
    ) -> PACStepReport:
        """One PAC-tuning step; ``batch_loss_fn()`` returns the mean loss of the current batch
        (forward pass included); ``penalty_fn()`` an extra penalty on the clean weights."""
        stage = self.stage(epoch)
        self.model_optimizer.zero_grad(set_to_none=True)
        self.p.grad = None
        self.b.grad = None
        clip = self.config.noise_clip
        with torch.no_grad():
            eps = [
                torch.randn(param.shape, generator=self.generator, dtype=param.dtype)
                .clamp_(-clip, clip)
                .to(param.device)
                for param in self.params
            ]
            offsets = torch.cumsum(torch.tensor([0, *self.sizes]), 0).tolist()
            noises = [
                torch.exp(self.p[offsets[i] : offsets[i + 1]]).reshape(param.shape) * eps[i]
                for i, param in enumerate(self.params)
            ]
            for param, noise in zip(self.params, noises):
                param.add_(noise)
        loss1 = batch_loss_fn()
        loss1.backward()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in torch
        with torch.no_grad():
            hand_p_grad = None
            if stage == 1:
                hand_p_grad = torch.cat(
                    [
                        (e * (param.grad if param.grad is not None else torch.zeros_like(param))).reshape(-1)
                        for e, param in zip(eps, self.params)
                    ]
                ) * torch.exp(self.p)
            for param, noise in zip(self.params, noises):
                param.sub_(noise)
        report = PACStepReport(stage, float(loss1.detach()), None, None, None, None)
        if stage == 1:
            kl = self.kl()
            k = self.k_curve(torch.exp(self.b.mean()))
            gamma, loss2 = pac_bound_loss(kl, k, len(self.params), self.train_size, self.config)
            loss2.backward()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in torch
            with torch.no_grad():
                self.p.grad = hand_p_grad if self.p.grad is None else self.p.grad + hand_p_grad
            report = PACStepReport(
                stage,
                float(loss1.detach()),
                float(loss2.detach()),
                float(kl.detach()),
                float(k.detach()),
                float(gamma.detach()),
            )
        if penalty_fn is not None:
            penalty_fn().backward()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in torch
        self.model_optimizer.step()
        if stage == 1:
            self.p_optimizer.step()
            if self.b.grad is not None:
                self.b_optimizer.step()
        return report

    def state_dict(self) -> dict[str, Any]:
        """Tensors and tensor dicts only, for ``torch.save`` / ``torch.load(weights_only=True)``."""
        return {
            "p": self.p.detach(),
            "b": self.b.detach(),
            "w0": list(self.w0),
            "p_optimizer": self.p_optimizer.state_dict(),
            "b_optimizer": self.b_optimizer.state_dict(),
            "model_optimizer": self.model_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` saved (the parameters themselves are restored separately)."""
        with torch.no_grad():
            self.p.copy_(state["p"])
            self.b.copy_(state["b"])
            for w0, saved in zip(self.w0, state["w0"]):
                w0.copy_(saved)
        self.p_optimizer.load_state_dict(state["p_optimizer"])
        self.b_optimizer.load_state_dict(state["b_optimizer"])
        self.model_optimizer.load_state_dict(state["model_optimizer"])
