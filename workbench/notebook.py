"""A run folder in a notebook: records and tables as pandas DataFrames, cached sites as labelled xarray arrays.

``workbench.open_run("runs/demo")`` returns a :class:`Run`:

- ``run.records``: one row per record of ``cache.h5``, indexed by record key (``record``), one column per
  field of :class:`workbench.experiment.records.RunRecord` (missing values as ``<NA>`` / NaN / ``None``);
- ``run.tables``: every tidy CSV table the run folder holds (:data:`workbench.run_folder.RUN_TABLES`),
  by table name; ``run.table(name)`` reads one and names the command that writes it when it is missing;
- ``run.activations(site, position)``: one cached site as an :class:`xarray.DataArray` with dimensions
  ``(record, layer, d)`` or ``(record, layer, head, d)``, record coordinates ``item``, ``condition``,
  ``round`` and ``category``, and the model's layer indices on ``layer``. Nothing is read from the
  HDF5 file until values are asked for (``.values``, ``.load()``, a reduction); then only the selected
  records and layers are read.

The cache is opened read-only in SWMR mode on first use (so a running or crashed run can be read: the
records committed at that moment) and stays open until :meth:`Run.close` (or the ``with`` block ends).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
import pandas as pd
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from activations_cache import CacheReader, open_cache
from workbench.experiment.records import RunRecord, decode_records
from workbench.run_folder import RUN_TABLES, RunFolder, RunFolderError

RECORD_DIMENSION = "record"
"""The records axis of every activation array, indexed by record key (the index of :attr:`Run.records` too)."""

RECORD_COORDINATES: dict[str, str] = {
    "item": "item_id",
    "condition": "condition",
    "round": "round",
    "category": "category",
}
"""Coordinate along ``record`` -> the :class:`RunRecord` field it holds."""

RESIDUAL_DIMENSIONS = (RECORD_DIMENSION, "layer", "d")
HEAD_DIMENSIONS = (RECORD_DIMENSION, "layer", "head", "d")
"""Dimensions of a site stored ``[records, layers, d]`` (residual stream, MLP, attention output) and of one
stored ``[records, layers, heads, d_head]`` (per-head ``attn.hook_z``)."""

# Field annotation of a row type (strings under `from __future__ import annotations`) -> pandas dtype. Option
# indices and counts that may be missing become nullable integers; text stays text, never a parsed number.
PANDAS_DTYPES: dict[str, str] = {
    "str": "str",
    "str | None": "str",
    "int": "int64",
    "int | None": "Int64",
    "float": "float64",
    "float | None": "float64",
    "bool | None": "boolean",
}


class ClosedRunError(ValueError):
    """An activation array of a :class:`Run` was read after the run was closed."""


class CachedSiteArray(BackendArray):
    """The committed rows of one cached site, read from HDF5 only when xarray asks for values.

    Args:
        dataset: the site's h5py dataset ``[rows, layers, *shape]`` (rows past ``n_records`` are uncommitted).
        n_records: committed records: the array's length.
        dtype: the dtype values are returned in (the file may store float16).
        run: the run folder, named in the error for a closed file.
    """

    def __init__(self, dataset: h5py.Dataset, n_records: int, dtype: np.dtype[Any], run: Path) -> None:
        self.dataset = dataset
        self.shape = (n_records, *dataset.shape[1:])
        self.dtype = dtype
        self.run = run

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        # h5py takes slices, integers and at most one increasing list of indices per read
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER_1VECTOR, self._read)

    def _read(self, key: tuple[Any, ...]) -> np.ndarray:
        if not self.dataset.id.valid:
            raise ClosedRunError(
                f"{self.run}: the run was closed, so its activations can no longer be read; "
                f"open it again with workbench.open_run({str(self.run)!r})"
            )
        rows = key[0]
        if isinstance(rows, slice):  # never past the committed rows, whatever the file holds beyond them
            rows = slice(*rows.indices(self.shape[0]))
        return np.asarray(self.dataset[(rows, *key[1:])], dtype=self.dtype)

    def __deepcopy__(self, memo: dict[int, Any]) -> CachedSiteArray:
        # the file is read-only: a deep copy of a lazy array may read the same dataset
        return self


class Run:
    """One run folder opened for analysis. Use :func:`open_run`; close it (or use ``with``) when done.

    Attributes:
        folder: the run folder's named paths.
        config: the parsed ``config.toml``, or ``None`` when the folder has none.
    """

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder
        self.config: dict[str, Any] | None = folder.read_config()
        self._reader: CacheReader | None = None
        self._records: pd.DataFrame | None = None
        self._tables: dict[str, pd.DataFrame] = {}

    def __repr__(self) -> str:
        held = [name for name in RUN_TABLES if self.folder.table(name).is_file()]
        cache = self.folder.cache.name if self.folder.cache.is_file() else "no cache"
        return f"Run({str(self.folder.root)!r}: {cache}; tables {', '.join(held) or 'none'})"

    @property
    def cache(self) -> CacheReader:
        """The run's cache, opened read-only on first use (the records committed at that moment).

        Raises:
            RunFolderError: the folder has no ``cache.h5`` (``workbench run`` writes it).
        """
        if self._reader is None:
            self._reader = open_cache(RunFolder.with_cache(self.folder.root).cache, expect="run")
        return self._reader

    @property
    def records(self) -> pd.DataFrame:
        """[n_records rows] every committed record, indexed by record key (``record``), in cache order.

        Row ``i`` is record ``i`` of every activation array. One column per :class:`RunRecord` field but
        the key; ``option_probs`` holds tuples (``None`` when the options were not scored).
        """
        if self._records is None:
            decoded = decode_records(self.cache.records)
            columns = {
                field.name: pd.Series([getattr(record, field.name) for record in decoded], dtype=_dtype(field.type))
                for field in dataclasses.fields(RunRecord)
            }
            frame = pd.DataFrame(columns)
            self._records = frame.set_index(pd.Index(frame.pop("record_key"), name=RECORD_DIMENSION))
        return self._records.copy(deep=False)  # copy-on-write: the caller's edits stay the caller's

    @property
    def sites(self) -> list[tuple[str, str]]:
        """Every cached ``(position, site)``, e.g. ``("last_prompt", "hook_resid_post")``."""
        return self.cache.sites()

    def activations(self, site: str, position: str = "last_prompt", dtype: str = "float32") -> xr.DataArray:
        """One cached site as a lazily read, labelled array.

        Args:
            site: the site name (``hook_resid_post``, ``attn.hook_z``, ...; see :attr:`sites`).
            position: the token position it was cached at.
            dtype: the dtype values are returned in (the cache stores float16 or float32).

        Returns:
            ``[record, layer, d]`` (or ``[record, layer, head, d]``): ``record`` indexed by record key with
            the coordinates of :data:`RECORD_COORDINATES`; ``layer`` holds model layer indices; ``head``
            head indices. Values are read only when asked for.

        Raises:
            activations_cache.CacheError: no such site or position (the message lists the stored ones).
        """
        reader = self.cache
        dataset = reader.dataset(site, position)
        dims = HEAD_DIMENSIONS if dataset.ndim == len(HEAD_DIMENSIONS) else RESIDUAL_DIMENSIONS
        stored = CachedSiteArray(dataset, reader.n_records, np.dtype(dtype), self.folder.root)
        records = self.records
        coordinates: dict[str, Any] = {
            RECORD_DIMENSION: records.index.to_numpy(),
            "layer": np.asarray(reader.layers(site, position), dtype=np.int64),
            **{name: (RECORD_DIMENSION, records[field].to_numpy()) for name, field in RECORD_COORDINATES.items()},
        }
        if "head" in dims:
            coordinates["head"] = np.arange(dataset.shape[dims.index("head")])
        return xr.DataArray(
            xr.Variable(dims, indexing.LazilyIndexedArray(stored)),
            coords=coordinates,
            name=site,
            attrs={"site": site, "position": position, "model_id": reader.model_id, "cache": str(reader.path)},
        )

    def table(self, name: str) -> pd.DataFrame:
        """The tidy CSV table ``name`` of :data:`RUN_TABLES` (``"behaviour"``, ``"morality"``, ...), read once.

        Columns of the table's row type get its types (text stays text, missing integers are ``<NA>``);
        other columns are inferred by pandas.

        Raises:
            RunFolderError: an unknown name (the message lists them), or a table the folder does not hold
                (the message names the command that writes it).
        """
        if name not in RUN_TABLES:
            raise RunFolderError(f"no run table {name!r}; the tables are {', '.join(RUN_TABLES)}")
        if name not in self._tables:
            table = RUN_TABLES[name]
            path = self.folder.table(name)
            if not path.is_file():
                raise RunFolderError(
                    f"{path} not found: run `{table.stage} {self.folder.root}` first (it writes {table.path})"
                )
            header = pd.read_csv(path, nrows=0).columns
            dtypes = {field.name: _dtype(field.type) for field in dataclasses.fields(table.row_type)}
            self._tables[name] = pd.read_csv(
                path,
                dtype={column: dtypes[column] for column in header if column in dtypes},
                keep_default_na=False,
                na_values=[""],
            )
        return self._tables[name].copy(deep=False)  # copy-on-write: the caller's edits stay the caller's

    @property
    def tables(self) -> Mapping[str, pd.DataFrame]:
        """Every table of :data:`RUN_TABLES` the run folder holds, by name, in that order."""
        return {name: self.table(name) for name in RUN_TABLES if self.folder.table(name).is_file()}

    def close(self) -> None:
        """Close the cache (idempotent); activation arrays read after this raise :class:`ClosedRunError`."""
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def open_run(path: str | Path) -> Run:
    """Open the run folder ``path`` (or the folder of its ``cache.h5``) for analysis.

    Raises:
        RunFolderError: ``path`` does not exist, or holds neither ``results/`` nor ``cache.h5``.
    """
    folder = RunFolder.at(Path(path))
    if not folder.root.is_dir():
        raise RunFolderError(f"{path}: no such run folder; run `workbench run CONFIG` first (it writes runs/<name>)")
    if not folder.cache.is_file() and not folder.results.is_dir():
        raise RunFolderError(
            f"{folder.root} holds neither {folder.cache.name} nor {folder.results.name}/: run `workbench run CONFIG` "
            "first, then open the folder it writes (runs/<name>)"
        )
    return Run(folder)


def _dtype(annotation: object) -> str:
    """The pandas dtype of a row-type field annotation (``object`` for tuples and anything unlisted)."""
    return PANDAS_DTYPES.get(str(annotation), "object")
