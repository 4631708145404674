"""The writer's per-dataset buffer of one chunk-row, so that every chunk is written whole once."""

from __future__ import annotations

import h5py
import numpy as np


class ChunkRowBuffer:
    """Collects the rows of one activation dataset until a chunk-row is complete.

    A chunk-row is ``chunk_rows`` consecutive records across all layers: ``layers`` chunks of
    shape ``(chunk_rows, 1, *shape)``. Rows arrive record-major (a batch of records); writing them
    one batch at a time would rewrite each chunk many times, so they are held here, layer-major
    (``[layers, chunk_rows, *shape]``: each layer's block is the byte image of one chunk; memory
    about ``layers * chunk_bytes``), and written when the chunk-row is full. A full, aligned
    chunk-row of an uncompressed dataset goes to disk with ``write_direct_chunk`` (no HDF5
    selection or conversion). :meth:`write_held_rows` writes a partial chunk-row early (for a
    commit); the full chunk-row is written again, whole, once complete.

    Args:
        dataset: the HDF5 dataset ``[records, layers, *shape]``, already holding its first rows.
        chunk_rows: records per chunk (the dataset's first chunk dimension).
    """

    def __init__(self, dataset: h5py.Dataset, chunk_rows: int) -> None:
        self.dataset = dataset
        self.chunk_rows = chunk_rows
        self.start = dataset.shape[0]
        self.held = 0
        self.durable_rows = self.start
        n_layers, *shape = dataset.shape[1:]
        self.rows = np.empty((n_layers, chunk_rows, *shape), dtype=dataset.dtype)
        self.direct = dataset.compression is None

    @property
    def capacity(self) -> int:
        """Rows until the next chunk boundary (a resumed file may start mid-chunk)."""
        return self.chunk_rows - self.start % self.chunk_rows

    def append(self, values: np.ndarray) -> None:
        """Add ``values`` ``[n, layers, *shape]`` (any float dtype, cast to the storage dtype here);
        write each chunk-row it completes."""
        offset = 0
        while offset < len(values):
            take = min(self.capacity - self.held, len(values) - offset)
            self.rows[:, self.held : self.held + take] = values[offset : offset + take].swapaxes(0, 1)
            self.held += take
            offset += take
            if self.held == self.capacity:
                self.write_held_rows()
                self.start += self.held
                self.held = 0

    def write_held_rows(self) -> None:
        """Write the held rows to the file (extending the dataset); they become durable on flush."""
        stop = self.start + self.held
        if stop == self.durable_rows:
            return
        if self.dataset.shape[0] < stop:
            self.dataset.resize(stop, axis=0)
        whole_chunk = self.held == self.chunk_rows and self.start % self.chunk_rows == 0
        for layer, block in enumerate(self.rows):
            if whole_chunk and self.direct:
                offset = (self.start, layer) + (0,) * (block.ndim - 1)
                self.dataset.id.write_direct_chunk(offset, block)
            else:
                self.dataset[self.start : stop, layer] = block[: self.held]
        self.durable_rows = stop
