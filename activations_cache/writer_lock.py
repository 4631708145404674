"""The writer lock of a cache: one writer per cache, and who holds it (``FORMAT.md``, "The writer lock").

The lock is an exclusive ``flock`` on ``<cache>.lock``. Its holder writes ``{"pid", "host",
"started_at"}`` into it, so a refused writer can say who writes, and a reader can tell a running
writer from one that died (:func:`gone_writer`).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

from activations_cache.errors import CachePathError
from activations_cache.file_layout import utc_now


def lock_path(cache: Path) -> Path:
    """The writer lock file of ``cache``: ``<cache>.lock`` beside it."""
    return cache.with_name(cache.name + ".lock")


def gone_writer(cache: Path) -> str | None:
    """Why no live process writes ``cache`` (a file marked open for write), or ``None`` when one may.

    The lock file names the writer's pid and host. A writer on another host cannot be checked from
    here and counts as alive, as does one that has just taken the lock and not yet written who it is.
    """
    lock = lock_path(cache)
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
        pid, host, since = int(holder["pid"]), str(holder["host"]), str(holder["started_at"])
    except FileNotFoundError:
        return f"no process holds its writer lock ({lock.name} is absent)"
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"its writer (pid {pid} on host {host}, since {since}) is no longer running"
    except PermissionError:
        return None  # alive, another user's
    return None


LOCK_ATTEMPTS = 20
"""Times ``WriterLock`` retries after locking a lock file that its previous holder had just removed."""


def _same_file(descriptor: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``descriptor``."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _holder(descriptor: int) -> str:
    """Who holds the lock, as written in the lock file by :meth:`WriterLock._record_holder`."""
    try:
        written = json.loads(os.pread(descriptor, 4096, 0).decode("utf-8"))
        return f"pid {int(written['pid'])} on host {written['host']}, since {written['started_at']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown: its lock file names none yet"


class WriterLock:
    """An exclusive ``flock`` on ``<cache>.lock``: one writer per cache; released by the OS on death.

    The holder writes ``{"pid", "host", "started_at"}`` (JSON; UTC ISO 8601) into the lock file,
    which a refused writer quotes. ``release`` removes the file while still holding the lock, and a
    new holder checks after locking that the path still names the file it locked (retrying when
    not): so a waiter that locks a removed file never counts as a second writer.
    """

    def __init__(self, path: Path) -> None:
        self.path = lock_path(path)
        for _ in range(LOCK_ATTEMPTS):
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(descriptor)
                os.close(descriptor)
                raise CachePathError(
                    f"cache {path} is being written by another process ({holder}; lock {self.path}); "
                    "wait for it to finish or use another run name"
                ) from None
            except BaseException:
                os.close(descriptor)
                raise
            if _same_file(descriptor, self.path):
                self.descriptor = descriptor
                self._record_holder()
                return
            os.close(descriptor)  # locked a file its holder removed on release: lock the one at the path now
        raise CachePathError(
            f"cache {path}: lock {self.path} kept being replaced while locking it ({LOCK_ATTEMPTS} attempts); "
            "another process is starting and stopping writers on it: wait for it to finish"
        )

    def _record_holder(self) -> None:
        """Write who holds the lock into the lock file (best effort: a full disk still locks)."""
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": utc_now()}
        text = json.dumps(holder, sort_keys=True).encode("utf-8")
        try:
            os.ftruncate(self.descriptor, 0)
            os.pwrite(self.descriptor, text, 0)
        except OSError:
            pass

    def release(self) -> None:
        """Remove the lock file (if it is still this lock's), then unlock by closing it."""
        try:
            if _same_file(self.descriptor, self.path):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self.descriptor)
