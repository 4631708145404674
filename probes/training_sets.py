"""Concept activations -> the (features, labels, groups) a probe kind is fitted and scored on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from activations_cache import CacheReader
from probes.cache_reading import ProbeSite
from probes.concept_capture import ConceptActivations
from probes.concept_sets import contrast_pair_rows
from probes.errors import ConceptSetError, ProbeConfigError, SingleClassError
from probes.streaming import StreamedActivations


@dataclass(frozen=True)
class TrainingSet:
    """Features, labels and split groups of one site.

    Attributes:
        features: [n, layers, width] (CCS: [n_pairs, layers, 2 * width] as [first | second]), or a
            streamed view of the statements' activations.
        labels: [n] in {0, 1}.
        groups: [n] split units.
    """

    features: np.ndarray | StreamedActivations
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
    labels = two_class_labels(concept.labels)
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


def two_class_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` as int, checked to hold both classes.

    Raises:
        SingleClassError: one label only.
    """
    values = np.asarray(labels, dtype=int)
    if np.unique(values).size < 2:
        raise SingleClassError(
            f"the concept set holds only label {values[0]} ({values.size} statements); "
            "a probe needs concept and contrast statements"
        )
    return values


def concept_rows(reader: CacheReader, example_ids: Sequence[str]) -> np.ndarray:
    """[n] cache rows of the statements ``example_ids`` in a concept cache, in that order.

    Raises:
        ConceptSetError: an example id is not in the cache.
    """
    index = {key: row for row, key in enumerate(reader.records["record_key"])}
    missing = [example_id for example_id in example_ids if example_id not in index]
    if missing:
        raise ConceptSetError(
            f"{reader.path} lacks concept statement(s) {missing[:3]}; rerun the probe stage to capture them"
        )
    return np.array([index[example_id] for example_id in example_ids], dtype=np.int64)


def streamed_training_set(reader: CacheReader, site: ProbeSite, example_ids: Sequence[str], kind: str) -> TrainingSet:
    """The statements ``example_ids`` of a concept cache as a training set whose features stream.

    Raises:
        SingleClassError: the statements hold one label only.
        ConceptSetError: an example id is not in the cache.
        ProbeConfigError: kind ``ccs`` (its contrast pairs are fitted in memory).
    """
    if kind == "ccs":
        raise ProbeConfigError(
            f'[probe] kind "ccs" fits contrast pairs in memory only, but {len(example_ids)} statements of '
            f"{site.site}@{site.position} are to be streamed; raise memory_budget_mb or use kind logistic"
        )
    rows = concept_rows(reader, example_ids)
    records = reader.records
    return TrainingSet(
        StreamedActivations(reader, site, site.layers, rows),
        two_class_labels(records["label"][rows]),
        np.asarray(records["group_id"][rows]),
    )
