"""``CacheReader``: one site and layer at a time, never the whole file.

Opens the file read-only in SWMR mode, so a cache whose writer is still running (or died) can be
read; everything is limited to the records committed when the reader was opened. Opening checks,
cheaply, that the file is whole and is the cache it claims to be (see ``FORMAT.md``, "Reading"):
a truncated or damaged file, a foreign or edited one, or a cache of another kind than expected is
refused with one line naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from activations_cache.errors import CacheError, CacheFormatError
from activations_cache.file_layout import (
    ACTIVATIONS_GROUP,
    COMMITTED_RECORDS,
    RECORDS_GROUP,
    REQUIRED_ATTRIBUTES,
    check_schema,
    column_dtype,
    decoded_attributes,
)
from activations_cache.integrity import (
    READ_ERRORS,
    Superblock,
    bad_string_row,
    one_line,
    open_checked,
    read_superblock,
    repair_hint,
)
from activations_cache.records import text_sha256
from activations_cache.spec import CACHE_KINDS, DIGEST_COLUMNS, CacheSpec, ColumnSpec, infer_kind
from activations_cache.writer_lock import lock_path

LIVE_WRITER_RECHECKS = 3
"""Times a string column of a file marked open for write is checked again before it is called damaged."""

LIVE_OPEN_ATTEMPTS = 10
"""Times ``open_cache`` opens a file again when a read fails while a running writer holds it: an open
between two commits can see a newer ``committed_records`` than the end-of-file it read first."""

SPARSE_READ_RATIO = 4
"""Read selected rows one by one (instead of their whole span) when the span is this much larger."""

KIND_HINTS = {"run": "pass runs/<name>/cache.h5", "concept": "pass runs/<name>/probes/concepts.h5"}
RERUN_HINT = "rerun the capture with --overwrite"


class CacheReader:
    """A read-only view of the committed records of one cache. Use ``open_cache``.

    Attributes:
        path: the cache file.
        metadata: the root attributes (str / int values; see FORMAT.md).
        config: the run configuration (parsed from ``config_json``).
        model_id: the model that produced the activations.
        spec: the cache layout (datasets, record columns, storage dtype, chunking).
        kind: ``"run"`` or ``"concept"`` (root attribute ``kind``, or inferred from the columns).
        n_records: committed records visible to this reader.
        superblock: the file's HDF5 superblock as read before opening.
    """

    def __init__(self, path: Path, expect: str | None = None, *, strict: bool = True) -> None:
        """Open and check ``path``; see :func:`open_cache` for ``expect`` and ``strict``."""
        if expect is not None and expect not in CACHE_KINDS:
            raise CacheError(f"open_cache(expect={expect!r}): use one of {CACHE_KINDS} or None")
        self.path = path
        opened, superblock = open_checked(path)
        self._file: h5py.File = opened
        self.superblock: Superblock = superblock
        self._loaded: dict[str, np.ndarray] = {}
        self._heaps_checked: dict[int, str | None] = {}
        self._records: dict[str, np.ndarray] | None = None
        self._reading = "its root attributes"
        try:
            self._validate(expect, strict)
        except CacheError:
            self._file.close()
            raise
        except READ_ERRORS as error:
            self._file.close()
            raise self._damaged(error) from error
        except BaseException:
            self._file.close()
            raise

    def _damaged(self, error: BaseException) -> CacheFormatError:
        return _UnreadableWhileOpen(
            f"{self.path} is damaged: {self._reading} cannot be read ({one_line(error)}); {repair_hint(self.path)}"
        )

    def _validate(self, expect: str | None, strict: bool) -> None:
        """Check the attributes, the kind, every declared object, the committed count and the text hashes."""
        path = self.path
        self.metadata: dict[str, Any] = decoded_attributes(self._file)
        check_schema(path, self.metadata)
        missing = [name for name in REQUIRED_ATTRIBUTES if name not in self.metadata]
        if missing:
            raise CacheFormatError(f"{path} lacks root attribute(s) {missing}; it was edited or damaged: {RERUN_HINT}")
        self.config: dict[str, Any] = self._parsed_config()
        self.model_id: str = str(self.metadata["model_id"])
        self.spec = self._parsed_spec()
        self.kind = self._checked_kind(expect)
        self._reading = f"/{COMMITTED_RECORDS}"
        committed = self._file.get(COMMITTED_RECORDS)
        if not isinstance(committed, h5py.Dataset) or committed.shape != () or committed.dtype.kind not in "iu":
            raise CacheFormatError(
                f"{path} lacks an integer scalar /{COMMITTED_RECORDS}; it was edited or damaged: {repair_hint(path)}"
            )
        self.n_records = int(committed[()])
        rows = self._declared_rows()
        if not strict:
            return
        shortest = min(rows, key=rows.__getitem__)
        if not 0 <= self.n_records <= rows[shortest]:
            raise CacheFormatError(
                f"{path} is damaged: {COMMITTED_RECORDS} is {self.n_records}, outside [0, {rows[shortest]}] "
                f"(the rows of {shortest}); {repair_hint(path)}"
            )
        self._check_digests()

    def _parsed_config(self) -> dict[str, Any]:
        text = self.metadata["config_json"]
        try:
            config = json.loads(text)
        except (TypeError, ValueError) as error:
            raise CacheFormatError(
                f"{self.path}: root attribute config_json is not valid JSON ({one_line(error)}); "
                f"it was edited or damaged: {RERUN_HINT}"
            ) from error
        if not isinstance(config, dict):
            raise CacheFormatError(
                f"{self.path}: root attribute config_json is a JSON {type(config).__name__}, not an object; "
                f"it was edited or damaged: {RERUN_HINT}"
            )
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != self.metadata["config_sha256"]:
            raise CacheFormatError(
                f"{self.path}: root attribute config_json does not match config_sha256; "
                f"the configuration was edited: {RERUN_HINT}"
            )
        return config

    def _parsed_spec(self) -> CacheSpec:
        try:
            return CacheSpec.from_json(self.metadata["cache_spec"])
        except (CacheError, TypeError, ValueError, KeyError, AttributeError) as error:
            raise CacheFormatError(
                f"{self.path}: root attribute cache_spec is not a valid cache spec ({one_line(error)}); "
                f"it was edited or damaged: {RERUN_HINT}"
            ) from error

    def _checked_kind(self, expect: str | None) -> str:
        kind = self.metadata.get("kind", infer_kind(self.spec))
        if kind not in CACHE_KINDS:
            raise CacheFormatError(
                f"{self.path}: root attribute kind={kind!r} is unknown (known: {CACHE_KINDS}); "
                "use the workbench version that wrote it"
            )
        if expect is not None and kind != expect:
            raise CacheFormatError(f"{self.path} is a {kind} cache, not a {expect} cache; {KIND_HINTS[expect]}")
        return str(kind)

    def _declared_rows(self) -> dict[str, int]:
        """Rows of every declared activation dataset and record column, checking each exists with its shape."""
        rows: dict[str, int] = {}
        for dataset in self.spec.datasets:
            name = dataset.path.lstrip("/")
            self._reading = name
            found = self._file.get(dataset.path)
            if not isinstance(found, h5py.Dataset):
                raise CacheFormatError(
                    f"{self.path} lacks the dataset {name} its cache_spec declares; it was edited or damaged: "
                    f"{RERUN_HINT}"
                )
            if found.ndim < 1 or found.shape[1:] != dataset.row_shape or found.dtype != np.dtype(self.spec.dtype):
                raise CacheFormatError(
                    f"{self.path}: {name} is {found.dtype} {found.shape}, its cache_spec declares "
                    f"{self.spec.dtype} [rows, *{dataset.row_shape}]; it was edited or damaged: {RERUN_HINT}"
                )
            rows[name] = found.shape[0]
        for column_name, column in self.spec.columns.items():
            name = f"{RECORDS_GROUP}/{column_name}"
            self._reading = name
            found = self._file.get(name)
            if not isinstance(found, h5py.Dataset):
                raise CacheFormatError(
                    f"{self.path} lacks the record column {name} its cache_spec declares; it was edited or damaged: "
                    f"{RERUN_HINT}"
                )
            tail = () if column.length is None else (column.length,)
            if found.ndim < 1 or found.shape[1:] != tail or not _stores(found.dtype, column):
                raise CacheFormatError(
                    f"{self.path}: {name} is {found.dtype} {found.shape}, its cache_spec declares "
                    f"{column.kind} [rows, *{tail}]; it was edited or damaged: {RERUN_HINT}"
                )
            rows[name] = found.shape[0]
        return rows

    def _check_digests(self) -> None:
        """Raise unless ``prompt_sha256`` / ``answer_sha256`` are the sha256 of the committed texts."""
        for digest, text in DIGEST_COLUMNS.items():
            texts, stored = self._column(text), self._column(digest)
            wrong = [row for row, (value, expected) in enumerate(zip(texts, stored)) if text_sha256(value) != expected]
            if wrong:
                first = self._column("record_key")[wrong[0]]
                raise CacheFormatError(
                    f"{self.path}: {digest} does not match the stored {text} of {len(wrong)} record(s) "
                    f"(first: record_key {first!r}); the records were edited or damaged: `workbench cache verify "
                    f"{self.path}` lists them, `workbench cache repair {self.path}` keeps the records before them"
                )

    def _column(self, name: str) -> np.ndarray:
        """The committed rows of record column ``name`` (``object`` arrays of ``str`` for text), read once."""
        if name not in self._loaded:
            self._reading = f"{RECORDS_GROUP}/{name}"
            column = self.record_column(name)
            if self.spec.columns[name].kind == "str":
                rows = min(self.n_records, column.shape[0])
                bad = bad_string_row(column, rows, self.superblock, self.path, self._heaps_checked)
                for _ in range(LIVE_WRITER_RECHECKS if self.superblock.open_for_write else 0):
                    if bad is None:
                        break
                    time.sleep(0.05)  # a running writer may be rewriting a heap collection: read it again
                    self._heaps_checked.clear()
                    bad = bad_string_row(column, rows, self.superblock, self.path, self._heaps_checked)
                if bad is not None:
                    raise CacheFormatError(
                        f"{self.path} is damaged: {self._reading} {bad[1]}; {repair_hint(self.path)}"
                    )
                self._loaded[name] = np.asarray(column.asstr()[: self.n_records], dtype=object)
            else:
                self._loaded[name] = column[: self.n_records]
        return self._loaded[name]

    def record_column(self, name: str) -> h5py.Dataset:
        """The raw h5py dataset of one record column (rows past ``n_records`` are uncommitted)."""
        if name not in self.spec.columns:
            raise CacheError(f"{self.path} has no record column {name!r}; columns: {list(self.spec.columns)}")
        return self._file[f"{RECORDS_GROUP}/{name}"]

    @property
    def records(self) -> dict[str, np.ndarray]:
        """The records table of committed rows as ``column -> array`` (loaded once, on first use).

        ``str`` columns are ``object`` arrays of Python ``str``; ``int64``, ``float64`` (``[n]``
        or ``[n, length]``) and ``bool`` columns keep their dtype.

        Raises:
            CacheFormatError: a column cannot be read (a damaged file).
        """
        if self._records is None:
            try:
                self._records = {name: self._column(name) for name in self.spec.columns}
            except READ_ERRORS as error:
                if isinstance(error, CacheError):
                    raise
                raise self._damaged(error) from error
        return self._records

    def sites(self) -> list[tuple[str, str]]:
        """Every stored ``(position, site)`` pair, in spec order."""
        return [dataset.key for dataset in self.spec.datasets]

    def dataset(self, site: str, position: str = "last_prompt") -> h5py.Dataset:
        """The raw h5py dataset ``[rows, layers, *shape]`` (rows past ``n_records`` are uncommitted)."""
        path = f"/{ACTIVATIONS_GROUP}/{position}/{site}"
        if (position, site) not in self.sites():
            raise CacheError(
                f"{self.path} has no dataset for position={position!r} site={site!r}; "
                f"stored (position, site): {self.sites()}"
            )
        return self._file[path]

    def layers(self, site: str, position: str = "last_prompt") -> list[int]:
        """Model layer indices of the layers axis of ``site`` at ``position``."""
        return [int(layer) for layer in self.dataset(site, position).attrs["layers"]]

    def select(
        self,
        condition: str | None = None,
        round: int | None = None,
        item_ids: list[str] | None = None,
        **column_equals: Any,
    ) -> np.ndarray:
        """Row indices (sorted, int64) of the records matching every given filter.

        Args:
            condition: keep records of this condition.
            round: keep records of this round.
            item_ids: keep records whose ``item_id`` is in this list.
            column_equals: keep records whose scalar column equals the value (e.g. ``predicted=1``).
        """
        records = self.records
        keep = np.ones(self.n_records, dtype=bool)
        equals = dict(column_equals)
        if condition is not None:
            equals["condition"] = condition
        if round is not None:
            equals["round"] = round
        for name, value in equals.items():
            if name not in records or records[name].ndim != 1:
                scalars = [column for column, values in records.items() if values.ndim == 1]
                raise CacheError(f"select: {name!r} is not a scalar record column of {self.path}; use one of {scalars}")
            keep &= records[name] == value
        if item_ids is not None:
            keep &= np.isin(records["item_id"], np.asarray(list(item_ids), dtype=object))
        return np.flatnonzero(keep).astype(np.int64)

    def read(
        self,
        site: str,
        layer: int,
        position: str = "last_prompt",
        rows: np.ndarray | list[int] | None = None,
        condition: str | None = None,
        round: int | None = None,
        item_ids: list[str] | None = None,
        as_: str = "numpy",
        dtype: str = "float32",
    ) -> Any:
        """One layer of one site for the chosen records.

        Args:
            site: site name, e.g. ``"hook_resid_post"``.
            layer: model layer index (one of :meth:`layers`).
            position: token position name.
            rows: record row indices, returned in this order (default: all committed rows);
                the filters below further restrict them.
            condition, round, item_ids: as in :meth:`select`.
            as_: ``"numpy"`` or ``"torch"`` (a CPU tensor sharing the numpy memory).
            dtype: returned float dtype (default ``float32``, whatever the storage dtype).

        Returns:
            ``[n, d]`` or ``[n, heads, d_head]``.
        """
        if as_ not in ("numpy", "torch"):
            raise CacheError(f"read(as_={as_!r}): use 'numpy' or 'torch'")
        dataset = self.dataset(site, position)
        stored = self.layers(site, position)
        if layer not in stored:
            raise CacheError(
                f"layer {layer} is not stored for {position}/{site} in {self.path}; stored layers: {stored}"
            )
        layer_index = stored.index(layer)
        indices = self._row_indices(rows, condition, round, item_ids)
        try:
            values = self._read_rows(dataset, layer_index, indices).astype(dtype, copy=False)
        except READ_ERRORS as error:
            if isinstance(error, CacheError):
                raise
            self._reading = f"{dataset.name.lstrip('/')} (layer {layer})"
            raise self._damaged(error) from error
        if as_ == "torch":
            import torch

            return torch.from_numpy(np.ascontiguousarray(values))
        return values

    def _row_indices(
        self,
        rows: np.ndarray | list[int] | None,
        condition: str | None,
        round: int | None,
        item_ids: list[str] | None,
    ) -> np.ndarray | None:
        filtered = condition is not None or round is not None or item_ids is not None
        if rows is None and not filtered:
            return None
        indices = np.arange(self.n_records) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < 0 or indices.max() >= self.n_records):
            raise CacheError(
                f"rows out of range [0, {self.n_records}) for {self.path}: min {indices.min()}, max {indices.max()}"
            )
        if filtered:
            indices = indices[np.isin(indices, self.select(condition, round, item_ids))]
        return indices

    def _read_rows(self, dataset: h5py.Dataset, layer_index: int, indices: np.ndarray | None) -> np.ndarray:
        if indices is None:
            return dataset[: self.n_records, layer_index]
        if len(indices) == 0:
            return np.empty((0, *dataset.shape[2:]), dtype=dataset.dtype)
        low, high = int(indices.min()), int(indices.max()) + 1
        if high - low <= SPARSE_READ_RATIO * len(indices):
            return dataset[low:high, layer_index][indices - low]
        unique, inverse = np.unique(indices, return_inverse=True)
        return dataset[unique.tolist(), layer_index][inverse]

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _UnreadableWhileOpen(CacheFormatError):
    """An HDF5 read failed during the checks of an open: damage, or a running writer's next commit."""


