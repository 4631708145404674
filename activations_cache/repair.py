"""``repair_cache``: bring a damaged cache back to its last good commit, keeping the damaged file.

A cache can be truncated (disk full, an interrupted copy), overwritten in places, left open for
write by a writer that died, or carry a committed count that disagrees with its rows. Records are
committed as a prefix (FORMAT.md, "Writing and the commit protocol"), so the last good commit is
the longest prefix of records whose activation rows and record columns all read back, whose text
hashes match and whose keys are unique. ``repair_cache`` finds it, writes it into a fresh file of
the same layout and attributes, keeps the damaged original as ``<name>.damaged-<UTC time>`` and
renames the fresh file onto ``<name>``, holding the writer lock throughout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from activations_cache.errors import CacheError, CacheFormatError
from activations_cache.file_layout import (
    COMMITTED_RECORDS,
    LIBVER,
    RECORDS_GROUP,
    REQUIRED_ATTRIBUTES,
    check_schema,
    create_skeleton,
    durable_replace,
    utc_now,
)
from activations_cache.integrity import (
    READ_ERRORS,
    SettledView,
    Superblock,
    SuperblockError,
    bad_string_row,
    one_line,
    read_superblock,
    settled_superblock,
    truncation,
)
from activations_cache.records import text_sha256
from activations_cache.resume import check_cache_path
from activations_cache.spec import DIGEST_COLUMNS, CacheSpec
from activations_cache.writer_lock import WriterLock

COPY_BLOCK_ROWS = 1 << 12
"""Rows per read when copying a record column (activation datasets copy 4 chunk-rows at a time)."""


@dataclass(frozen=True)
class RepairReport:
    """What ``repair_cache`` did.

    Attributes:
        path: the cache file.
        repaired: False when the file was sound and left untouched.
        kept_records: committed records of the cache now at ``path``.
        committed_records: the committed count the file recorded (``None`` when unreadable).
        datasets: ``"<position>/<site>"`` of every activation dataset kept.
        backup: where the damaged original now is (``None`` when nothing was repaired).
        problems: one line per problem found.
    """

    path: Path
    repaired: bool
    kept_records: int
    committed_records: int | None
    datasets: tuple[str, ...]
    backup: Path | None = None
    problems: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> str:
        """One line (sound file) or two lines (repaired): what was kept and where the original is."""
        datasets = ", ".join(self.datasets)
        if not self.repaired:
            return f"{self.path} is sound: {self.kept_records} records, datasets {datasets}; nothing to repair"
        claimed = "an unreadable count of" if self.committed_records is None else f"{self.committed_records}"
        more = len(self.problems) - 3
        found = "; ".join(self.problems[:3]) + (f"; and {more} more" if more > 0 else "")
        return (
            f"repaired {self.path}: kept {self.kept_records} of {claimed} committed records, datasets {datasets}\n"
            f"damaged original kept as {self.backup}; found: {found}"
        )


class _Unrepairable(Exception):
    """The file holds nothing that can be kept; the message says why (no file name)."""


@dataclass
class _Survey:
    spec: CacheSpec
    attributes: dict[str, Any]
    committed: int | None
    rows: dict[str, int]
    problems: list[str]


def _decoded(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _survey(path: Path, source: h5py.File, problems: list[str]) -> _Survey:
    """The file's attributes, spec, committed count and declared objects (refusing what cannot be kept)."""
    try:
        names = list(source.attrs)
    except READ_ERRORS as error:
        raise _Unrepairable(f"its root attributes cannot be read ({one_line(error)})") from error
    attributes: dict[str, Any] = {}
    for name in names:
        try:
            attributes[name] = source.attrs[name]
        except READ_ERRORS as error:
            problems.append(f"root attribute {name} unreadable ({one_line(error)}), dropped")
    decoded = {name: _decoded(value) for name, value in attributes.items()}
    try:
        check_schema(path, decoded)
    except CacheError as error:
        raise _Unrepairable(str(error)) from error
    missing = [name for name in REQUIRED_ATTRIBUTES if name not in decoded]
    if missing:
        raise _Unrepairable(f"root attribute(s) {missing} are missing or unreadable")
    if "shards" in decoded:
        raise _Unrepairable("it joins shards (root attribute shards): repair each shard, then join them again")
    try:
        spec = CacheSpec.from_json(decoded["cache_spec"])
    except (CacheError, TypeError, ValueError, KeyError, AttributeError) as error:
        raise _Unrepairable(f"root attribute cache_spec is not a valid cache spec ({one_line(error)})") from error
    committed: int | None = None
    try:
        found = source.get(COMMITTED_RECORDS)
        if isinstance(found, h5py.Dataset) and found.shape == () and found.dtype.kind in "iu":
            committed = int(found[()])
        else:
            problems.append(f"/{COMMITTED_RECORDS} is missing or not an integer scalar")
    except READ_ERRORS as error:
        problems.append(f"/{COMMITTED_RECORDS} unreadable ({one_line(error)})")
    rows: dict[str, int] = {}
    expected = {dataset.path.lstrip("/"): dataset.row_shape for dataset in spec.datasets}
    for name, column in spec.columns.items():
        expected[f"{RECORDS_GROUP}/{name}"] = () if column.length is None else (column.length,)
    for name, tail in expected.items():
        try:
            found = source.get(name)
        except READ_ERRORS as error:
            raise _Unrepairable(f"{name} cannot be read ({one_line(error)})") from error
        if not isinstance(found, h5py.Dataset) or found.ndim < 1 or found.shape[1:] != tail:
            raise _Unrepairable(f"{name}, declared by its cache_spec, is missing or has another shape")
        rows[name] = found.shape[0]
    return _Survey(spec=spec, attributes=attributes, committed=committed, rows=rows, problems=problems)


