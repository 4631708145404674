"""Turning the caller's record rows (a list of dicts) into typed column arrays."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from activations_cache.errors import RecordError
from activations_cache.spec import DIGEST_COLUMNS, ColumnSpec


def text_sha256(text: str) -> str:
    """sha256 (hex) of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Exact value types that need no per-value check (anything else goes through _checked_value).
_FAST_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "bool": (bool, np.bool_),
    "int64": (int, np.int64),
    "float64": (float, np.float64),
}


def _culprit(index: int, record: dict[str, Any]) -> str:
    return f"record {index} (record_key={record.get('record_key')!r})"


def _checked_value(index: int, record: dict[str, Any], name: str, column: ColumnSpec) -> Any:
    value = record[name]

    def mistyped(expected: str) -> RecordError:  # the message is built only for a bad value
        return RecordError(f"{_culprit(index, record)}: column {name!r} must be {expected}, got {type(value).__name__}")

    if column.kind == "str":
        if not isinstance(value, str):
            raise mistyped("a str")
        return value
    if column.kind == "bool":
        if not isinstance(value, bool | np.bool_):
            raise mistyped("a bool")
        return bool(value)
    if column.kind == "int64":
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
            raise mistyped("an int")
        return int(value)
    if column.length is None:
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
            raise mistyped("a float")
        return float(value)
    vector = np.asarray(value, dtype=np.float64)
    if vector.shape != (column.length,):
        raise RecordError(
            f"{_culprit(index, record)}: column {name!r} must be {column.length} floats, got shape {vector.shape}"
        )
    return vector


def record_columns(records: list[dict[str, Any]], columns: dict[str, ColumnSpec]) -> dict[str, np.ndarray]:
    """Validate ``records`` against ``columns`` and return one array per column.

    ``prompt_sha256`` / ``answer_sha256`` may be omitted (computed here) or given (checked).

    Returns:
        column name -> array of ``len(records)`` rows: ``object`` (str), ``int64``, ``float64``
        (``[n]`` or ``[n, length]``) or ``bool``.

    Raises:
        RecordError: a missing, unknown, mistyped or inconsistent column, naming the record.
    """
    expected = set(columns)
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise RecordError(f"record {index} is a {type(record).__name__}; pass a dict per record")
        row = dict(record)
        for digest, text in DIGEST_COLUMNS.items():
            if text in row and isinstance(row[text], str):
                computed = text_sha256(row[text])
                if digest in row and row[digest] != computed:
                    raise RecordError(
                        f"{_culprit(index, record)}: {digest} {row[digest]!r} is not the sha256 of "
                        f"its {text}; omit it and the writer computes it"
                    )
                row[digest] = computed
        missing = sorted(expected - set(row))
        unknown = sorted(set(row) - expected)
        if missing or unknown:
            raise RecordError(
                f"{_culprit(index, record)}: missing columns {missing}, unknown columns {unknown}; "
                "declare extra columns in CacheSpec.record_columns"
            )
        rows.append(row)
    arrays: dict[str, np.ndarray] = {}
    for name, column in columns.items():
        column_values = [row[name] for row in rows]
        if not all(type(value) in _FAST_TYPES[column.kind] for value in column_values):
            # the slow path names the first bad record; values of subclasses pass here too
            column_values = [_checked_value(index, row, name, column) for index, row in enumerate(rows)]
        if column.kind == "str":
            arrays[name] = np.array(column_values, dtype=object)
        elif column.length is not None:
            arrays[name] = np.array(column_values, dtype=np.float64).reshape(len(records), column.length)
        else:
            arrays[name] = np.array(column_values, dtype=np.dtype(column.kind))
    return arrays


def duplicate_keys(keys: Iterable[str]) -> list[str]:
    """The keys that occur more than once in ``keys``, sorted."""
    seen: set[str] = set()
    repeated: set[str] = set()
    for key in keys:
        if key in seen:
            repeated.add(key)
        seen.add(key)
    return sorted(repeated)
