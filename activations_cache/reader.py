"""``CacheReader``: one site and layer at a time, never the whole file.

Opens the file read-only in SWMR mode, so a cache whose writer is still running (or died) can be
read; everything is limited to the records committed when the reader was opened.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from activations_cache.errors import CacheError, CacheFormatError
from activations_cache.layout import (
    ACTIVATIONS_GROUP,
    COMMITTED_RECORDS,
    LIBVER,
    RECORDS_GROUP,
    check_schema,
    decoded_attributes,
)
from activations_cache.spec import CacheSpec

SPARSE_READ_RATIO = 4
"""Read selected rows one by one (instead of their whole span) when the span is this much larger."""


class CacheReader:
    """A read-only view of the committed records of one cache. Use ``open_cache``.

    Attributes:
        path: the cache file.
        metadata: the root attributes (str / int values; see FORMAT.md).
        config: the run configuration (parsed from ``config_json``).
        model_id: the model that produced the activations.
        spec: the cache layout (datasets, record columns, storage dtype, chunking).
        n_records: committed records visible to this reader.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = h5py.File(path, "r", libver=LIBVER, swmr=True)
        except OSError as error:
            raise CacheFormatError(f"{path} cannot be opened as an HDF5 cache ({error}); check the path") from error
        try:
            self.metadata: dict[str, Any] = decoded_attributes(self._file)
            check_schema(path, self.metadata)
            self.config: dict[str, Any] = json.loads(self.metadata["config_json"])
            self.model_id: str = self.metadata["model_id"]
            self.spec = CacheSpec.from_json(self.metadata["cache_spec"])
            self.n_records = int(self._file[COMMITTED_RECORDS][()])
        except BaseException:
            self._file.close()
            raise
        self._records: dict[str, np.ndarray] | None = None

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
        """
        if self._records is None:
            table = {}
            for name in self.spec.columns:
                column = self.record_column(name)
                if column.attrs["kind"] == "str":
                    table[name] = np.asarray(column.asstr()[: self.n_records], dtype=object)
                else:
                    table[name] = column[: self.n_records]
            self._records = table
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
        values = self._read_rows(dataset, layer_index, indices).astype(dtype, copy=False)
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


def open_cache(path: str | os.PathLike[str]) -> CacheReader:
    """Open the cache at ``path`` for reading (a context manager; or call ``.close()``).

    Raises:
        CacheFormatError: not an HDF5 file, not a cache, or a schema version this code cannot read.
    """
    cache_path = Path(path)
    if not cache_path.is_file():
        raise CacheFormatError(f"cache {cache_path} does not exist; run the capture first or check the path")
    return CacheReader(cache_path)
