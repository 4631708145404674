"""A cached site read as a stream of chunk-rows, never whole: probes on caches larger than memory.

FORMAT.md ("Chunking and storage"): an activation chunk holds one layer of ``R`` consecutive
records. A *chunk-row* is the chunks of those ``R`` records at every layer a reader wants. Reading
the chunk-rows in file order reads the file once, sequentially, and hands a fit all wanted layers
of ``R`` records at a time, so that the moments or gradients of every layer accumulate in one pass.

A background thread reads ahead (:data:`READ_AHEAD` chunk-rows) while the caller converts and uses
the current one: whole uncompressed chunks go straight into a reused buffer
(``read_direct_chunk``; HDF5's API, the reader's twin of the writer's ``write_direct_chunk``, which
releases the GIL while it copies), compressed or virtual (joined-shard) datasets through an HDF5
selection. ``READ_AHEAD + 1`` raw chunk-rows are held: the caller's and the one being read (or
waiting for the caller).

A pass's products are small (one layer of one chunk-row, about 1 MiB of float16, at a time), and
torch's intra-op threads only add a synchronisation per product to them: the passes run them on
one thread (:func:`one_intra_op_thread`) beside the reading thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Generator, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import h5py
import numpy as np
import torch

from activations_cache import CacheFormatError, CacheReader
from probes.cache_reading import ProbeSite, non_finite_error
from probes.errors import CacheSiteError, NonFiniteActivationsError, ProbeInputError

READ_AHEAD = 1
"""Chunk-rows the reading thread reads ahead of the caller: one overlaps reading with the caller's
work whenever a chunk-row reads faster than the caller uses it (3-4x faster in a mean-difference pass,
docs/probes.md "Measured"); each more holds ``layers x chunk_bytes`` more."""
CONTIGUOUS_BLOCK_ROWS = 1024
"""Records per block of a dataset stored without chunks."""
READ_ERRORS = (OSError, RuntimeError, KeyError, ValueError)
"""What h5py raises on a chunk it cannot read."""
_POLL_SECONDS = 0.1


Key = TypeVar("Key", bound=Hashable)
RecordMeasure = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""A per-record value of one layer's states: ``(states [b, width] float32, view positions [b]) -> [b]``."""


@contextlib.contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block, then restore the caller's setting.

    The streamed passes multiply one layer of one chunk-row (about 910 x 576 values) at a time: an
    intra-op thread team gains nothing on products that small and waits for every member at each of
    them, which on a machine whose cores are busy made a mean-difference pass 14x slower with two
    threads than with one (docs/probes.md, "Measured"). The pass's parallelism is its reading thread.

    Restoring is a ``torch.set_num_threads`` call, after which torch 2.13's CPU LU solves of
    float64 matrices a few hundred wide fail with more than one thread; the probes' solves are
    Cholesky solves for that reason (:mod:`probes.spd_solves`).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class ActivationBlock:
    """The records of one chunk-row of a streamed view.

    Attributes:
        positions: [b] indices of the block's records in the view (into its ``rows``).
        values: [layers, b, width] layer-major (as the chunks lie), in the cache's dtype.
    """

    positions: np.ndarray
    values: torch.Tensor


@dataclass(frozen=True)
class _ChunkRow:
    """Where one chunk-row's records of a view lie: cache rows ``[start, start + valid)``; ``local``
    picks the view's records among them (``None``: all, in order)."""

    start: int
    valid: int
    local: np.ndarray | None
    positions: np.ndarray


