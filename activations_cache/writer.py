"""``CacheWriter``: streams records and activations into a cache from a background thread.

The caller validates each batch (so bad input fails at once, in the caller) and copies it into
layer-major chunk-row blocks (:mod:`activations_cache.chunk_rows`); each completed chunk-row goes
on a queue with the records submitted since the last one, and one writer thread owns the HDF5
file, writes the chunks whole and commits. Copying (caller) and writing (thread) overlap. Memory
is bounded by ``queue_size`` chunk-row blocks per dataset: capture waits only when the writer
thread holds all of them.

Commit protocol (readers trust only ``/committed_records``):
  1. write activation rows, flush;
  2. extend and write the record columns, flush;
  3. write the new count into ``/committed_records``, flush.
The file is in SWMR-write mode, so what is on disk stays consistent at every flush. After every
chunk-row written and every commit a third thread ``fdatasync``s the file, so committed records
survive a power cut too, and the disk's writeback overlaps the next writes; ``close`` returns once
all is on disk.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from activations_cache.chunk_rows import ChunkRowAssembler, ChunkRowJob, write_chunk_row
from activations_cache.errors import (
    ActivationShapeError,
    CacheWriteError,
    RecordError,
)
from activations_cache.file_layout import COMMITTED_RECORDS, LIBVER, RECORDS_GROUP
from activations_cache.records import duplicate_keys, record_columns
from activations_cache.resume import check_cache_path, committed_record_keys, prepare_cache_file
from activations_cache.spec import CacheMetadata, CacheSpec
from activations_cache.writer_lock import WriterLock

_CLOSE = object()
_POLL_SECONDS = 0.1


class _Syncer:
    """``fdatasync`` of the cache file whenever asked, in its own thread (the call releases the GIL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.descriptor = os.open(path, os.O_RDONLY)
        self.failure: OSError | None = None
        self._wanted = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"cache-sync:{path.name}", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Sync soon (requests made while a sync runs are merged into the next one)."""
        self._wanted.set()

    def close(self) -> None:
        """Stop the thread, sync a last time (after the HDF5 file is closed), release the descriptor."""
        self._stopping = True
        self._wanted.set()
        self._thread.join()
        try:
            if self.failure is None:
                os.fdatasync(self.descriptor)
        except OSError as error:
            self.failure = error
        finally:
            os.close(self.descriptor)

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopping:
                return
            try:
                os.fdatasync(self.descriptor)
            except OSError as error:
                self.failure = error
                return


class _CommitLoop:
    """The writer thread's state: written rows per dataset, pending record rows, the commit protocol."""

    def __init__(self, file: h5py.File, spec: CacheSpec, on_write: Callable[[], None]) -> None:
        self.file = file
        self.on_write = on_write  # called after every chunk-row and every commit
        self.datasets = {dataset.key: file[dataset.path] for dataset in spec.datasets}
        self.chunk_rows = {dataset.key: spec.chunk_rows(dataset) for dataset in spec.datasets}
        self.durable_rows = {key: dataset.shape[0] for key, dataset in self.datasets.items()}
        self.committed_ds = file[COMMITTED_RECORDS]
        self.committed = int(self.committed_ds[()])
        self.columns = {name: file[f"{RECORDS_GROUP}/{name}"] for name in spec.columns}
        self.pending: list[dict[str, np.ndarray]] = []  # record columns of batches not committed yet

    def add(self, batches: list[dict[str, np.ndarray]], jobs: list[ChunkRowJob]) -> None:
        """Write ``jobs``, queue the record columns of ``batches``, commit what is written."""
        for job in jobs:
            write_chunk_row(self.datasets[job.key], job, self.chunk_rows[job.key])
            self.on_write()
            self.durable_rows[job.key] = max(self.durable_rows[job.key], job.start + job.rows)
        self.pending.extend(batches)
        received = self.committed + sum(len(batch["record_key"]) for batch in self.pending)
        self.commit(min(min(self.durable_rows.values()), received))

    def commit(self, upto: int) -> None:
        """Commit records ``[committed, upto)`` whose activation rows are written (protocol 1-3)."""
        if upto <= self.committed:
            return
        self.file.flush()
        pending = {name: np.concatenate([batch[name] for batch in self.pending]) for name in self.columns}
        count = upto - self.committed
        for name, column in self.columns.items():
            column.resize(upto, axis=0)
            column[self.committed : upto] = pending[name][:count]
        self.file.flush()
        self.committed_ds[()] = upto
        self.file.flush()
        rest = {name: values[count:] for name, values in pending.items()}
        self.pending = [rest] if len(rest["record_key"]) else []
        self.committed = upto
        self.on_write()


class CacheWriter:
    """Writes one cache file; create with :meth:`open`, use as a context manager.

    Example::

        with CacheWriter.open(path, spec, meta) as writer:
            done = writer.committed_keys()
            writer.submit(records, {("last_prompt", "hook_resid_post"): array})
    """

    def __init__(
        self,
        path: Path,
        spec: CacheSpec,
        file: h5py.File,
        lock: WriterLock,
        queue_size: int,
        commit_interval_s: float | None,
    ) -> None:
        self.path = path
        self.spec = spec
        self._file = file
        self._lock = lock
        self._committed_keys = committed_record_keys(file)
        self._seen_keys = set(self._committed_keys)
        # every entry but the last two (interval commit, close) carries a pooled block
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size * len(spec.datasets) + 2)
        self._failure: BaseException | None = None
        self._closed = False
        self._released = False
        self._commit_interval_s = commit_interval_s
        self._last_commit_request = time.monotonic()
        self._unsent: list[dict[str, np.ndarray]] = []
        self._assemblers = {
            dataset.key: ChunkRowAssembler(
                dataset.key,
                file[dataset.path],
                spec.chunk_rows(dataset),
                blocks=queue_size,
                emit=lambda job: self._send([job]),
                wait_hook=self._raise_failure,
            )
            for dataset in spec.datasets
        }
        self._syncer = _Syncer(path)
        self._loop = _CommitLoop(file, spec, on_write=self._syncer.request)
        self._thread = threading.Thread(target=self._run, name=f"cache-writer:{path.name}", daemon=True)
        self._thread.start()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        spec: CacheSpec,
        meta: CacheMetadata,
        queue_size: int = 2,
        overwrite: bool = False,
        commit_interval_s: float | None = 10.0,
    ) -> CacheWriter:
        """Create the cache at ``path``, or resume it when it exists and belongs to this run.

        Args:
            path: the cache file (e.g. ``runs/<name>/cache.h5``); its folder must exist.
            spec: datasets, record columns and storage choices.
            meta: model, tokenizer, configuration and seed of the run.
            queue_size: chunk-row blocks per dataset (at least 2: the caller fills one while
                the writer thread writes another); ``submit`` waits while the thread holds all.
            overwrite: delete an existing cache and start fresh.
            commit_interval_s: commit at least this often (seconds), writing partial chunk-rows;
                ``None`` commits only when chunk-rows complete and at close. A crash loses at most
                the records submitted since the last commit.

        Raises:
            CachePathError: a directory, read-only, missing folder, or another writer holds it.
            CacheMismatchError: the existing cache has another schema, spec, weights or config.
            CacheFormatError: the existing file is not a cache or cannot be recovered.
        """
        if queue_size < 2:
            raise ValueError(f"queue_size={queue_size} must be >= 2")
        cache_path = Path(path)
        check_cache_path(cache_path)
        lock = WriterLock(cache_path)
        try:
            prepare_cache_file(cache_path, spec, meta, overwrite)
            file = h5py.File(cache_path, "r+", libver=LIBVER)
            file.swmr_mode = True
        except BaseException:
            lock.release()
            raise
        return cls(cache_path, spec, file, lock, queue_size, commit_interval_s)

    def committed_keys(self) -> set[str]:
        """``record_key`` of every record already committed when the cache was opened."""
        return set(self._committed_keys)

    def submit(self, records: list[dict[str, Any]], activations: dict[tuple[str, str], np.ndarray]) -> None:
        """Add one batch of ``n`` records and their activations; waits while the writer thread holds every block.

        Args:
            records: ``n`` dicts with every built-in column and every declared column.
            activations: ``(position, site) -> [n, layers, *shape]`` array of any float dtype,
                for every dataset of the spec. They are copied (cast to the storage dtype) into
                chunk-row blocks before ``submit`` returns, so the caller may reuse them.

        Raises:
            RecordError / ActivationShapeError: bad input (nothing of the batch is written).
            CacheWriteError: the writer thread failed earlier (its error is the cause).
        """
        self._raise_failure()
        if self._closed:
            raise CacheWriteError(f"cache writer for {self.path} is closed; open a new one")
        if not records:
            raise RecordError(f"submit to {self.path} got an empty records list; pass at least one record")
        columns = record_columns(records, self.spec.columns)
        keys = columns["record_key"].tolist()
        repeated = duplicate_keys(keys) + sorted(set(keys) & self._seen_keys)
        if repeated:
            raise RecordError(
                f"record_key {repeated[:5]} already in cache {self.path} or repeated in the batch; "
                "skip keys in writer.committed_keys() and make keys unique"
            )
        arrays = self._checked_activations(activations, len(records))
        self._seen_keys.update(keys)
        self._unsent.append(columns)
        for key, values in arrays.items():
            self._assemblers[key].append(values)
        interval = self._commit_interval_s
        if interval is not None and time.monotonic() - self._last_commit_request >= interval:
            self._send(self._partial_jobs())
            self._last_commit_request = time.monotonic()

    def _send(self, jobs: list[ChunkRowJob]) -> None:
        """Queue ``jobs`` for the writer thread with the records not sent yet."""
        unsent, self._unsent = self._unsent, []
        self._put((unsent, jobs))

    def _partial_jobs(self) -> list[ChunkRowJob]:
        """Copies of the rows held in unfinished chunk-rows, to be written for a commit."""
        return [job for assembler in self._assemblers.values() if (job := assembler.partial()) is not None]

    def _checked_activations(
        self, activations: dict[tuple[str, str], np.ndarray], n_records: int
    ) -> dict[tuple[str, str], np.ndarray]:
        expected = {dataset.key: dataset for dataset in self.spec.datasets}
        if set(activations) != set(expected):
            missing = sorted(set(expected) - set(activations))
            unknown = sorted(set(activations) - set(expected), key=str)
            raise ActivationShapeError(
                f"activations for {self.path}: missing {missing}, unknown {unknown}; "
                "pass one array per (position, site) of the CacheSpec"
            )
        checked = {}
        for key, dataset in expected.items():
            values = np.asarray(activations[key])
            wanted = (n_records, *dataset.row_shape)
            if values.dtype.kind != "f":
                raise ActivationShapeError(
                    f"activations {key}: dtype {values.dtype} is not floating point; pass float arrays"
                )
            if values.shape != wanted:
                raise ActivationShapeError(
                    f"activations {key}: shape {values.shape}, expected {wanted} "
                    f"([records, layers={len(dataset.layers)}, *{dataset.shape}])"
                )
            checked[key] = values
        return checked

    def _put(self, item: object) -> None:
        while True:
            self._raise_failure()
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self._closed = True
            self._join_and_release()
            raise CacheWriteError(
                f"background writer of cache {self.path} failed: {failure!r}; "
                "fix the cause and re-run the same command to resume"
            ) from failure

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _CLOSE:
                    return
                batches, jobs = item
                self._loop.add(batches, jobs)
        except BaseException as error:  # handed to the caller on its next submit/close
            self._failure = error

    def _join_and_release(self) -> None:
        """Join the writer thread, close the file, sync it a last time, unlock (once)."""
        if self._released:
            return
        self._released = True
        self._thread.join()
        if self._file.id.valid:
            self._file.close()
        self._syncer.close()
        self._lock.release()

    def close(self) -> None:
        """Write and commit everything submitted, close the file; re-raise a writer failure."""
        if self._closed:
            return
        self._send([job for assembler in self._assemblers.values() if (job := assembler.finish()) is not None])
        self._put(_CLOSE)
        self._closed = True
        self._join_and_release()
        self._raise_failure()
        if self._syncer.failure is not None:
            raise CacheWriteError(
                f"cache {self.path} was written but could not be synced to disk: {self._syncer.failure!r}; "
                "check the disk, then re-run the same command (committed records are kept)"
            ) from self._syncer.failure

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Commit what was submitted even when the block raised (e.g. KeyboardInterrupt)."""
        self.close()
