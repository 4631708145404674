"""Steering check: add ``alpha`` x the unit probe direction at one layer and watch the options move.

For each alpha the run's round-0 prompts are scored by option log-probability
(``workbench.inference.option_scoring.option_mean_nll`` -> ``option_probabilities``) while
``workbench.hooks.intervene`` adds the vector at every position of ``blocks.{layer}.{site}``. The
control arm adds a seeded random unit direction times the same alpha (the same norm). A probe
direction that moves the answers more than a random one is evidence that the model uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from activations_cache import CacheReader
from probes.errors import ProbeInputError
from workbench.hooks import Intervention, intervene
from workbench.inference.option_scoring import option_mean_nll
from workbench.metrics.options import option_probabilities
from workbench.models.loading import LoadedModel
from workbench.tasks.items import OPTION_LETTERS

STEERABLE_SITES = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")


@dataclass(frozen=True)
class OptionPrompt:
    """A cached round-0 prompt with its options.

    Attributes:
        prompt: the prompt text as the model saw it.
        option_labels: ``("(a)", "(b)", ...)``.
        gold, target_index, unknown_index: option indices, -1 when not applicable.
        add_special_tokens: how the runner tokenized the prompt (special tokens only for the
            ``faithful`` history mode; chat-templated prompts already carry them).
    """

    prompt: str
    option_labels: tuple[str, ...]
    gold: int
    target_index: int
    unknown_index: int
    add_special_tokens: bool = False


def round_zero_prompts(reader: CacheReader, limit: int, seed: int) -> list[OptionPrompt]:
    """Up to ``limit`` round-0 records with option scores (seeded choice, in record order).

    Prompts are scored with special tokens only for the ``faithful`` history mode, as the runner
    does (chat-templated prompts already carry them).

    Raises:
        ProbeInputError: the cache has no round-0 record with option probabilities.
    """
    records = reader.records
    n_options = (~np.isnan(np.asarray(records["option_probs"], dtype=float))).sum(axis=1)
    rows = np.flatnonzero((records["round"] == 0) & (n_options > 0))
    if rows.size == 0:
        raise ProbeInputError(
            f"{reader.path} has no round-0 record with option_probs; steering needs a multiple-choice task"
        )
    if rows.size > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=limit, replace=False))
    special = reader.config.get("protocol", {}).get("history_mode") == "faithful"
    return [
        OptionPrompt(
            prompt=str(records["prompt"][row]),
            option_labels=tuple(f"({OPTION_LETTERS[i]})" for i in range(int(n_options[row]))),
            gold=int(records["gold"][row]),
            target_index=int(records["target_index"][row]),
            unknown_index=int(records["unknown_index"][row]),
            add_special_tokens=special,
        )
        for row in rows
    ]


def option_distribution(
    model: LoadedModel, prompts: Sequence[OptionPrompt], interventions: Sequence[Intervention], batch_size: int
) -> list[np.ndarray]:
    """Option probabilities (one [n_options] array per prompt) under ``interventions``."""
    nll: list[np.ndarray] = [np.empty(0)] * len(prompts)
    with intervene(model, list(interventions)):
        for special in sorted({prompt.add_special_tokens for prompt in prompts}):
            rows = [index for index, prompt in enumerate(prompts) if prompt.add_special_tokens == special]
            scored = option_mean_nll(
                model,
                [prompts[row].prompt for row in rows],
                [prompts[row].option_labels for row in rows],
                add_special_tokens=special,
                batch_size=batch_size,
            )
            for row, values in zip(rows, scored):
                nll[row] = values
    return [option_probabilities(values) for values in nll]


def distribution_metrics(prompts: Sequence[OptionPrompt], probabilities: Sequence[np.ndarray]) -> dict[str, float]:
    """``unknown_rate``, ``mean_prob_target``, ``mean_prob_unknown``, ``accuracy`` over the prompts.

    Each metric averages over the prompts where its index applies (>= 0); a metric with no such
    prompt is left out.
    """
    chosen = np.array([int(np.argmax(p)) for p in probabilities])
    columns = {
        "unknown": np.array([p.unknown_index for p in prompts]),
        "target": np.array([p.target_index for p in prompts]),
        "gold": np.array([p.gold for p in prompts]),
    }

    def probability_at(indices: np.ndarray) -> np.ndarray:
        return np.array([probs[i] if i >= 0 else np.nan for probs, i in zip(probabilities, indices)])

    candidates = {
        "unknown_rate": (chosen == columns["unknown"]).astype(float),
        "mean_prob_target": probability_at(columns["target"]),
        "mean_prob_unknown": probability_at(columns["unknown"]),
        "accuracy": (chosen == columns["gold"]).astype(float),
    }
    applies = {
        "unknown_rate": columns["unknown"] >= 0,
        "mean_prob_target": columns["target"] >= 0,
        "mean_prob_unknown": columns["unknown"] >= 0,
        "accuracy": columns["gold"] >= 0,
    }
    return {
        metric: float(values[applies[metric]].mean()) for metric, values in candidates.items() if applies[metric].any()
    }


def random_unit_direction(width: int, seed: int) -> np.ndarray:
    """A seeded Gaussian direction [width] of unit norm."""
    direction = np.random.default_rng(seed).standard_normal(width)
    return direction / np.linalg.norm(direction)


def steering_rows(
    model: LoadedModel,
    prompts: Sequence[OptionPrompt],
    site: str,
    layer: int,
    direction: np.ndarray,
    alphas: Sequence[float],
    *,
    seed: int,
    batch_size: int = 8,
) -> list[dict[str, object]]:
    """``steering.csv`` rows for one site and layer: probe and random arms at every alpha.

    Args:
        direction: [d_model] the probe direction (normalised here).
        alphas: multiples of the unit direction to add (0 gives the unsteered distribution).
        seed: seed of the random direction (``seed + layer``).

    Raises:
        ProbeInputError: a site that cannot be steered with a [d_model] vector, or a width mismatch.
    """
    if site not in STEERABLE_SITES:
        raise ProbeInputError(f"steering at {site!r}: steer one of {', '.join(STEERABLE_SITES)}")
    width = model.architecture.d_model
    if direction.shape != (width,):
        raise ProbeInputError(
            f"steering at blocks.{layer}.{site}: the direction is {direction.shape[0]} wide but the model's "
            f"d_model is {width}; steer with a probe fitted on this model"
        )
    arms = {"probe": direction / np.linalg.norm(direction), "random": random_unit_direction(width, seed + layer)}
    rows: list[dict[str, object]] = []
    for name, unit in arms.items():
        vector = torch.as_tensor(unit, dtype=model.dtype, device=model.device)
        for alpha in alphas:
            steer = Intervention(f"blocks.{layer}.{site}", "add", value=float(alpha) * vector)
            metrics = distribution_metrics(prompts, option_distribution(model, prompts, [steer], batch_size))
            rows.extend(
                {
                    "site": site,
                    "layer": layer,
                    "direction": name,
                    "alpha": float(alpha),
                    "metric": metric,
                    "value": value,
                }
                for metric, value in metrics.items()
            )
    return rows