class StreamedActivations:
    """A ``[n, layers, width]`` view of one cached site that is read chunk-row by chunk-row.

    What ``probes.cache_reading.read_layers`` would return, without holding it: the probes' fits,
    cross-validation and readings accept this view wherever they accept that array.

    Args:
        reader: the open cache.
        site: the cached site (its stored layers and per-layer shape).
        layers: model layers of the view's layers axis, each stored; ``None``: ``site.layers``.
        rows: [n] cache rows of the view's records in the view's order, unique; ``None``: every
            committed record in file order.

    Raises:
        CacheSiteError: a layer is not stored.
        ProbeInputError: rows out of range or repeated.
    """

    def __init__(
        self,
        reader: CacheReader,
        site: ProbeSite,
        layers: Sequence[int] | None = None,
        rows: np.ndarray | Sequence[int] | None = None,
    ) -> None:
        self.reader = reader
        self.site = site
        self.layers = tuple(site.layers if layers is None else (int(layer) for layer in layers))
        missing = sorted(set(self.layers) - set(site.layers))
        if missing or not self.layers:
            raise CacheSiteError(
                f"{reader.path}: layer(s) {missing or list(self.layers)} of {site.site}@{site.position} are not "
                f"stored (stored: {list(site.layers)})"
            )
        self._dataset: h5py.Dataset = reader.dataset(site.site, site.position)
        stored = reader.layers(site.site, site.position)
        self._layer_index = [stored.index(layer) for layer in self.layers]
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        if self.rows is not None and len(self.rows):
            if self.rows.min() < 0 or self.rows.max() >= reader.n_records:
                raise ProbeInputError(
                    f"{reader.path}: rows outside [0, {reader.n_records}) asked of {site.site}@{site.position}"
                )
            if np.unique(self.rows).size != self.rows.size:
                raise ProbeInputError(f"{reader.path}: a streamed view of {site.site}@{site.position} repeats rows")
        self._itemsize = int(self._dataset.dtype.itemsize)
        self.storage_dtype: torch.dtype = torch.float16 if self._dataset.dtype == np.float16 else torch.float32
        """The torch dtype of the cache's stored values (float16 or float32)."""
        chunks = self._dataset.chunks
        self.chunk_rows: int = int(chunks[0]) if chunks is not None else CONTIGUOUS_BLOCK_ROWS
        self._plan = self._chunk_plan()

    @property
    def n(self) -> int:
        """Records in the view."""
        return self.reader.n_records if self.rows is None else len(self.rows)

    @property
    def width(self) -> int:
        """Features per layer (``site.width``)."""
        return self.site.width

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n, layers, width)``: the shape of the array this view stands for."""
        return (self.n, len(self.layers), self.width)

    @property
    def n_chunks(self) -> int:
        """Chunk-rows that hold records of the view (the blocks of one pass)."""
        return len(self._plan)

    @property
    def source(self) -> str:
        """``<cache>: <site>@<position>`` for messages."""
        return f"{self.reader.path}: {self.site.site}@{self.site.position}"

    def chunk_sizes(self) -> np.ndarray:
        """[n_chunks] records of the view in each chunk-row, in file order."""
        return np.array([len(chunk.positions) for chunk in self._plan], dtype=np.int64)

    def layer_bytes(self) -> int:
        """Bytes of one layer of one chunk-row in the cache's dtype (about ``chunk_bytes``)."""
        return self.chunk_rows * self.width * self._itemsize

    def with_layers(self, layers: Sequence[int]) -> StreamedActivations:
        """The same records at a subset of the layers."""
        return StreamedActivations(self.reader, self.site, layers, self.rows)

    def blocks(self, order: Sequence[int] | np.ndarray | None = None) -> Generator[ActivationBlock, None, None]:
        """The view's chunk-rows, in file order or in ``order`` (indices into ``range(n_chunks)``).

        Values come in the cache's dtype and stay valid until the next block is asked for (they
        are the reading buffer itself when the view takes whole chunk-rows): a consumer converts
        them layer by layer (``values[layer].float()``, a tile that stays in the processor's
        cache) and clones what it keeps.

        Args:
            order: chunk-rows to read, in this order (e.g. one epoch's permutation).

        Raises:
            CacheFormatError: a chunk cannot be read (a damaged file).
        """
        plan = self._plan if order is None else [self._plan[int(index)] for index in order]
        with _ReadAhead(self, plan) as ahead:
            for chunk, raw in ahead:
                values = torch.from_numpy(raw)[:, : chunk.valid]
                if chunk.local is not None:
                    values = values[:, torch.from_numpy(chunk.local)]
                yield ActivationBlock(chunk.positions, values)
                ahead.release(raw)

    def check_finite(self, block: ActivationBlock, totals: torch.Tensor) -> None:
        """Raise when ``totals`` ([layers, ...], sums or projections of ``block``) are not all finite.

        A NaN or inf activation makes every sum or dot product it enters NaN or inf, so checking
        what a pass computes finds them without another pass over the values.

        Raises:
            NonFiniteActivationsError: naming the layer and the records of the chunk-row.
        """
        finite = torch.isfinite(totals.reshape(totals.shape[0], -1)).all(dim=1)
        if bool(finite.all()):
            return
        index = int(torch.nonzero(~finite)[0, 0])
        bad = int((~torch.isfinite(block.values[index].float())).any(dim=1).sum())
        rows = block.positions if self.rows is None else self.rows[block.positions]
        raise NonFiniteActivationsError(
            f"{self.source} layer {self.layers[index]} holds NaN or inf in {bad} record(s) of cache rows "
            f"{int(rows.min())}-{int(rows.max())}; recapture those records"
        )

    def map_layers(self, measures: Mapping[Key, tuple[int, RecordMeasure]]) -> dict[Key, np.ndarray]:
        """Per-record values of functions of single layers, for every record, in one pass.

        Args:
            measures: key -> (a layer of the view, the function of its states).

        Returns:
            key -> [n] float64 in view order.

        Raises:
            NonFiniteActivationsError: a layer holds NaN or inf (the first such layer, with the
                number of records that hold them, as ``probes.cache_reading.read_layers`` says it).
        """
        outputs = {key: np.empty(self.n) for key in measures}
        bad = np.zeros(len(self.layers), dtype=np.int64)
        wanted: dict[int, list[tuple[Key, RecordMeasure]]] = {layer: [] for layer in self.layers}
        for key, (layer, measure) in measures.items():
            wanted[layer].append((key, measure))
        with one_intra_op_thread():
            for block in self.blocks():
                for index, layer in enumerate(self.layers):
                    states = block.values[index].float().numpy()
                    bad[index] += int((~np.isfinite(states).all(axis=1)).sum())
                    for key, measure in wanted[layer]:
                        outputs[key][block.positions] = measure(states, block.positions)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise non_finite_error(self.reader, self.site, self.layers[first], int(bad[first]))
        return outputs

    def _chunk_plan(self) -> list[_ChunkRow]:
        size = self.chunk_rows
        n_records = self.reader.n_records
        if self.rows is None:
            return [
                _ChunkRow(start, min(size, n_records - start), None, np.arange(start, min(start + size, n_records)))
                for start in range(0, n_records, size)
            ]
        order = np.argsort(self.rows, kind="stable")
        ordered = self.rows[order]
        chunk_of = ordered // size
        bounds = np.flatnonzero(np.diff(chunk_of)) + 1
        plan = []
        for picked in np.split(np.arange(len(ordered)), bounds) if len(ordered) else []:
            start = int(chunk_of[picked[0]]) * size
            local = ordered[picked] - start
            whole = len(local) == min(size, n_records - start)
            plan.append(_ChunkRow(start, int(local[-1]) + 1, None if whole else local.astype(np.int64), order[picked]))
        return plan


