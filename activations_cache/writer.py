"""``CacheWriter``: streams records and activations into a cache from a background thread.

The caller validates and converts each batch (so bad input fails at once, in the caller) and puts
it on a bounded queue; one writer thread owns the HDF5 file, fills one chunk-row buffer per
dataset, and commits. Memory is bounded by ``queue_size`` batches plus one chunk-row per dataset.

Commit protocol (readers trust only ``/committed_records``):
  1. write activation rows, flush;
  2. extend and write the record columns, flush;
  3. write the new count into ``/committed_records``, flush.
The file is in SWMR-write mode, so what is on disk stays consistent at every flush.
"""

from __future__ import annotations

import fcntl
import os
import queue
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from activations_cache.chunk_rows import ChunkRowBuffer
from activations_cache.errors import ActivationShapeError, CachePathError, CacheWriteError, RecordError
from activations_cache.layout import COMMITTED_RECORDS, LIBVER, RECORDS_GROUP
from activations_cache.records import duplicate_keys, record_columns
from activations_cache.resume import check_cache_path, committed_record_keys, prepare_cache_file
from activations_cache.spec import CacheMetadata, CacheSpec

_CLOSE = object()
_POLL_SECONDS = 0.1


class _WriterLock:
    """An exclusive ``flock`` on ``<cache>.lock``: one writer per cache; released by the OS on death."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        self.descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.descriptor)
            raise CachePathError(
                f"cache {path} is being written by another process (lock {self.path} is held); "
                "wait for it to finish or use another run name"
            ) from None

    def release(self) -> None:
        """Unlock and remove the lock file."""
        self.path.unlink(missing_ok=True)
        os.close(self.descriptor)


class _CommitLoop:
    """The writer thread's state: chunk-row buffers, pending record rows, the commit protocol."""

    def __init__(self, file: h5py.File, spec: CacheSpec, commit_interval_s: float | None) -> None:
        self.file = file
        self.spec = spec
        self.commit_interval_s = commit_interval_s
        self.buffers = {
            dataset.key: ChunkRowBuffer(file[dataset.path], spec.chunk_rows(dataset))
            for dataset in spec.datasets
        }
        self.committed_ds = file[COMMITTED_RECORDS]
        self.committed = int(self.committed_ds[()])
        self.columns = {name: file[f"{RECORDS_GROUP}/{name}"] for name in spec.columns}
        self.pending: list[dict[str, np.ndarray]] = []
        self.last_commit = time.monotonic()

    def add(self, columns: dict[str, np.ndarray], activations: dict[tuple[str, str], np.ndarray]) -> None:
        """Buffer one batch; commit what is durable, or everything once the interval has passed."""
        for key, values in activations.items():
            self.buffers[key].append(values)
        self.pending.append(columns)
        interval_passed = (
            self.commit_interval_s is not None
            and time.monotonic() - self.last_commit >= self.commit_interval_s
        )
        if interval_passed:
            self.commit_all()
        else:
            self.commit(min(buffer.durable_rows for buffer in self.buffers.values()))

    def commit_all(self) -> None:
        """Write every held row (partial chunk-rows included) and commit all records received."""
        for buffer in self.buffers.values():
            buffer.write_held_rows()
        self.commit(min(buffer.durable_rows for buffer in self.buffers.values()))

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
        self.last_commit = time.monotonic()


class CacheWriter:
    """Writes one cache file; create with :meth:`open`, use as a context manager.

    Example::

        with CacheWriter.open(path, spec, meta, queue_size=4) as writer:
            done = writer.committed_keys()
            writer.submit(records, {("last_prompt", "hook_resid_post"): array})
    """

    def __init__(
        self,
        path: Path,
        spec: CacheSpec,
        file: h5py.File,
        lock: _WriterLock,
        queue_size: int,
        commit_interval_s: float | None,
    ) -> None:
        self.path = path
        self.spec = spec
        self._file = file
        self._lock = lock
        self._committed_keys = committed_record_keys(file)
        self._seen_keys = set(self._committed_keys)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._failure: BaseException | None = None
        self._closed = False
        self._loop = _CommitLoop(file, spec, commit_interval_s)
        self._thread = threading.Thread(target=self._run, name=f"cache-writer:{path.name}", daemon=True)
        self._thread.start()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        spec: CacheSpec,
        meta: CacheMetadata,
        queue_size: int = 4,
        overwrite: bool = False,
        commit_interval_s: float | None = 10.0,
    ) -> CacheWriter:
        """Create the cache at ``path``, or resume it when it exists and belongs to this run.

        Args:
            path: the cache file (e.g. ``runs/<name>/cache.h5``); its folder must exist.
            spec: datasets, record columns and storage choices.
            meta: model, tokenizer, configuration and seed of the run.
            queue_size: batches that may wait for the writer thread; ``submit`` blocks beyond.
            overwrite: delete an existing cache and start fresh.
            commit_interval_s: commit at least this often (seconds), writing partial chunk-rows;
                ``None`` commits only when chunk-rows complete and at close. A crash loses at most
                the records submitted since the last commit.

        Raises:
            CachePathError: a directory, read-only, missing folder, or another writer holds it.
            CacheMismatchError: the existing cache has another schema, spec, weights or config.
            CacheFormatError: the existing file is not a cache or cannot be recovered.
        """
        if queue_size < 1:
            raise ValueError(f"queue_size={queue_size} must be >= 1")
        cache_path = Path(path)
        check_cache_path(cache_path)
        lock = _WriterLock(cache_path)
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
        """Queue one batch of ``n`` records and their activations; blocks while the queue is full.

        Args:
            records: ``n`` dicts with every built-in column and every declared column.
            activations: ``(position, site) -> [n, layers, *shape]`` array of any float dtype,
                for every dataset of the spec. Zero-copy: the writer thread reads these arrays
                later (casting them to the storage dtype into its chunk-row buffers), so do not
                modify them after ``submit``; pass fresh arrays for every batch.

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
        self._put((columns, arrays))
        self._seen_keys.update(keys)

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
                    self._loop.commit_all()
                    return
                columns, arrays = item
                self._loop.add(columns, arrays)
        except BaseException as error:  # handed to the caller on its next submit/close
            self._failure = error

    def _join_and_release(self) -> None:
        self._thread.join()
        if self._file.id.valid:
            self._file.close()
        self._lock.release()

    def close(self) -> None:
        """Write and commit everything submitted, close the file; re-raise a writer failure."""
        if self._closed:
            return
        self._put(_CLOSE)
        self._closed = True
        self._thread.join()
        if self._failure is not None:
            self._raise_failure()
        self._join_and_release()

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
