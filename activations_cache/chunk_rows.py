"""Chunk-rows: how the writer turns record-major batches into whole, layer-major chunks.

A chunk-row is ``chunk_rows`` consecutive records across all layers of one dataset: ``layers``
chunks of shape ``(chunk_rows, 1, *shape)``. Batches arrive record-major (``[n, layers, *shape]``);
writing them one batch at a time would rewrite each chunk many times, so the caller's thread
copies them (casting to the storage dtype) into a layer-major block ``[layers, chunk_rows,
*shape]``, whose per-layer slices are the byte images of the chunks. A complete block becomes a
:class:`ChunkRowJob` for the writer thread, which writes each chunk whole with
``write_direct_chunk`` (no HDF5 selection or conversion) and hands the block back. Each dataset
owns a few blocks (two by default): the caller fills one while the writer thread writes another,
so copying and writing overlap and memory stays at a few chunk-rows per dataset.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass

import h5py
import numpy as np

_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class ChunkRowJob:
    """Rows ``[start, start + rows)`` of one dataset, layer-major, ready to be written.

    Attributes:
        key: ``(position, site)`` of the dataset.
        start: the first record row.
        rows: records held (at most one chunk-row; fewer for a partial write before a commit).
        block: ``[layers, chunk_rows, *shape]`` in the storage dtype; rows past ``rows`` are zero
            when they would reach the file (a partial job of an aligned chunk-row).
        pool: where ``block`` goes back once written (``None`` for a one-off copy).
    """

    key: tuple[str, str]
    start: int
    rows: int
    block: np.ndarray
    pool: queue.Queue[np.ndarray] | None


class ChunkRowAssembler:
    """The caller-side half: copies batches of one dataset into chunk-row blocks.

    Args:
        key: ``(position, site)`` of the dataset.
        dataset: the HDF5 dataset ``[records, layers, *shape]``, already holding its first rows
            (only its shape and dtype are read here; the writer thread owns the file).
        chunk_rows: records per chunk (the dataset's first chunk dimension).
        blocks: chunk-row blocks to circulate (memory: ``blocks`` chunk-rows).
        emit: called with each completed :class:`ChunkRowJob`, in order.
        wait_hook: called while waiting for a block the writer thread has not handed back yet
            (it raises when the writer thread has failed, so the caller never waits forever).
    """

    def __init__(
        self,
        key: tuple[str, str],
        dataset: h5py.Dataset,
        chunk_rows: int,
        blocks: int,
        emit: Callable[[ChunkRowJob], None],
        wait_hook: Callable[[], None],
    ) -> None:
        self.key = key
        self.chunk_rows = chunk_rows
        self.start = dataset.shape[0]
        self.held = 0
        self.emit = emit
        self.wait_hook = wait_hook
        shape = (dataset.shape[1], chunk_rows, *dataset.shape[2:])
        self.pool: queue.Queue[np.ndarray] = queue.Queue()
        for _ in range(blocks):
            self.pool.put(np.empty(shape, dtype=dataset.dtype))  # every row read is written first
        self.block: np.ndarray | None = None

    @property
    def capacity(self) -> int:
        """Rows until the next chunk boundary (a resumed file may start mid-chunk)."""
        return self.chunk_rows - self.start % self.chunk_rows

    def append(self, values: np.ndarray) -> None:
        """Copy ``values`` ``[n, layers, *shape]`` (any float dtype) in; emit each chunk-row it completes."""
        offset = 0
        while offset < len(values):
            block = self._current_block()
            take = min(self.capacity - self.held, len(values) - offset)
            block[:, self.held : self.held + take] = values[offset : offset + take].swapaxes(0, 1)
            self.held += take
            offset += take
            if self.held == self.capacity:
                self.emit(ChunkRowJob(self.key, self.start, self.held, block, self.pool))
                self.block = None
                self.start += self.held
                self.held = 0

    def partial(self) -> ChunkRowJob | None:
        """A copy of the rows held so far (``None`` when none are), so that a commit can include
        them; the rows stay held and are written again, whole, when the chunk-row completes."""
        if not self.held or self.block is None:
            return None
        copy = np.zeros_like(self.block)
        copy[:, : self.held] = self.block[:, : self.held]
        return ChunkRowJob(self.key, self.start, self.held, copy, None)

    def finish(self) -> ChunkRowJob | None:
        """The rows held so far, in their own block (no copy; ``None`` when none are held). The
        assembler takes no more rows afterwards."""
        if not self.held or self.block is None:
            return None
        block, self.block = self.block, None
        block[:, self.held :] = 0
        job = ChunkRowJob(self.key, self.start, self.held, block, self.pool)
        self.start += self.held
        self.held = 0
        return job

    def _current_block(self) -> np.ndarray:
        while self.block is None:
            try:
                self.block = self.pool.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                self.wait_hook()
        return self.block


def write_chunk_row(dataset: h5py.Dataset, job: ChunkRowJob, chunk_rows: int) -> None:
    """Write ``job`` into ``dataset`` (extending it), then hand its block back to its pool.

    A chunk-aligned job of an uncompressed dataset goes to disk chunk by chunk with
    ``write_direct_chunk``; the rows past ``job.rows`` lie beyond the dataset's extent (zero in a
    partial job, and overwritten when the chunk-row is written whole). Other jobs (compressed, or
    a resumed file's first, unaligned rows) go through an HDF5 selection.
    """
    stop = job.start + job.rows
    if dataset.shape[0] < stop:
        dataset.resize(stop, axis=0)
    direct = job.start % chunk_rows == 0 and dataset.compression is None
    for layer, block in enumerate(job.block):
        if direct:
            dataset.id.write_direct_chunk((job.start, layer) + (0,) * (block.ndim - 1), block)
        else:
            dataset[job.start : stop, layer] = block[: job.rows]
    if job.pool is not None:
        job.pool.put(job.block)