class _ReadAhead:
    """The reading thread of one pass: fills raw ``[layers, R, width]`` buffers in the cache's dtype."""

    def __init__(self, view: StreamedActivations, plan: list[_ChunkRow]) -> None:
        self.view = view
        self.plan = plan
        dataset = view._dataset
        self.direct = (
            dataset.chunks is not None
            and not dataset.is_virtual
            and dataset.id.get_create_plist().get_nfilters() == 0
            and dataset.dtype.isnative
            and dataset.chunks[1:] == (1, *dataset.shape[2:])
        )
        shape = (len(view.layers), view.chunk_rows, view.width)
        self.pool: queue.Queue[np.ndarray] = queue.Queue()
        for _ in range(READ_AHEAD + 1):
            self.pool.put(np.empty(shape, dtype=dataset.dtype))
        self.ready: queue.Queue[tuple[_ChunkRow, np.ndarray] | BaseException | None] = queue.Queue(READ_AHEAD)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="probe-stream", daemon=True)

    def __enter__(self) -> _ReadAhead:
        self.thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop.set()
        while self.thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self.ready.get(timeout=_POLL_SECONDS)
        self.thread.join()

    def __iter__(self) -> Iterator[tuple[_ChunkRow, np.ndarray]]:
        while True:
            item = self.ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def release(self, raw: np.ndarray) -> None:
        """Hand a raw buffer back to the thread."""
        self.pool.put(raw)

    def _run(self) -> None:
        try:
            for chunk in self.plan:
                raw = self._take(self.pool)
                if raw is None:
                    return
                self._read(chunk, raw)
                if not self._offer((chunk, raw)):
                    return
            self._offer(None)
        except READ_ERRORS as error:  # handed to the caller, which raises it
            view = self.view
            self._offer(
                CacheFormatError(
                    f"{view.reader.path} is damaged: {view._dataset.name.lstrip('/')} cannot be read "
                    f"({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
                    f"`workbench cache verify {view.reader.path}` lists the damage"
                )
            )
        except BaseException as error:  # a bug or an interrupt: the caller raises it as it is
            self._offer(error)

    def _read(self, chunk: _ChunkRow, raw: np.ndarray) -> None:
        dataset = self.view._dataset
        index = self.view._layer_index
        if self.direct:
            tail = (0,) * (dataset.ndim - 2)
            for slot, layer in enumerate(index):
                mask, _ = dataset.id.read_direct_chunk(
                    (chunk.start, layer, *tail), out=raw[slot].reshape(-1).view(np.uint8)
                )
                if mask:
                    raise OSError(f"chunk at row {chunk.start}, layer slot {layer} has filter mask {mask}")
            return
        stop = chunk.start + chunk.valid
        ascending = sorted(range(len(index)), key=index.__getitem__)
        if index == list(range(dataset.shape[1])):
            values = dataset[chunk.start : stop]
        else:
            values = dataset[chunk.start : stop, [index[slot] for slot in ascending]]
            values = values[:, np.argsort(ascending)]
        raw[:, : chunk.valid] = values.reshape(chunk.valid, len(index), -1).swapaxes(0, 1)

    def _take(self, source: queue.Queue[np.ndarray]) -> np.ndarray | None:
        while not self.stop.is_set():
            try:
                return source.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
        return None

    def _offer(self, item: tuple[_ChunkRow, np.ndarray] | BaseException | None) -> bool:
        while not self.stop.is_set():
            try:
                self.ready.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False
