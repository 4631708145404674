"""Reading JSON Lines benchmark files with errors that name the file and the line."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

OnError = Literal["raise", "skip"]
ON_ERROR_CHOICES: tuple[OnError, ...] = ("raise", "skip")


class MalformedLineError(ValueError):
    """A JSON Lines record that cannot be parsed or lacks a required field."""


class MalformedLineWarning(UserWarning):
    """Issued once per line skipped under ``on_error="skip"``; the message starts ``file:line:``."""


def report_malformed_line(path: Path, line_number: int, problem: str, on_error: OnError) -> None:
    """Raise :class:`MalformedLineError` or warn with :class:`MalformedLineWarning`.

    The message reads ``"<path>:<line_number>: <problem>"`` in both cases, so a caller that
    collects warnings (``warnings.catch_warnings(record=True)``) gets every skipped line's location.
    """
    message = f"{path}:{line_number}: {problem}"
    if on_error == "raise":
        raise MalformedLineError(f"{message} (fix the line, or pass on_error='skip' to skip it)")
    warnings.warn(f"{message} (line skipped)", MalformedLineWarning, stacklevel=3)


def check_on_error(on_error: str) -> OnError:
    """Return ``on_error`` if it is ``"raise"`` or ``"skip"``; raise ``ValueError`` otherwise."""
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error={on_error!r} is not one of {ON_ERROR_CHOICES}")
    return on_error  # type: ignore[return-value]


def read_json_lines(path: Path, on_error: OnError = "raise") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for every non-blank line of a UTF-8 JSON Lines file.

    Line numbers are 1-based, as editors show them. A line that is not a JSON object is reported
    through :func:`report_malformed_line` (raised, or skipped with a warning).
    """
    on_error = check_on_error(on_error)
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                report_malformed_line(path, line_number, f"not valid JSON ({error.msg})", on_error)
                continue
            if not isinstance(record, dict):
                report_malformed_line(
                    path,
                    line_number,
                    f"expected a JSON object, got {type(record).__name__}",
                    on_error,
                )
                continue
            yield line_number, record
