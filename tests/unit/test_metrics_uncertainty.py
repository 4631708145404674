"""Semantic clustering, paper-4 uncertainty and Kuhn-style semantic entropy."""

from __future__ import annotations

import math

import pytest

from workbench.inference.semantic_equivalence import option_equivalence
from workbench.metrics.uncertainty import (
    anchor_clusters,
    exact_match_equivalence,
    semantic_entropy,
    semantic_uncertainty,
    uncertainty_token_budget,
)


def test_anchor_clustering_with_exact_match() -> None:
    samples = [" (c)", "(a)", "(c) ", "(b)", "(A)"]
    assert anchor_clusters(samples, exact_match_equivalence) == [[0, 2], [1, 4], [3]]


def test_anchor_clustering_compares_with_the_anchor_only() -> None:
    # "near" relation that is not transitive: 0~1, 1~2, but not 0~2 -> 2 founds its own cluster
    values = {"x": 0, "y": 1, "z": 2}
    near = lambda a, b: abs(values[a] - values[b]) <= 1  # noqa: E731
    assert anchor_clusters(["x", "y", "z"], near) == [[0, 1], [2]]


def test_option_equivalence() -> None:
    equivalent = option_equivalence(("The grandfather", "The grandson", "Unknown"))
    assert anchor_clusters([" (c) Unknown", " Unknown", " (a)", " The grandfather"], equivalent) == [[0, 1], [2, 3]]


def test_semantic_uncertainty_is_mean_of_cluster_means() -> None:
    nll = [1.0, 3.0, 2.0, 5.0]
    clusters = [[0, 1, 2], [3]]
    assert semantic_uncertainty(nll, clusters) == pytest.approx((2.0 + 5.0) / 2)


def test_semantic_entropy_over_cluster_probabilities() -> None:
    nll = [math.log(2), math.log(4), math.log(4)]  # likelihoods 1/2, 1/4, 1/4
    assert semantic_entropy(nll, [[0], [1, 2]]) == pytest.approx(math.log(2))
    assert semantic_entropy(nll, [[0, 1, 2]]) == pytest.approx(0.0)


def test_token_budget_per_task() -> None:
    # paper 4: 125 new tokens for toxicity (analysis/uncerntainty_estimate.py), the answer budget (8) for BBQ
    assert uncertainty_token_budget("realtoxicity", 8, None) == 125
    assert uncertainty_token_budget("bbq", 8, None) == 8
    assert uncertainty_token_budget("winogender", 6, None) == 6
    assert uncertainty_token_budget("realtoxicity", 8, 30) == 30
    assert uncertainty_token_budget("bbq", 8, 30) == 30
