"""Streaming, resumable HDF5 cache of activations and their records (layout: FORMAT.md).

Knows HDF5 and the format only: it takes numpy arrays and record rows, nothing about models.
"""

from __future__ import annotations

from activations_cache.errors import (
    ActivationShapeError,
    CacheError,
    CacheFormatError,
    CacheMismatchError,
    CachePathError,
    CacheSpecError,
    CacheWriteError,
    RecordError,
)
from activations_cache.file_layout import SCHEMA_VERSION
from activations_cache.inspection import VerifyReport, cache_info, verify_cache
from activations_cache.reader import CacheReader, open_cache
from activations_cache.repair import RepairReport, repair_cache
from activations_cache.shards import join_shards
from activations_cache.spec import (
    BUILTIN_COLUMNS,
    CACHE_KINDS,
    CacheMetadata,
    CacheSpec,
    ColumnSpec,
    DatasetSpec,
    chunk_bytes_for,
    config_sha256,
    infer_kind,
)
from activations_cache.writer import CacheWriter
from activations_cache.writer_lock import gone_writer, lock_path

__all__ = [
    "BUILTIN_COLUMNS",
    "CACHE_KINDS",
    "SCHEMA_VERSION",
    "ActivationShapeError",
    "CacheError",
    "CacheFormatError",
    "CacheMetadata",
    "CacheMismatchError",
    "CachePathError",
    "CacheReader",
    "CacheSpec",
    "CacheSpecError",
    "CacheWriteError",
    "CacheWriter",
    "ColumnSpec",
    "DatasetSpec",
    "RecordError",
    "RepairReport",
    "VerifyReport",
    "cache_info",
    "chunk_bytes_for",
    "config_sha256",
    "gone_writer",
    "infer_kind",
    "join_shards",
    "lock_path",
    "open_cache",
    "repair_cache",
    "verify_cache",
]
