"""Exceptions of the activation cache: each message is one line naming the culprit and the fix."""

from __future__ import annotations


class CacheError(ValueError):
    """Base class of every error this package raises on bad input or a bad file."""


class CachePathError(CacheError):
    """The cache path cannot be used: a directory, read-only, or its folder is missing."""


class CacheMismatchError(CacheError):
    """An existing cache was written by another run (schema, spec, weights or config differ)."""


class CacheFormatError(CacheError):
    """A file is not a readable cache: unknown schema version, missing objects, unrecoverable."""


class CacheSpecError(CacheError):
    """A ``CacheSpec`` / ``DatasetSpec`` / ``ColumnSpec`` is malformed."""


class RecordError(CacheError):
    """A submitted record row is malformed: missing or unknown column, wrong type, duplicate key."""


class ActivationShapeError(CacheError):
    """A submitted activation array has the wrong key, length, shape or dtype."""


class CacheWriteError(CacheError):
    """The background writer thread failed; raised in the caller on the next submit or close."""
