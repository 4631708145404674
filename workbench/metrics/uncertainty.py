"""Semantic uncertainty of sampled answers (paper 4, docs/protocols.md §2.2) and Kuhn-style entropy.

Given k sampled continuations of one round input, their mean-token NLLs (nats, prompt masked) and
an equivalence function ``equivalent(a, b) -> bool``:

1. Greedy anchor clustering: each sample, in order, joins the first cluster whose anchor (first
   member) it is equivalent to, else it founds a new cluster. Paper 4 uses an NLI model and calls two
   samples equivalent unless either direction predicts CONTRADICTION; plug that in as
   ``equivalent``.
2. ``semantic_uncertainty = mean over clusters of (mean NLL of the cluster's members)``. This is
   the paper's score; it is not an entropy.
3. Alternative, Kuhn et al. (2023): with each sample's sequence likelihood ``exp(-NLL)``, a
   cluster's probability is the normalised sum of its members' likelihoods and
   ``semantic_entropy = -sum_c p_c ln p_c`` (nats).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from workbench.metrics.answers import parse_option

Equivalence = Callable[[str, str], bool]


def exact_match_equivalence(a: str, b: str) -> bool:
    """Equal after stripping surrounding whitespace and lower-casing."""
    return a.strip().lower() == b.strip().lower()


def same_option_equivalence(options: Sequence[str]) -> Equivalence:
    """Equivalent when both texts parse to the same option (two unparsed texts are equivalent too)."""

    def equivalent(a: str, b: str) -> bool:
        return parse_option(a, options) == parse_option(b, options)

    return equivalent


def anchor_clusters(samples: Sequence[str], equivalent: Equivalence = exact_match_equivalence) -> list[list[int]]:
    """Greedy anchor clustering; returns lists of sample indices, in order of foundation."""
    clusters: list[list[int]] = []
    for i, sample in enumerate(samples):
        for cluster in clusters:
            if equivalent(samples[cluster[0]], sample):
                cluster.append(i)
                break
        else:
            clusters.append([i])
    return clusters


def semantic_uncertainty(mean_nll: Sequence[float], clusters: Sequence[Sequence[int]]) -> float:
    """Paper 4's score: mean over clusters of the mean member NLL (nats)."""
    nll = np.asarray(mean_nll, dtype=float)
    if not clusters:
        return float("nan")
    return float(np.mean([nll[list(cluster)].mean() for cluster in clusters]))


def semantic_entropy(mean_nll: Sequence[float], clusters: Sequence[Sequence[int]]) -> float:
    """Kuhn-style entropy (nats) of cluster probabilities built from ``exp(-NLL)`` likelihoods."""
    nll = np.asarray(mean_nll, dtype=float)
    if not clusters:
        return float("nan")
    shift = nll.min()
    mass = np.array([np.exp(-(nll[list(cluster)] - shift)).sum() for cluster in clusters])
    p = mass / mass.sum()
    return float(-(p * np.log(p)).sum())
