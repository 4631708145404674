"""The on-disk layout: object paths, root attributes, and creating an empty cache file.

See ``FORMAT.md`` for the prose version. Every cache is written with HDF5 file-format bounds
``LIBVER`` (v1.10 objects), the oldest format that supports single-writer/multiple-reader (SWMR)
access, so that HDF5 1.10 tools (``h5dump``) still read it.
"""

from __future__ import annotations

import functools
import json
import os
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from activations_cache.errors import CacheFormatError
from activations_cache.spec import CacheMetadata, CacheSpec, ColumnSpec, DatasetSpec, canonical_json, infer_kind

SCHEMA_VERSION = 1
FORMAT_NAME = "activations_cache"
LIBVER = ("v110", "v110")

ACTIVATIONS_GROUP = "activations"
RECORDS_GROUP = "records"
COMMITTED_RECORDS = "committed_records"
RECORD_CHUNK_ROWS = 1024

TIMESTAMP_ATTRIBUTES = ("created_at", "resumed_at", "repaired_at")
"""Root attributes that differ between an uninterrupted run and a resumed (or repaired) one."""

REQUIRED_ATTRIBUTES = ("model_id", "weights_hash", "tokenizer", "seed", "config_json", "config_sha256", "cache_spec")
"""Root attributes every cache has besides ``format`` and ``schema_version`` (checked on open)."""


def utc_now() -> str:
    """The current time as ISO 8601 UTC with seconds, e.g. ``2026-01-31T12:00:00+00:00``."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@functools.cache
def library_versions() -> dict[str, str]:
    """Versions of h5py, HDF5, numpy, and torch / transformers when installed (not imported);
    read once per process (reading package metadata costs milliseconds)."""
    versions = {"h5py": h5py.version.version, "hdf5": h5py.version.hdf5_version, "numpy": np.__version__}
    for name in ("torch", "transformers"):
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            continue
    return versions


def root_attributes(spec: CacheSpec, meta: CacheMetadata) -> dict[str, Any]:
    """The root attributes of a new cache (see FORMAT.md, "Root attributes")."""
    return {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "kind": meta.kind or infer_kind(spec),
        "model_id": meta.model_id,
        "weights_hash": meta.weights_hash,
        "tokenizer": meta.tokenizer,
        "seed": int(meta.seed),
        "config_json": meta.config_json,
        "config_sha256": meta.config_sha256,
        "cache_spec": spec.to_json(),
        "library_versions": json.dumps(library_versions(), sort_keys=True),
        "created_at": utc_now(),
        "resumed_at": "[]",
        **({} if meta.generation_engine is None else {"generation_engine": canonical_json(meta.generation_engine)}),
    }


def column_dtype(column: ColumnSpec) -> np.dtype:
    """HDF5 storage dtype of a record column (UTF-8 variable-length for ``str``)."""
    if column.kind == "str":
        return h5py.string_dtype("utf-8")
    return np.dtype(column.kind)


def label_activation_dataset(target: h5py.Dataset, dataset: DatasetSpec) -> None:
    """Set the attributes of an activation dataset: ``position``, ``site``, ``layers``, ``axes``."""
    target.attrs["position"] = dataset.position
    target.attrs["site"] = dataset.site
    target.attrs["layers"] = np.asarray(dataset.layers, dtype=np.int64)
    target.attrs["axes"] = "records,layers,d" if len(dataset.shape) == 1 else "records,layers,heads,d_head"


def create_record_columns(file: h5py.File, spec: CacheSpec) -> None:
    """Create ``/records/<column>`` for every column: ``[0]`` (or ``[0, length]``), growable."""
    records = file.create_group(RECORDS_GROUP)
    for name, column in spec.columns.items():
        tail = () if column.length is None else (column.length,)
        created = records.create_dataset(
            name,
            shape=(0, *tail),
            maxshape=(None, *tail),
            dtype=column_dtype(column),
            chunks=(RECORD_CHUNK_ROWS, *tail),
        )
        created.attrs["kind"] = column.kind


def create_skeleton(file: h5py.File, spec: CacheSpec, attributes: dict[str, Any]) -> None:
    """Create every group and dataset of a cache with zero records, and the root attributes.

    Activation datasets are ``[0, layers, *shape]`` with unlimited first axis and chunks
    ``spec.chunk_shape``; record columns are ``[0]`` (or ``[0, length]`` for vectors).
    """
    for name, value in attributes.items():
        file.attrs[name] = value
    for dataset in spec.datasets:
        created = file.create_dataset(
            dataset.path,
            shape=(0, *dataset.row_shape),
            maxshape=(None, *dataset.row_shape),
            dtype=spec.dtype,
            chunks=spec.chunk_shape(dataset),
            compression=spec.compression,
        )
        label_activation_dataset(created, dataset)
    create_record_columns(file, spec)
    file.create_dataset(COMMITTED_RECORDS, shape=(), dtype=np.int64, data=0)


def decoded_attributes(file: h5py.File) -> dict[str, Any]:
    """Root attributes as Python values (str, int, or float)."""
    decoded: dict[str, Any] = {}
    for name, value in file.attrs.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif isinstance(value, np.generic):
            value = value.item()
        decoded[name] = value
    return decoded


def check_schema(path: Path, attributes: dict[str, Any]) -> None:
    """Raise ``CacheFormatError`` unless ``attributes`` belong to a cache of ``SCHEMA_VERSION``."""
    if attributes.get("format") != FORMAT_NAME or "schema_version" not in attributes:
        raise CacheFormatError(
            f"{path} is not an activations cache (root attribute format={attributes.get('format')!r}); "
            "point to a cache.h5 written by the workbench"
        )
    version = attributes["schema_version"]
    if version != SCHEMA_VERSION:
        raise CacheFormatError(
            f"{path} has cache schema version {version}, this workbench reads version "
            f"{SCHEMA_VERSION}; use the workbench version that wrote it, or re-run the capture"
        )


def fsync_path(path: Path) -> None:
    """fsync a file or folder by path."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def durable_replace(source: Path, target: Path) -> None:
    """fsync ``source``, atomically rename it onto ``target``, then fsync their folder."""
    fsync_path(source)
    os.replace(source, target)
    fsync_path(target.parent)
