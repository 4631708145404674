"""Capture a concept set through the hook layer into its own cache (``run_dir/probes/concepts.h5``).

Each statement is one record (``record_key`` = its ``example_id``, ``prompt`` = ``text``,
``condition`` = ``"concept"``, ``round`` = 0) with the columns ``label``, ``group_id`` and
``text``. Statements are raw text: no chat template, ``add_special_tokens=True``. Paper 4's
question blocks of the run's records (``[probe] concept_input = "question_block"``) are records
of the same cache with ``label`` = :data:`INPUT_LABEL`; they are tokenized as the run tokenized
its prompts (without special tokens when the prompt came from a chat template). The writer
resumes like any cache, so an interrupted capture continues where it stopped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activations_cache import (
    CacheError,
    CacheMetadata,
    CacheReader,
    CacheSpec,
    CacheWriter,
    ColumnSpec,
    DatasetSpec,
    open_cache,
)
from probes.cache_reading import ProbeSite, read_layers, stored_site
from probes.concept_sets import ConceptExample
from probes.errors import ConceptSetError
from workbench.hooks import capture
from workbench.hooks.sites import Site, SiteKind
from workbench.models.loading import LoadedModel

CONCEPT_CONDITION = "concept"
INPUT_LABEL = -1
"""The ``label`` of a record that is a run input (a question block), not a concept statement."""
CONCEPT_COLUMNS = {"label": ColumnSpec("int64"), "group_id": ColumnSpec("str"), "text": ColumnSpec("str")}


@dataclass(frozen=True)
class ConceptActivations:
    """A concept set's activations at one site, in the order of its cache records.

    Attributes:
        activations: [n, layers, width] float32.
        layers: model layer of each column of the layers axis.
        labels: [n] int, 1 = concept side.
        groups: [n] group ids (split units).
        example_ids: [n] the statements' ids.
        texts: [n] the statements.
    """

    activations: np.ndarray
    layers: tuple[int, ...]
    labels: np.ndarray
    groups: np.ndarray
    example_ids: np.ndarray
    texts: np.ndarray


def concept_cache_spec(sites: Sequence[ProbeSite], dtype: str = "float32") -> CacheSpec:
    """The layout of a concept cache: one dataset per site with the given layers."""
    return CacheSpec(
        datasets=tuple(DatasetSpec(s.position, s.site, s.layers, s.shape) for s in sites),
        record_columns=CONCEPT_COLUMNS,
        dtype=dtype,
    )


def concept_records(examples: Sequence[ConceptExample]) -> list[dict[str, object]]:
    """Cache record rows of the statements (``n_prompt_tokens`` is filled in at capture)."""
    return [
        {
            "record_key": example.example_id,
            "item_id": example.group_id,
            "condition": CONCEPT_CONDITION,
            "round": 0,
            "prompt": example.text,
            "answer": "",
            "n_answer_tokens": 0,
            "label": int(example.label),
            "group_id": example.group_id,
            "text": example.text,
        }
        for example in examples
    ]


def check_concept_set(examples: Sequence[ConceptExample]) -> None:
    """Raise ``ConceptSetError`` on repeated example ids or empty statements."""
    repeated = sorted(key for key, count in Counter(e.example_id for e in examples).items() if count > 1)
    if repeated:
        raise ConceptSetError(f"concept set repeats example_id {repeated[:3]}; ids must be unique")
    empty = [example.example_id for example in examples if not example.text.strip()]
    if empty:
        raise ConceptSetError(f"concept set has empty statements {empty[:3]}; drop them")


def capture_concept_set(
    model: LoadedModel,
    examples: Sequence[ConceptExample],
    cache_path: Path,
    sites: Sequence[ProbeSite],
    metadata: CacheMetadata,
    *,
    batch_size: int = 8,
    backend: str = "hf",
    overwrite: bool = False,
    templated: frozenset[str] = frozenset(),
) -> Path:
    """Capture ``sites`` at their positions for every statement not yet in ``cache_path``.

    Args:
        model: the run's model.
        examples: the concept set.
        cache_path: the concept cache (created, or resumed when it belongs to the same run).
        sites: what to store (site, position, layers, shape per layer).
        metadata: model, tokenizer, configuration and seed recorded in the cache.
        batch_size: statements per forward (and per committed batch).
        backend: hook backend.
        overwrite: start afresh (the existing file was captured for another layout or set).
        templated: ids of texts that carry their chat template's special tokens already (tokenized
            with ``add_special_tokens=False``).
    """
    check_concept_set(examples)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    records = concept_records(examples)
    names = [Site(layer, SiteKind(site.site)).name for site in sites for layer in site.layers]
    positions = tuple(dict.fromkeys(site.position for site in sites))
    with CacheWriter.open(cache_path, concept_cache_spec(sites), metadata, overwrite=overwrite) as writer:
        done = writer.committed_keys()
        todo = [record for record in records if record["record_key"] not in done]
        plain = [record for record in todo if record["record_key"] not in templated]
        chat = [record for record in todo if record["record_key"] in templated]
        batches = [
            (group[start : start + batch_size], group is plain)
            for group in (plain, chat)
            for start in range(0, len(group), batch_size)
        ]
        for batch, special in batches:
            captured = capture(
                model,
                [str(record["prompt"]) for record in batch],
                sites=names,
                positions=positions,
                backend=backend,
                batch_size=batch_size,
                add_special_tokens=special,
            )
            activations = {
                (site.position, site.site): captured.get(SiteKind(site.site), site.position).numpy() for site in sites
            }
            for record, length in zip(batch, captured.prompt_lengths):
                record["n_prompt_tokens"] = int(length)
            writer.submit(batch, activations)
    return cache_path


def concept_cache_matches(cache_path: Path, sites: Sequence[ProbeSite], weights_hash: str, config_sha256: str) -> bool:
    """Whether ``cache_path`` exists with this layout, these weights and this configuration.

    A concept cache is derived data: a damaged or foreign file does not match, and is captured again.
    """
    if not cache_path.is_file():
        return False
    try:
        with open_cache(cache_path, expect="concept") as reader:
            return (
                reader.spec == concept_cache_spec(sites)
                and reader.metadata["weights_hash"] == weights_hash
                and reader.metadata["config_sha256"] == config_sha256
            )
    except CacheError:
        return False


def concept_cache_complete(
    cache_path: Path,
    examples: Sequence[ConceptExample],
    sites: Sequence[ProbeSite],
    weights_hash: str,
    config_sha256: str,
) -> bool:
    """Whether ``cache_path`` matches (see ``concept_cache_matches``) and holds every statement."""
    if not concept_cache_matches(cache_path, sites, weights_hash, config_sha256):
        return False
    with open_cache(cache_path, expect="concept") as reader:
        return set(reader.records["record_key"]) >= {example.example_id for example in examples}


def read_concept_activations(
    reader: CacheReader,
    site: str,
    position: str,
    layers: Sequence[int],
    example_ids: Sequence[str] | None = None,
) -> ConceptActivations:
    """Activations and labels of a concept cache at one site (rows in ``example_ids`` order).

    Raises:
        CacheSiteError: the site or a layer is missing; NonFiniteActivationsError: NaN or inf.
        ConceptSetError: an example id is not in the cache.
    """
    records = reader.records
    keys = list(records["record_key"])
    if example_ids is None:
        rows = np.arange(len(keys))
    else:
        index = {key: row for row, key in enumerate(keys)}
        missing = [example_id for example_id in example_ids if example_id not in index]
        if missing:
            raise ConceptSetError(
                f"{reader.path} lacks concept statement(s) {missing[:3]}; rerun the probe stage to capture them"
            )
        rows = np.array([index[example_id] for example_id in example_ids], dtype=np.int64)
    stored = stored_site(reader, site, position)
    return ConceptActivations(
        activations=read_layers(reader, stored, layers, rows),
        layers=tuple(layers),
        labels=records["label"][rows].astype(int),
        groups=records["group_id"][rows],
        example_ids=records["record_key"][rows],
        texts=records["text"][rows],
    )
