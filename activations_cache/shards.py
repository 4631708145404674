"""Joining per-rank caches of a data-parallel (``torchrun``) run into one virtual cache.

Each rank writes its own cache (the workbench names them ``shards/cache.rank0-of-2.h5``, ...).
``join_shards`` writes a small file whose activation datasets are HDF5 virtual datasets (VDS) over
the committed rows of every shard, in the order given, and whose records table is the shards'
tables concatenated (records are small, so they are copied). ``open_cache`` reads the joined file
like any other cache; the shard files must stay where they are (paths are stored relative to the
joined file's folder).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from activations_cache.errors import CacheMismatchError, RecordError
from activations_cache.file_layout import (
    COMMITTED_RECORDS,
    LIBVER,
    RECORDS_GROUP,
    create_record_columns,
    durable_replace,
    label_activation_dataset,
    utc_now,
)
from activations_cache.reader import CacheReader, open_cache
from activations_cache.records import duplicate_keys

SHARED_ATTRIBUTES = (
    "schema_version",
    "model_id",
    "weights_hash",
    "tokenizer",
    "seed",
    "config_sha256",
    "cache_spec",
    "generation_engine",
)
"""Root attributes every shard of one run must share (``generation_engine`` is absent from files
written before it existed, and from concept sets; absent on every shard is equal)."""


def _check_compatible(readers: list[CacheReader]) -> None:
    first = readers[0]
    for reader in readers[1:]:
        differing = [name for name in SHARED_ATTRIBUTES if reader.metadata.get(name) != first.metadata.get(name)]
        if differing:
            raise CacheMismatchError(
                f"shard {reader.path} differs from {first.path} in {differing}; join only the shards of one run"
            )
    keys = [key for reader in readers for key in reader.records["record_key"].tolist()]
    repeated = duplicate_keys(keys)
    if repeated:
        raise RecordError(f"record_key {repeated[:5]} occur in more than one shard; give each rank distinct records")


def join_shards(paths: list[str | os.PathLike[str]], out_path: str | os.PathLike[str]) -> Path:
    """Write ``out_path``: one cache joining the committed records of every shard in ``paths``.

    Root attributes are the first shard's, with a new ``created_at`` and a ``shards`` attribute
    (JSON list of the shard paths relative to ``out_path``'s folder).

    Raises:
        CacheMismatchError: shards of different runs (schema, spec, model, config or seed).
        RecordError: a record_key present in two shards.
    """
    if not paths:
        raise ValueError("join_shards got no shard paths; pass the per-rank cache files")
    target = Path(out_path)
    readers = [open_cache(path) for path in paths]
    try:
        _check_compatible(readers)
        staging = target.with_name(target.name + ".creating")
        total = sum(reader.n_records for reader in readers)
        relative = [os.path.relpath(reader.path.resolve(), target.parent.resolve()) for reader in readers]
        spec = readers[0].spec
        with h5py.File(staging, "w", libver=LIBVER) as joined:
            for name, value in readers[0].metadata.items():
                joined.attrs[name] = value
            joined.attrs["created_at"] = utc_now()
            joined.attrs["resumed_at"] = "[]"
            joined.attrs["shards"] = json.dumps(relative)
            for dataset in spec.datasets:
                layout = h5py.VirtualLayout(shape=(total, *dataset.row_shape), dtype=spec.dtype)
                offset = 0
                for reader, source_path in zip(readers, relative):
                    rows = reader.n_records
                    stored_shape = reader.dataset(dataset.site, dataset.position).shape
                    source = h5py.VirtualSource(source_path, dataset.path, shape=stored_shape)
                    layout[offset : offset + rows] = source[:rows]
                    offset += rows
                label_activation_dataset(joined.create_virtual_dataset(dataset.path, layout), dataset)
            create_record_columns(joined, spec)
            for name in spec.columns:
                column = joined[f"{RECORDS_GROUP}/{name}"]
                column.resize(total, axis=0)
                if total:
                    column[:] = np.concatenate([reader.records[name] for reader in readers])
            joined.create_dataset(COMMITTED_RECORDS, shape=(), dtype=np.int64, data=total)
    finally:
        for reader in readers:
            reader.close()
    durable_replace(staging, target)
    return target
