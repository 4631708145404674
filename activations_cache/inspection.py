"""Human summary (``cache_info``) and integrity check (``verify_cache``) of a cache file."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from activations_cache.errors import CacheError
from activations_cache.integrity import READ_ERRORS, one_line, repair_hint
from activations_cache.reader import CacheReader, open_cache
from activations_cache.records import duplicate_keys, text_sha256
from activations_cache.spec import DIGEST_COLUMNS


def _size_on_disk(path: Path) -> str:
    """File size in MiB (two decimals) and bytes."""
    size = os.path.getsize(path)
    return f"{size / (1 << 20):.2f} MiB ({size} bytes)"


def _chunking(dataset: h5py.Dataset) -> str:
    if dataset.is_virtual:
        return "virtual (joined shards)"
    compression = dataset.compression or "none"
    return f"chunks {dataset.chunks}, compression {compression}"


def _resumed(meta: dict[str, object]) -> object:
    try:
        return json.loads(str(meta.get("resumed_at", "[]")))
    except ValueError:
        return meta.get("resumed_at")


def _engine(recorded: object) -> str:
    try:
        engine = json.loads(str(recorded))
        return f"engine {engine['engine']} ({engine['package']} {engine['version']})"
    except (ValueError, KeyError, TypeError):
        return f"engine {recorded}"


def cache_info(path: str | os.PathLike[str]) -> str:
    """A multi-line summary: schema, kind, model, record counts per condition and round, datasets, size.

    Raises:
        CacheFormatError: the file cannot be opened (see ``open_cache``), in one line.
    """
    with open_cache(path) as reader:
        meta = reader.metadata
        records = reader.records
        lines = [
            f"cache {reader.path} ({reader.kind} cache, schema version {meta['schema_version']}, "
            f"{_size_on_disk(reader.path)} on disk)",
            f"model {meta['model_id']} (weights {meta['weights_hash']}), "
            f"tokenizer {meta['tokenizer']}, seed {meta['seed']}",
            f"config sha256 {meta['config_sha256']}; created {meta.get('created_at')}; resumed {_resumed(meta)}",
            *([f"answers decoded by {_engine(meta['generation_engine'])}"] if "generation_engine" in meta else []),
            f"records: {reader.n_records} committed",
        ]
        counts = Counter(zip(records["condition"].tolist(), records["round"].tolist()))
        for (condition, round_index), count in sorted(counts.items()):
            lines.append(f"  condition={condition} round={round_index}: {count}")
        lines.append("datasets:")
        for position, site in reader.sites():
            dataset = reader.dataset(site, position)
            lines.append(
                f"  /activations/{position}/{site}: shape {dataset.shape} {dataset.dtype}, "
                f"layers {reader.layers(site, position)}, {_chunking(dataset)}"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify_cache`` found.

    Attributes:
        path: the cache file.
        n_records: committed records (0 when the file could not be opened).
        nan_counts: ``"<position>/<site>"`` -> NaN values among committed rows.
        inf_counts: ``"<position>/<site>"`` -> +-inf values among committed rows.
        problems: one line per problem; empty when the cache is sound.
    """

    path: Path
    n_records: int
    nan_counts: dict[str, int] = field(default_factory=dict)
    inf_counts: dict[str, int] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no problem was found (NaN/inf values count as problems)."""
        return not self.problems


def _check_records(reader: CacheReader, problems: list[str]) -> None:
    for name in reader.spec.columns:
        rows = reader.record_column(name).shape[0]
        if rows < reader.n_records:
            problems.append(f"records/{name} has {rows} rows, fewer than {reader.n_records} committed")
    if problems:
        return
    try:
        records = reader.records
    except CacheError as error:
        problems.append(str(error))
        return
    repeated = duplicate_keys(records["record_key"].tolist())
    if repeated:
        problems.append(f"duplicate record_key {repeated[:5]} ({len(repeated)} keys)")
    for digest, text in DIGEST_COLUMNS.items():
        wrong = [
            str(key)
            for key, value, stored in zip(records["record_key"], records[text], records[digest])
            if text_sha256(value) != stored
        ]
        if wrong:
            problems.append(f"{digest} does not match the stored {text} for records {wrong[:5]} ({len(wrong)} in all)")


def _scan_dataset(reader: CacheReader, position: str, site: str, problems: list[str]) -> tuple[int, int]:
    dataset = reader.dataset(site, position)
    name = f"{position}/{site}"
    if dataset.shape[0] < reader.n_records:
        problems.append(f"activations/{name} has {dataset.shape[0]} rows, fewer than {reader.n_records} committed")
        return 0, 0
    block = dataset.chunks[0] if dataset.chunks else 1024
    nan = inf = 0
    for start in range(0, reader.n_records, block):
        try:
            values = dataset[start : min(reader.n_records, start + block)]
        except READ_ERRORS as error:
            problems.append(
                f"activations/{name} cannot be read from row {start} ({one_line(error)}); {repair_hint(reader.path)}"
            )
            break
        nan += int(np.isnan(values).sum())
        inf += int(np.isinf(values).sum())
    if nan or inf:
        problems.append(f"activations/{name} holds {nan} NaN and {inf} inf values")
    return nan, inf


def verify_cache(path: str | os.PathLike[str]) -> VerifyReport:
    """Check a cache: schema, row counts against the committed count, NaN/inf, digests, keys.

    Never raises for a bad file: an unreadable, truncated or damaged file, or an unknown schema,
    becomes a problem line.
    """
    cache_path = Path(path)
    try:
        reader = open_cache(cache_path, strict=False)
    except CacheError as error:
        return VerifyReport(path=cache_path, n_records=0, problems=(str(error),))
    with reader:
        problems: list[str] = []
        if reader.n_records < 0:
            problem = f"committed_records is {reader.n_records}, below 0; {repair_hint(cache_path)}"
            return VerifyReport(path=cache_path, n_records=0, problems=(problem,))
        _check_records(reader, problems)
        nan_counts: dict[str, int] = {}
        inf_counts: dict[str, int] = {}
        for position, site in reader.sites():
            nan_counts[f"{position}/{site}"], inf_counts[f"{position}/{site}"] = _scan_dataset(
                reader, position, site, problems
            )
        return VerifyReport(
            path=cache_path,
            n_records=reader.n_records,
            nan_counts=nan_counts,
            inf_counts=inf_counts,
            problems=tuple(problems),
        )