def _held_by_live_writer(path: Path) -> bool:
    """Whether ``path`` is marked open for write and its writer's ``<name>.lock`` exists."""
    try:
        marked = read_superblock(path).open_for_write
    except CacheFormatError:
        return False
    return marked and lock_path(path).exists()


def _stores(dtype: np.dtype, column: ColumnSpec) -> bool:
    """Whether an HDF5 dataset of ``dtype`` can hold record column ``column``."""
    if column.kind == "str":
        return h5py.check_string_dtype(dtype) is not None
    return dtype == column_dtype(column)


def open_cache(path: str | os.PathLike[str], expect: str | None = None, *, strict: bool = True) -> CacheReader:
    """Open the cache at ``path`` for reading (a context manager; or call ``.close()``).

    Opening costs a few milliseconds plus the check of the text hashes, which reads the
    ``prompt`` / ``answer`` strings of every committed record (see FORMAT.md, "Reading").

    Args:
        path: the cache file.
        expect: ``"run"`` (an experiment's ``runs/<name>/cache.h5``) or ``"concept"`` (a concept
            set's ``probes/concepts.h5``) to refuse a cache of the other kind; ``None`` takes either.
        strict: also check that ``committed_records`` lies in [0, rows of every dataset and column]
            and that ``prompt_sha256`` / ``answer_sha256`` match the texts; ``False`` (used by
            ``verify_cache``) skips both, so that a damaged file can be inspected.

    Raises:
        CacheFormatError: missing, not HDF5, truncated or damaged, not a cache, a schema version
            this code cannot read, an edited or inconsistent file, or a cache of another kind.
    """
    cache_path = Path(path)
    if not cache_path.is_file():
        raise CacheFormatError(f"cache {cache_path} does not exist; run the capture first or check the path")
    for attempt in range(1, LIVE_OPEN_ATTEMPTS + 1):
        try:
            return CacheReader(cache_path, expect, strict=strict)
        except _UnreadableWhileOpen:
            if attempt == LIVE_OPEN_ATTEMPTS or not _held_by_live_writer(cache_path):
                raise
            time.sleep(0.02 * attempt)  # the writer finishes its commit; the next open sees one state
    raise AssertionError("unreachable: the last attempt returns or raises")