def _limit(survey: _Survey) -> int:
    """How many records the file can hold at most: its committed count, within the rows of every object."""
    shortest = min(survey.rows, key=survey.rows.__getitem__)
    rows = survey.rows[shortest]
    committed = survey.committed
    if committed is None:
        return rows
    if committed < 0:
        survey.problems.append(f"{COMMITTED_RECORDS} is {committed}, below 0")
        return rows
    if committed > rows:
        survey.problems.append(f"{COMMITTED_RECORDS} is {committed}, more than the {rows} rows of {shortest}")
        return rows
    return committed


def _readable_rows(
    dataset: h5py.Dataset, limit: int, block_rows: int, as_text: bool
) -> tuple[int, BaseException | None]:
    """Rows ``[0, n)`` of ``dataset`` (``n <= limit``) that read back, and the error that stopped the scan."""
    view = dataset.asstr() if as_text else dataset
    for start in range(0, limit, block_rows):
        stop = min(limit, start + block_rows)
        try:
            view[start:stop]
        except READ_ERRORS as error:
            if not as_text:
                return start, error  # activation and numeric rows fail a whole chunk at a time
            for row in range(start, stop):
                try:
                    view[row : row + 1]
                except READ_ERRORS as row_error:
                    return row, row_error
            return stop, None
    return limit, None


def _good_prefix(path: Path, source: h5py.File, survey: _Survey, superblock: Superblock, limit: int) -> int:
    """The longest prefix of ``limit`` records that reads back whole with matching hashes and unique keys."""
    kept = limit
    heaps_checked: dict[int, str | None] = {}
    for dataset in survey.spec.datasets:
        found = source[dataset.path]
        block = found.chunks[0] if found.chunks else COPY_BLOCK_ROWS
        rows, error = _readable_rows(found, kept, block, as_text=False)
        if error is not None:
            survey.problems.append(f"{dataset.path.lstrip('/')} unreadable from row {rows} ({one_line(error)})")
        kept = min(kept, rows)
    for name, column in survey.spec.columns.items():
        found = source[f"{RECORDS_GROUP}/{name}"]
        if column.kind == "str":
            try:
                bad = bad_string_row(found, kept, superblock, path, heaps_checked)
            except READ_ERRORS as chunk_error:
                bad = (0, f"its chunks cannot be read ({one_line(chunk_error)})")
            if bad is not None:
                survey.problems.append(f"{RECORDS_GROUP}/{name} {bad[1]}")
                kept = min(kept, bad[0])
        block = found.chunks[0] if found.chunks else COPY_BLOCK_ROWS
        rows, error = _readable_rows(found, kept, block, as_text=column.kind == "str")
        if error is not None:
            survey.problems.append(f"{RECORDS_GROUP}/{name} unreadable from row {rows} ({one_line(error)})")
        kept = min(kept, rows)
    texts = {
        name: source[f"{RECORDS_GROUP}/{name}"].asstr()[:kept] for name in ("record_key", *DIGEST_COLUMNS.values())
    }
    digests = {name: source[f"{RECORDS_GROUP}/{name}"].asstr()[:kept] for name in DIGEST_COLUMNS}
    seen: set[str] = set()
    for row in range(kept):
        key = str(texts["record_key"][row])
        wrong = [d for d, text in DIGEST_COLUMNS.items() if text_sha256(texts[text][row]) != digests[d][row]]
        if wrong or key in seen:
            what = f"{wrong[0]} does not match its text" if wrong else "its record_key repeats an earlier one"
            survey.problems.append(f"record {row} (record_key {key!r}): {what}")
            return row
        seen.add(key)
    return kept


def _copy(source: h5py.Dataset, target: h5py.Dataset, rows: int, block_rows: int) -> None:
    target.resize(rows, axis=0)
    for start in range(0, rows, block_rows):
        stop = min(rows, start + block_rows)
        target[start:stop] = source[start:stop]


