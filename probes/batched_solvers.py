"""All layers at once: each probe kind fitted as one batched torch problem over [layers, n, d].

Every solver returns per-layer linear readouts in the units of its input, so that the decision
value of record ``i`` at layer ``l`` is ``features[l, i] @ coef[l] + intercept[l]`` (logits).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from sklearn.exceptions import ConvergenceWarning

from probes.spd_solves import solve_spd


@dataclass(frozen=True)
class LayerReadouts:
    """Per-layer linear readouts.

    Attributes:
        coef: [layers, d] weights in input units (logit per unit of activation).
        intercept: [layers] biases (logits).
        n_iter: solver iterations run (0 for closed-form parts).
    """

    coef: torch.Tensor
    intercept: torch.Tensor
    n_iter: int


@dataclass(frozen=True)
class CCSReadouts:
    """Per-layer CCS readouts plus the per-side means the pairs were centred with.

    Attributes:
        coef: [layers, d] weights on centred activations.
        intercept: [layers] biases on centred activations.
        pair_means: [layers, 2, d] training means of the first and second statement of each pair.
        loss: [layers] CCS loss of the selected restart.
    """

    coef: torch.Tensor
    intercept: torch.Tensor
    pair_means: torch.Tensor
    loss: torch.Tensor


def resolve_device(device: str | None) -> torch.device:
    """``None`` picks CUDA when present, else CPU; any other value is passed to ``torch.device``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def fit_logistic_layers(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    C: float,
    max_iter: int,
    tol: float,
) -> LayerReadouts:
    """L2-regularised logistic regression on every layer at once (batched Newton / IRLS).

    Per layer it minimises scikit-learn's objective, divided by ``C * n``:
    ``mean_i logloss_i + ||w||^2 / (2 C n)`` on standardised features (per-layer, per-dimension
    mean and standard deviation of ``features``); the intercept is not penalised. Each iteration
    builds the [layers, d + 1, d + 1] Hessians with one batched matmul, solves the Newton systems
    in float64 and backtracks per layer (Armijo, with a rounding slack of the
    input precision), so the number of passes over the data does not
    grow with how ill-conditioned the activations are.

    Args:
        features: [layers, n, d] activations (float32 or float64, on the device to fit on).
        labels: [n] or [layers, n] in {0, 1}.
        C: inverse regularisation strength, as in scikit-learn.
        max_iter: Newton iterations at most.
        tol: a layer has converged when its largest absolute gradient entry is below this.

    Returns:
        Readouts in raw (unstandardised) activation units.
    """
    n_layers, n, d = features.shape
    y = labels.to(features.dtype).expand(n_layers, n)
    mean = features.mean(dim=1, keepdim=True)
    scale = features.std(dim=1, unbiased=False, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    standardised = (features - mean) / scale
    penalty = 1.0 / (C * n)
    weight = torch.zeros(n_layers, d, dtype=torch.float64, device=features.device)
    bias = torch.zeros(n_layers, dtype=torch.float64, device=features.device)
    identity = torch.eye(d + 1, dtype=torch.float64, device=features.device)
    identity[d, d] = 0.0
    rounding = 8 * torch.finfo(features.dtype).eps

    def objective(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.baddbmm(
            b.to(features.dtype)[:, None, None], standardised, w.to(features.dtype)[:, :, None]
        ).squeeze(-1)
        loss = (torch.nn.functional.softplus(logits) - y * logits).mean(dim=1).double()
        return loss + 0.5 * penalty * (w**2).sum(dim=1), logits

    value, logits = objective(weight, bias)
    largest_gradient = torch.full((n_layers,), float("inf"), dtype=torch.float64)
    stalled = torch.zeros(n_layers, dtype=torch.bool, device=features.device)
    n_iter = 0
    for n_iter in range(max_iter + 1):
        probability = torch.sigmoid(logits)
        residual = (probability - y) / n
        gradient = torch.cat(
            [
                torch.bmm(residual[:, None, :], standardised).squeeze(1).double() + penalty * weight,
                residual.sum(dim=1, keepdim=True).double(),
            ],
            dim=1,
        )
        largest_gradient = gradient.abs().amax(dim=1)
        active = (largest_gradient > tol) & ~stalled
        if not bool(active.any()) or n_iter == max_iter:
            break
        curvature = (probability * (1 - probability) / n)[:, :, None]
        weighted = standardised * curvature
        hessian = torch.empty(n_layers, d + 1, d + 1, dtype=torch.float64, device=features.device)
        hessian[:, :d, :d] = torch.bmm(weighted.transpose(1, 2), standardised)
        hessian[:, :d, d] = weighted.sum(dim=1)
        hessian[:, d, :d] = hessian[:, :d, d]
        hessian[:, d, d] = curvature.sum(dim=(1, 2))
        hessian += penalty * identity
        step = newton_steps(hessian, gradient, active)
        decrease = (gradient * step).sum(dim=1)
        step_size = torch.ones(n_layers, dtype=torch.float64, device=features.device)
        for _ in range(30):
            candidate_value, candidate_logits = objective(
                weight + step_size[:, None] * step[:, :d], bias + step_size * step[:, d]
            )
            slack = rounding * (1.0 + value.abs())
            accepted = candidate_value <= value + 1e-4 * step_size * decrease + slack
            if bool(accepted.all()):
                break
            step_size = torch.where(accepted, step_size, step_size / 2)
        else:
            # no decrease after 30 halvings: that layer sits at the rounding floor; it stays put
            step_size = torch.where(accepted, step_size, torch.zeros_like(step_size))
            candidate_value, candidate_logits = objective(
                weight + step_size[:, None] * step[:, :d], bias + step_size * step[:, d]
            )
            stalled |= ~accepted
        weight = weight + step_size[:, None] * step[:, :d]
        bias = bias + step_size * step[:, d]
        value, logits = candidate_value, candidate_logits
    unconverged = (largest_gradient > tol) & ~stalled
    if bool(unconverged.any()):
        warnings.warn(
            f"batched logistic regression stopped after max_iter={max_iter} with gradient "
            f"{float(largest_gradient[unconverged].max()):.2e} > tol={tol:.0e}; raise max_iter",
            ConvergenceWarning,
            stacklevel=2,
        )
    if bool((stalled & (largest_gradient > tol)).any()):
        warnings.warn(
            f"batched logistic regression: the line search of layers "
            f"{stalled.nonzero().flatten().tolist()} found no decrease above the rounding of "
            f"{features.dtype} with gradient {float(largest_gradient[stalled].max()):.2e} > tol={tol:.0e}; "
            "their readouts are the last accepted iterate",
            ConvergenceWarning,
            stacklevel=2,
        )
    coef = weight.to(features.dtype) / scale.squeeze(1)
    intercept = bias.to(features.dtype) - (mean.squeeze(1) * coef).sum(dim=1)
    return LayerReadouts(coef=coef, intercept=intercept, n_iter=n_iter)


def newton_steps(hessian: torch.Tensor, gradient: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Newton directions ``-H^-1 g`` per layer; a gradient step where ``H`` cannot be solved.

    The Hessians are solved by Cholesky (:mod:`probes.spd_solves`). A layer whose probabilities
    saturate (separable data, an unpenalised intercept) can reach a singular or non-finite Hessian;
    it takes the steepest-descent direction ``-g`` instead, which the Armijo search then scales, so
    no layer's failure stops or poisons the others'.

    Args:
        hessian: [layers, d + 1, d + 1] float64 Hessians.
        gradient: [layers, d + 1] float64 gradients.
        active: [layers] bool; inactive layers get a zero step.

    Returns:
        [layers, d + 1] steps, finite everywhere.
    """
    finite = torch.isfinite(hessian).all(dim=2).all(dim=1)
    identity = torch.eye(hessian.shape[-1], dtype=hessian.dtype, device=hessian.device)
    solution, factored = solve_spd(torch.where(finite[:, None, None], hessian, identity), gradient)
    solved = finite & factored
    step = torch.where(solved[:, None], -solution, -gradient)
    return torch.where(active[:, None], step, torch.zeros_like(step))


def calibrate_projections(features: torch.Tensor, directions: torch.Tensor, labels: torch.Tensor) -> LayerReadouts:
    """Platt scaling of a fixed direction per layer: a 1-D logistic fit on ``x @ direction``.

    Args:
        features: [layers, n, d] activations.
        directions: [layers, d] fixed directions (any norm).
        labels: [n] or [layers, n] in {0, 1}.

    Returns:
        Readouts whose coef is a (possibly negative) multiple of each direction.
    """
    return platt_scale(torch.einsum("lnd,ld->ln", features, directions), directions, labels)


def platt_scale(projections: torch.Tensor, directions: torch.Tensor, labels: torch.Tensor) -> LayerReadouts:
    """Platt scaling from the projections themselves: the 1-D logistic fit of :func:`calibrate_projections`.

    Args:
        projections: [layers, n] ``x @ direction`` of each record and layer.
        directions: [layers, d] the directions projected on.
        labels: [n] or [layers, n] in {0, 1}.
    """
    scaling = fit_logistic_layers(projections[:, :, None], labels, C=1.0, max_iter=100, tol=1e-5)
    return LayerReadouts(coef=scaling.coef[:, :1] * directions, intercept=scaling.intercept, n_iter=scaling.n_iter)


def fit_mean_difference_layers(features: torch.Tensor, labels: torch.Tensor) -> LayerReadouts:
    """Difference of class means per layer, Platt-scaled to probabilities.

    Args:
        features: [layers, n, d] activations.
        labels: [n] in {0, 1}; both classes present.

    Returns:
        Readouts along ``mean(x | y=1) - mean(x | y=0)`` per layer.
    """
    positive = labels.bool()
    directions = features[:, positive].mean(dim=1) - features[:, ~positive].mean(dim=1)
    return calibrate_projections(features, directions, labels)


def fit_ccs_layers(
    first: torch.Tensor,
    second: torch.Tensor,
    *,
    n_restarts: int,
    n_epochs: int,
    learning_rate: float,
    weight_decay: float,
    generator: torch.Generator,
) -> CCSReadouts:
    """Contrast-consistent search (Burns et al. 2022) on every layer and restart at once.

    Each side of the pairs is mean-centred on its own; a sigmoid probe ``p = s(x @ w + b)`` is
    trained with AdamW, full batch, on
    ``loss = mean(min(p0, p1)^2) + mean((p0 - (1 - p1))^2)``; per layer the restart with the
    lowest final loss is kept. The sign of the result is arbitrary (the loss is symmetric).

    Args:
        first: [layers, n, d] activations of the first statement of each pair.
        second: [layers, n, d] activations of its contrast statement.
        n_restarts: independent random initialisations per layer.
        n_epochs: full-batch AdamW steps.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
        generator: source of the initialisations (CPU generator).
    """
    n_layers, _, d = first.shape
    pair_means = torch.stack([first.mean(dim=1), second.mean(dim=1)], dim=1)
    first_centred = first - pair_means[:, 0:1]
    second_centred = second - pair_means[:, 1:2]
    bound = 1.0 / d**0.5
    initial_weight = (torch.rand(n_restarts, n_layers, d, generator=generator) * 2 - 1) * bound
    initial_bias = (torch.rand(n_restarts, n_layers, generator=generator) * 2 - 1) * bound
    weight = initial_weight.to(first).requires_grad_(True)
    bias = initial_bias.to(first).requires_grad_(True)
    optimizer = torch.optim.AdamW([weight, bias], lr=learning_rate, weight_decay=weight_decay)

    def restart_losses() -> torch.Tensor:
        p0 = torch.sigmoid(torch.einsum("lnd,rld->rln", first_centred, weight) + bias[..., None])
        p1 = torch.sigmoid(torch.einsum("lnd,rld->rln", second_centred, weight) + bias[..., None])
        confidence = torch.minimum(p0, p1).pow(2).mean(dim=-1)
        consistency = (p0 - (1 - p1)).pow(2).mean(dim=-1)
        return confidence + consistency

    for _ in range(n_epochs):
        optimizer.zero_grad()
        restart_losses().sum().backward()
        optimizer.step()
    with torch.no_grad():
        losses = restart_losses()
        best = losses.argmin(dim=0)
        layer_index = torch.arange(n_layers, device=best.device)
        return CCSReadouts(
            coef=weight[best, layer_index].detach(),
            intercept=bias[best, layer_index].detach(),
            pair_means=pair_means,
            loss=losses[best, layer_index],
        )
