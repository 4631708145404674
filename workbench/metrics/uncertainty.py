"""Semantic uncertainty of sampled answers (paper 4, docs/protocols.md §2.2) and Kuhn-style entropy.

Given the k sampled continuations of one round input, their mean-token NLLs (nats, prompt masked)
and an equivalence relation ``equivalent(a, b) -> bool`` (:mod:`workbench.inference.semantic_equivalence`):

1. Duplicates are removed (:func:`distinct_samples`; paper 4 clusters ``set(samples)``).
2. Greedy anchor clustering (:func:`anchor_clusters`): each sample, in order, joins the first
   cluster whose anchor (first member) it is equivalent to, else it founds a new cluster. This is
   the clustering paper 4's scripts intend; their ``clustering`` never removes the anchor from the
   pending list (see docs/protocols.md §2.2), which this one pass does not copy.
3. ``semantic_uncertainty = mean over clusters of (mean NLL of the cluster's members)``. This is
   the paper's score; it is not an entropy.
4. Alternative, Kuhn et al. (2023): with each sample's sequence likelihood ``exp(-NLL)``, a
   cluster's probability is the normalised sum of its members' likelihoods and
   ``semantic_entropy = -sum_c p_c ln p_c`` (nats).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Equivalence = Callable[[str, str], bool]

PAPER4_TOKEN_BUDGETS: dict[str, int] = {"realtoxicity": 125}
"""New tokens per sample where paper 4 used a budget other than the answer's (``--max_new_tokens 125``
for toxicity in HaitaoMao/LLM-self-correction@071c790 ``analysis/uncerntainty_estimate.py``; BBQ: 8,
the answer budget)."""


def uncertainty_token_budget(task: str, answer_tokens: int, uncertainty_tokens: int | None) -> int:
    """New tokens per sample for an item of ``task``: ``uncertainty_tokens`` when set, else paper 4's
    per-task budget (:data:`PAPER4_TOKEN_BUDGETS`), else the answer turn's ``answer_tokens``."""
    if uncertainty_tokens is not None:
        return uncertainty_tokens
    return PAPER4_TOKEN_BUDGETS.get(task, answer_tokens)


def exact_match_equivalence(a: str, b: str) -> bool:
    """Equal after stripping surrounding whitespace and lower-casing."""
    return a.strip().lower() == b.strip().lower()


def distinct_samples(samples: Sequence[str]) -> list[str]:
    """``samples`` without repeats, in order of first occurrence (paper 4's ``set(samples)``; a set's
    order varies with the interpreter's string hashing, this one does not)."""
    return list(dict.fromkeys(samples))


def anchor_clusters(samples: Sequence[str], equivalent: Equivalence = exact_match_equivalence) -> list[list[int]]:
    """Greedy anchor clustering; returns lists of sample indices, in order of foundation.

    Every index appears in exactly one cluster; each member is equivalent to its cluster's anchor
    and to no earlier cluster's anchor.
    """
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