def _write_prefix(source: h5py.File, survey: _Survey, kept: int, target_path: Path) -> None:
    """Write a fresh cache at ``target_path``: the attributes and the first ``kept`` records of ``source``."""
    spec = survey.spec
    with h5py.File(target_path, "w", libver=LIBVER) as target:
        create_skeleton(target, spec, survey.attributes)
        for dataset in spec.datasets:
            _copy(source[dataset.path], target[dataset.path], kept, 4 * spec.chunk_rows(dataset))
        for name in spec.columns:
            column = f"{RECORDS_GROUP}/{name}"
            _copy(source[column], target[column], kept, COPY_BLOCK_ROWS)
        target[COMMITTED_RECORDS][()] = kept
        try:
            repaired = json.loads(str(_decoded(survey.attributes.get("repaired_at", "[]"))))
        except ValueError:
            repaired = []
        target.attrs["repaired_at"] = json.dumps([*repaired, utc_now()] if isinstance(repaired, list) else [utc_now()])


def _backup_path(path: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.name}.damaged-{stamp}")
    counter = 1
    while candidate.exists():
        counter += 1
        candidate = path.with_name(f"{path.name}.damaged-{stamp}-{counter}")
    return candidate


def _set_aside(path: Path, repaired: Path) -> Path:
    """Keep ``path`` as a ``.damaged-<time>`` file and move ``repaired`` onto ``path``; return the backup."""
    backup = _backup_path(path)
    try:
        os.link(path, backup)  # the original stays at path until the atomic rename below
    except OSError:
        os.replace(path, backup)
    durable_replace(repaired, path)
    return backup


def repair_cache(path: str | os.PathLike[str]) -> RepairReport:
    """Bring the cache at ``path`` back to its last good commit, keeping the damaged file beside it.

    Holds the writer lock (``<name>.lock``) throughout. A sound file is left untouched. Otherwise
    the longest prefix of committed records whose activations and records all read back, whose
    text hashes match and whose keys are unique is written into ``<name>.repairing`` (same layout
    and root attributes, plus ``repaired_at``), the original is kept as ``<name>.damaged-<UTC
    time>``, and the fresh file is renamed onto ``<name>``. Nothing of the original is deleted.

    Raises:
        CachePathError: the folder is read-only or a writer holds the cache.
        CacheFormatError: the file cannot be repaired (not HDF5, not a cache, its spec or a declared
            dataset is missing or unreadable); the file is left as it is.
    """
    cache_path = Path(path)
    if not cache_path.is_file():
        raise CacheFormatError(f"cache {cache_path} does not exist; check the path")
    check_cache_path(cache_path)
    lock = WriterLock(cache_path)
    staging = cache_path.with_name(cache_path.name + ".repairing")
    try:
        staging.unlink(missing_ok=True)
        return _repair_locked(cache_path, staging)
    except _Unrepairable as error:
        staging.unlink(missing_ok=True)
        raise CacheFormatError(
            f"cannot repair {cache_path}: {error}; the file is left as it is: rerun the capture with --overwrite"
        ) from error
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    finally:
        lock.release()


def _repair_locked(path: Path, staging: Path) -> RepairReport:
    try:
        superblock = read_superblock(path)
    except SuperblockError as error:
        raise _Unrepairable(error.reason) from error
    problems: list[str] = []
    missing = truncation(path, superblock)
    if missing is not None:
        problems.append(f"truncated ({missing})")
    if superblock.open_for_write:
        problems.append("left open for write by a writer that did not close it")
    patch = settled_superblock(superblock, path.stat().st_size) if problems else None
    view = SettledView(path, superblock, patch) if patch is not None else None
    try:
        # a truncated or open-for-write file is read through a settled superblock: plain read mode,
        # and reads past the bytes present fail at once; a sound-looking one is opened as it is
        source = h5py.File(view, "r") if view is not None else h5py.File(path, "r", libver=LIBVER)
    except READ_ERRORS as error:
        if view is not None:
            view.close()
        raise _Unrepairable(f"HDF5 cannot open it ({one_line(error)})") from error
    try:
        survey = _survey(path, source, problems)
        kept = _good_prefix(path, source, survey, superblock, _limit(survey))
        datasets = tuple(f"{dataset.position}/{dataset.site}" for dataset in survey.spec.datasets)
        if not survey.problems and kept == survey.committed:
            return RepairReport(path, repaired=False, kept_records=kept, committed_records=kept, datasets=datasets)
        try:
            _write_prefix(source, survey, kept, staging)
        except READ_ERRORS as error:
            if isinstance(error, CacheError):
                raise
            raise CacheFormatError(
                f"cannot repair {path}: writing {staging} failed ({one_line(error)}); the file is left as it is"
            ) from error
    finally:
        source.close()
        if view is not None:
            view.close()
    backup = _set_aside(path, staging)
    return RepairReport(
        path,
        repaired=True,
        kept_records=kept,
        committed_records=survey.committed,
        datasets=datasets,
        backup=backup,
        problems=tuple(survey.problems),
    )
