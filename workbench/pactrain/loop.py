"""What every training run here shares: seeded mini-batches, functional forward passes, accuracy,
and one reproducible CPU setting for the duration of a run."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call


def epoch_batches(n_examples: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's example indices: a seeded permutation of 0..n-1 cut into batches of ``batch_size``."""
    return list(torch.randperm(n_examples, generator=generator).split(batch_size))


def network_logits(network: nn.Module, weights: Mapping[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    """Logits (N, classes) of ``network`` run with ``weights`` (name -> tensor) in place of its own."""
    return functional_call(network, dict(weights), (features,))


@torch.no_grad()
def accuracy(
    network: nn.Module, weights: Mapping[str, torch.Tensor], features: torch.Tensor, labels: torch.Tensor
) -> float:
    """Share of ``labels`` (N,) whose logit is the largest, in [0, 1]."""
    predictions = network_logits(network, weights, features).argmax(dim=1)
    return float((predictions == labels).double().mean())


def current_weights(network: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the network's parameters, name -> tensor."""
    return {name: parameter.detach().clone() for name, parameter in network.named_parameters()}


@contextmanager
def reproducible_cpu() -> Iterator[None]:
    """One intra-op thread inside the block; the previous thread count afterwards.

    With one thread every CPU kernel used here (linear, conv2d, max-pool, cross-entropy and their
    gradients) is deterministic and its float reductions run in one order, so a seed gives the same
    numbers on any number of cores. ``torch.use_deterministic_algorithms`` would add nothing on
    this path and its first call imports the compiler stack (about 5 s). The networks are small
    enough that one thread is also the fastest setting (an MLP step took 3 ms on one thread and
    27-89 ms on two busy cores).
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
