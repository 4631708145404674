"""Reading benchmark files line by line with errors that name the file and the line.

Every task loader goes through this module, so that each kind of bad row (a byte that is not
UTF-8, a line that is not JSON, a field of the wrong type, a duplicate ID, ...) is reported the same
way: as ``"<file>:<line>: <problem>"``, raised as :class:`MalformedLineError` under
``on_error="raise"`` or skipped with a :class:`MalformedLineWarning` under ``on_error="skip"``.
A file that yields no item at all (empty, or every row skipped) raises :class:`NoItemsError`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

OnError = Literal["raise", "skip"]
ON_ERROR_CHOICES: tuple[OnError, ...] = ("raise", "skip")
_REPR_LIMIT = 60


class MalformedLineError(ValueError):
    """A line of a task file that cannot be parsed, lacks a field or holds a wrong value."""


class MalformedLineWarning(UserWarning):
    """Issued once per line skipped under ``on_error="skip"``; the message starts ``file:line:``."""


class NoItemsError(ValueError):
    """A task file that yields no item: it is empty, or ``on_error="skip"`` removed every row."""


def report_malformed_line(
    path: Path,
    line_number: int,
    problem: str,
    on_error: OnError,
    error_type: type[MalformedLineError] = MalformedLineError,
) -> None:
    """Raise ``error_type`` (a :class:`MalformedLineError`) or warn with :class:`MalformedLineWarning`.

    The message reads ``"<path>:<line_number>: <problem>"`` in both cases, so a caller that
    collects warnings (``warnings.catch_warnings(record=True)``) gets every skipped line's location.
    """
    message = f"{path}:{line_number}: {problem}"
    if on_error == "raise":
        raise error_type(f"{message} (fix the line, or set on_error = 'skip' to skip it)")
    warnings.warn(f"{message} (line skipped)", MalformedLineWarning, stacklevel=3)


def check_on_error(on_error: str) -> OnError:
    """Return ``on_error`` if it is ``"raise"`` or ``"skip"``; raise ``ValueError`` otherwise."""
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error={on_error!r} is not one of {ON_ERROR_CHOICES}")
    return on_error


def describe_value(value: object) -> str:
    """A JSON value for an error message, with its JSON type: ``"a list (['a', 'b'])"``, ``"null"``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        kind = "a boolean"
    elif isinstance(value, str):
        kind = "a string"
    elif isinstance(value, int):
        kind = "an integer"
    elif isinstance(value, float):
        kind = "a number"
    elif isinstance(value, list):
        kind = "a list"
    elif isinstance(value, dict):
        kind = "an object"
    else:
        kind = type(value).__name__
    text = repr(value)
    if len(text) > _REPR_LIMIT:
        text = text[: _REPR_LIMIT - 3] + "..."
    return f"{kind} ({text})"


def is_integer(value: object) -> bool:
    """Whether a parsed JSON value is an integer (``true`` / ``false`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class LineProblems:
    """Reports the bad lines of one file under one ``on_error`` policy and counts the skipped ones.

    Attributes:
        path: the file, as it appears in messages.
        on_error: ``"raise"`` or ``"skip"``.
        error_type: the :class:`MalformedLineError` subclass raised under ``"raise"``.
        skipped: lines skipped so far.
        first_skipped: ``(line_number, problem)`` of the first skipped line, or ``None``.
    """

    path: Path
    on_error: OnError = "raise"
    error_type: type[MalformedLineError] = MalformedLineError
    skipped: int = 0
    first_skipped: tuple[int, str] | None = None

    def __post_init__(self) -> None:
        self.on_error = check_on_error(self.on_error)

    def report(self, line_number: int, problem: str) -> None:
        """Raise, or warn and count the line as skipped (:func:`report_malformed_line`)."""
        report_malformed_line(self.path, line_number, problem, self.on_error, self.error_type)
        self.skipped += 1
        if self.first_skipped is None:
            self.first_skipped = (line_number, problem)

    def check_holds_items(self, n_items: int) -> None:
        """Raise :class:`NoItemsError` when the file gave ``n_items == 0`` items."""
        if n_items:
            return
        if self.first_skipped is not None:
            line_number, problem = self.first_skipped
            raise NoItemsError(
                f"{self.path}: holds no items: on_error = 'skip' skipped all {self.skipped} row(s) "
                f"(first, line {line_number}: {problem}); fix the file"
            )
        raise NoItemsError(f"{self.path}: holds no items (no data rows); fill the file or point the task at another")


def read_text_lines(path: Path, problems: LineProblems) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for every non-blank UTF-8 line, without its line ending.

    Line numbers are 1-based, as editors show them; lines are split at ``\\n``. A line that is not
    valid UTF-8 is reported through ``problems`` (raised, or skipped with a warning). A UTF-8 byte
    order mark at the start of the file is dropped.
    """
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                byte = raw[error.start]
                problems.report(
                    line_number,
                    f"not valid UTF-8 (byte 0x{byte:02x} at column {error.start + 1}); re-save the file as UTF-8",
                )
                continue
            text = text.rstrip("\r\n")
            if text.strip():
                yield line_number, text


def read_json_lines(
    path: Path, on_error: OnError = "raise", problems: LineProblems | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for every non-blank line of a UTF-8 JSON Lines file.

    A line that is not UTF-8 or not a JSON object is reported through ``problems`` (default: a new
    :class:`LineProblems` for ``path`` and ``on_error``): raised, or skipped with a warning. Pass
    your own ``problems`` to report the records' own faults the same way and to count every skip.
    """
    problems = problems if problems is not None else LineProblems(path, check_on_error(on_error))
    for line_number, line in read_text_lines(path, problems):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            problems.report(line_number, f"not valid JSON ({error.msg} at column {error.colno})")
            continue
        if not isinstance(record, dict):
            problems.report(line_number, f"expected a JSON object, got {describe_value(record)}")
            continue
        yield line_number, record
