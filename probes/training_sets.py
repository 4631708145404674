"""Concept activations -> the (features, labels, groups) a probe kind is fitted and scored on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from probes.concept_capture import ConceptActivations
from probes.concept_sets import contrast_pair_rows
from probes.errors import ConceptSetError, SingleClassError


@dataclass(frozen=True)
class TrainingSet:
    """Features, labels and split groups of one site.

    Attributes:
        features: [n, layers, width] (CCS: [n_pairs, layers, 2 * width] as [first | second]).
        labels: [n] in {0, 1}.
        groups: [n] split units.
    """

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray


def training_set(concept: ConceptActivations, kind: str) -> TrainingSet:
    """Statements as they are (logistic, mean difference) or as contrast pairs (CCS).

    CCS pairs are ``probes.concept_sets.contrast_pair_rows`` (in the order of their concept
    statements) and alternate their sides, ``[concept | contrast]`` (label 1) then
    ``[contrast | concept]`` (label 0), so both classes are present; the CCS loss ignores labels,
    which only orient the fitted direction.

    Raises:
        SingleClassError: the statements hold one label only.
        ConceptSetError: CCS on a set without contrast pairs.
    """
    labels = np.asarray(concept.labels, dtype=int)
    if np.unique(labels).size < 2:
        raise SingleClassError(
            f"the concept set holds only label {labels[0]} ({labels.size} statements); "
            "a probe needs concept and contrast statements"
        )
    if kind != "ccs":
        return TrainingSet(concept.activations, labels, np.asarray(concept.groups))
    pairs = contrast_pair_rows(concept.example_ids)
    if len(pairs) < 2:
        raise ConceptSetError(
            f"kind 'ccs' needs contrast pairs (<pair>/concept + <pair>/contrast); the concept set has "
            f"{len(pairs)}; use a paired set (embedded, bbq-items, crows_pairs) or kind 'logistic'"
        )
    first = np.array([a if k % 2 == 0 else b for k, (a, b) in enumerate(pairs)])
    second = np.array([b if k % 2 == 0 else a for k, (a, b) in enumerate(pairs)])
    features = np.concatenate([concept.activations[first], concept.activations[second]], axis=2)
    pair_labels = np.array([1 - k % 2 for k in range(len(pairs))])
    groups = np.asarray(concept.groups)[[a for a, _ in pairs]]
    return TrainingSet(features, pair_labels, groups)
