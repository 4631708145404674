"""Getting a cache file ready for appending: create it, or check and resume an existing one.

A run killed at any moment leaves one of three states, each handled here:

* a leftover ``<name>.creating`` or ``<name>.recovering`` file: never valid, deleted;
* a cleanly closed cache: opened in place; rows past the committed count are cut off;
* a cache whose writer died (HDF5 still marks it "open for write"): opened read-only in SWMR
  mode, which SWMR writing keeps consistent on disk at every flush, and its committed prefix is
  copied into ``<name>.recovering``, fsynced and atomically renamed onto the cache.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import h5py
import numpy as np

from activations_cache.errors import CacheError, CacheFormatError, CacheMismatchError, CachePathError
from activations_cache.file_layout import (
    COMMITTED_RECORDS,
    LIBVER,
    RECORDS_GROUP,
    check_schema,
    create_skeleton,
    decoded_attributes,
    durable_replace,
    root_attributes,
    utc_now,
)
from activations_cache.integrity import (
    LIVE_WRITER_READ_ATTEMPTS,
    READ_ERRORS,
    SuperblockError,
    one_line,
    open_swmr,
    read_superblock,
    truncation,
)
from activations_cache.spec import CacheMetadata, CacheSpec

OVERWRITE_HINT = "use another run name, or --overwrite"


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def check_cache_path(path: Path) -> None:
    """Raise ``CachePathError`` when ``path`` cannot hold a cache written by this process."""
    if path.is_dir():
        raise CachePathError(f"cache path {path} is a directory; give a file path such as {path / 'cache.h5'}")
    if not path.parent.is_dir():
        raise CachePathError(f"folder {path.parent} of cache {path} does not exist; create it first")
    folder_mode = path.parent.stat().st_mode
    if not os.access(path.parent, os.W_OK) or not folder_mode & stat.S_IWUSR:
        raise CachePathError(f"folder {path.parent} of cache {path} is read-only; make it writable")
    if path.exists() and (not os.access(path, os.W_OK) or not path.stat().st_mode & stat.S_IWUSR):
        raise CachePathError(f"cache {path} is read-only; make it writable, or {OVERWRITE_HINT}")


def _differences(attributes: dict[str, object], spec: CacheSpec, meta: CacheMetadata) -> list[str]:
    expected = root_attributes(spec, meta)
    differences = []
    for name in ("schema_version", "weights_hash", "config_sha256", "model_id", "tokenizer", "seed"):
        if attributes.get(name) != expected[name]:
            differences.append(f"{name} ({attributes.get(name)!r} in the file, {expected[name]!r} now)")
    if "kind" in attributes and attributes["kind"] != expected["kind"]:
        differences.append(f"kind ({attributes['kind']!r} in the file, {expected['kind']!r} now)")
    # a file written before the attribute existed resumes under any engine its configuration names
    if "generation_engine" in attributes and attributes["generation_engine"] != expected.get("generation_engine"):
        differences.append(
            f"generation_engine ({attributes['generation_engine']!r} in the file, "
            f"{expected.get('generation_engine')!r} now): answers decoded by another engine version"
        )
    stored_spec = attributes.get("cache_spec")
    if not isinstance(stored_spec, str) or CacheSpec.from_json(stored_spec) != spec:
        differences.append("the cache spec (datasets, record columns, dtype, compression or chunk_bytes)")
    return differences


def check_same_run(path: Path, attributes: dict[str, object], spec: CacheSpec, meta: CacheMetadata) -> None:
    """Raise ``CacheMismatchError`` unless the cache at ``path`` was written by this run."""
    check_schema(path, attributes)
    differences = _differences(attributes, spec, meta)
    if differences:
        raise CacheMismatchError(
            f"cache {path} was written by another run: it differs in {'; '.join(differences)}; {OVERWRITE_HINT}"
        )


def _create(path: Path, spec: CacheSpec, meta: CacheMetadata) -> None:
    staging = _sibling(path, ".creating")
    with h5py.File(staging, "w", libver=LIBVER) as file:
        create_skeleton(file, spec, root_attributes(spec, meta))
    durable_replace(staging, path)


def _append_resume_time(file: h5py.File, attributes: dict[str, object]) -> None:
    resumed = json.loads(str(attributes.get("resumed_at", "[]")))
    file.attrs["resumed_at"] = json.dumps([*resumed, utc_now()])


def _truncate_in_place(path: Path, spec: CacheSpec) -> None:
    with h5py.File(path, "r+", libver=LIBVER) as file:
        committed = int(file[COMMITTED_RECORDS][()])
        for dataset in spec.datasets:
            target = file[dataset.path]
            if target.shape[0] != committed:
                target.resize(committed, axis=0)
        for column in file[RECORDS_GROUP].values():
            if column.shape[0] != committed:
                column.resize(committed, axis=0)
        _append_resume_time(file, decoded_attributes(file))


def _copy_rows(source: h5py.Dataset, target: h5py.Dataset, rows: int, block_rows: int) -> None:
    target.resize(rows, axis=0)
    for start in range(0, rows, block_rows):
        stop = min(rows, start + block_rows)
        target[start:stop] = source[start:stop]


def copy_committed_prefix(source_path: Path, target_path: Path, spec: CacheSpec) -> int:
    """Write a fresh cache at ``target_path`` holding the committed records of ``source_path``.

    The source is opened read-only in SWMR mode (works even while HDF5 marks it open for write),
    with bounded metadata read attempts. Root and dataset attributes are copied verbatim, plus a
    new ``resumed_at`` timestamp.

    Returns:
        the number of records copied.
    """
    with open_swmr(source_path, LIVE_WRITER_READ_ATTEMPTS) as source:
        attributes = decoded_attributes(source)
        committed = int(source[COMMITTED_RECORDS][()])
        with h5py.File(target_path, "w", libver=LIBVER) as target:
            create_skeleton(target, spec, {name: source.attrs[name] for name in source.attrs})
            for dataset in spec.datasets:
                _copy_rows(source[dataset.path], target[dataset.path], committed, 4 * spec.chunk_rows(dataset))
            for name in spec.columns:
                column = f"{RECORDS_GROUP}/{name}"
                _copy_rows(source[column], target[column], committed, 1 << 16)
            target[COMMITTED_RECORDS][()] = committed
            _append_resume_time(target, attributes)
    return committed


def prepare_cache_file(path: Path, spec: CacheSpec, meta: CacheMetadata, overwrite: bool) -> None:
    """Leave a closed, consistent cache of this run at ``path`` whose rows are all committed.

    Creates it when absent (or when ``overwrite``); otherwise checks it belongs to this run and
    cuts off (or, after a crash, recovers) everything past the committed count.

    Raises:
        CachePathError, CacheMismatchError, CacheFormatError: one line naming the file and the fix.
    """
    check_cache_path(path)
    for leftover in (_sibling(path, ".creating"), _sibling(path, ".recovering")):
        leftover.unlink(missing_ok=True)
    if overwrite:
        path.unlink(missing_ok=True)
    if not path.exists():
        _create(path, spec, meta)
        return
    try:
        superblock = read_superblock(path)
    except SuperblockError as error:
        raise CacheFormatError(
            f"cache {path} cannot be opened even read-only ({error.reason}); delete it, or {OVERWRITE_HINT}"
        ) from error
    missing = truncation(path, superblock)
    if missing is not None:
        raise CacheFormatError(
            f"cache {path} is truncated ({missing}); run `workbench cache repair {path}` to keep its "
            f"readable records and rerun, or {OVERWRITE_HINT}"
        )
    try:
        _resume(path, spec, meta, cleanly_closed=not superblock.open_for_write)
    except CacheError:
        _sibling(path, ".recovering").unlink(missing_ok=True)
        raise
    except READ_ERRORS as error:
        _sibling(path, ".recovering").unlink(missing_ok=True)
        raise CacheFormatError(
            f"cache {path} is damaged ({one_line(error)}); run `workbench cache repair {path}` to keep its "
            f"readable records and rerun, or {OVERWRITE_HINT}"
        ) from error


def _resume(path: Path, spec: CacheSpec, meta: CacheMetadata, cleanly_closed: bool) -> None:
    """Check the existing cache belongs to this run; cut it (closed) or recover it (writer died)."""
    if cleanly_closed:
        with h5py.File(path, "r", libver=LIBVER) as file:
            attributes = decoded_attributes(file)
        check_same_run(path, attributes, spec, meta)
        _truncate_in_place(path, spec)
        return
    with open_swmr(path, LIVE_WRITER_READ_ATTEMPTS) as file:
        attributes = decoded_attributes(file)
    check_same_run(path, attributes, spec, meta)
    recovering = _sibling(path, ".recovering")
    copy_committed_prefix(path, recovering, spec)
    durable_replace(recovering, path)


def committed_record_keys(file: h5py.File) -> set[str]:
    """The ``record_key`` of every committed record of an open cache."""
    committed = int(file[COMMITTED_RECORDS][()])
    keys = file[f"{RECORDS_GROUP}/record_key"].asstr()[:committed]
    return set(np.asarray(keys, dtype=object).tolist())
