"""Reading the run folder's tidy CSV tables into their row types.

The tables, their row types and columns are fixed by :mod:`workbench.run_tables` (and
``workbench/RUN_FOLDER.md``); :func:`read_table` turns a CSV file into a tuple of such rows, parsing
numbers, turning empty interval cells into ``None`` and naming the file and line of any bad cell.

Undefined is a value, not an error: a row type with an ``undefined_reason`` field
(``BehaviourMetric``) reads an empty (or ``nan``) ``value`` as undefined, ``value`` ``None`` with its
reason (``not computable`` when the file names none).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from workbench.metrics.undefined import NOT_COMPUTABLE


class TableFormatError(ValueError):
    """A tidy CSV table of the run folder does not follow ``workbench/RUN_FOLDER.md``."""


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda cell: None if cell.strip() == "" else parse(cell)


def _boolean(cell: str) -> bool:
    text = cell.strip().lower()
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise ValueError(cell)


# Field annotations (strings under `from __future__ import annotations`) -> cell parser and
# the words used in error messages.
_CELL_PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "str": (str, "text"),
    "str | None": (_optional(str), "text or an empty cell"),
    "int": (int, "an integer"),
    "float": (float, "a number"),
    "int | None": (_optional(int), "an integer or an empty cell"),
    "float | None": (_optional(float), "a number or an empty cell"),
    "bool | None": (_optional(_boolean), "1/0/true/false or an empty cell"),
}

Row = TypeVar("Row")


def _has_default(field: dataclasses.Field[Any]) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def _with_undefined(values: dict[str, Any], path: Path, line: int) -> dict[str, Any]:
    """``values`` of a row type with ``value`` and ``undefined_reason``, made consistent.

    An empty or ``nan`` value is undefined: its bounds become ``None`` and its reason defaults to
    :data:`~workbench.metrics.undefined.NOT_COMPUTABLE` (a file written before the column existed,
    or a ``nan`` cell). A number together with a reason is a contradiction the writer never
    produces, so it is reported rather than guessed at.
    """
    value, reason = values["value"], values["undefined_reason"]
    if value is None or math.isnan(value):
        return {**values, "value": None, "ci_low": None, "ci_high": None, "undefined_reason": reason or NOT_COMPUTABLE}
    if reason is not None:
        raise TableFormatError(
            f"{path}:{line}: column 'undefined_reason' holds {reason!r} but 'value' holds {value!r}; "
            "empty one of the two cells or rerun the stage that wrote it"
        )
    return values


def read_table(path: Path, row_type: type[Row]) -> tuple[Row, ...]:
    """Read one tidy CSV table into rows of ``row_type`` (a row type of workbench/run_tables.py), in file order.

    Extra columns are ignored, and a column of a field with a default (``undefined_reason``) may
    be absent (its cells then take the default), so that tables written before that column
    existed still read. A missing required column, a short row or a cell that does not parse
    raises :class:`TableFormatError` naming the file, the line and the fix. For a row type with
    ``value`` and ``undefined_reason`` see :func:`_with_undefined`.
    """
    fields = dataclasses.fields(row_type)  # type: ignore[arg-type]
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames
        if header is None:
            raise TableFormatError(
                f"{path}: the file is empty; expected the header "
                f"{','.join(f.name for f in fields)} (rerun the stage that writes it)"
            )
        missing = [f.name for f in fields if f.name not in header and not _has_default(f)]
        if missing:
            raise TableFormatError(
                f"{path}:1: missing column(s) {', '.join(missing)}; the header must hold "
                f"{','.join(f.name for f in fields)} (see workbench/RUN_FOLDER.md)"
            )
        explains_undefined = {"value", "undefined_reason"} <= {f.name for f in fields}
        rows = []
        for cells in reader:
            values = {}
            for field in fields:
                if field.name not in header:
                    continue  # an optional column the file does not have: the field's default
                parse, expected = _CELL_PARSERS[str(field.type)]
                cell = cells[field.name]
                if cell is None:
                    raise TableFormatError(
                        f"{path}:{reader.line_num}: the row has fewer cells than the header; "
                        "fix the row or rerun the stage that wrote it"
                    )
                try:
                    values[field.name] = parse(cell)
                except ValueError:
                    raise TableFormatError(
                        f"{path}:{reader.line_num}: column {field.name!r} holds {cell!r}, "
                        f"expected {expected}; fix the row or rerun the stage that wrote it"
                    ) from None
            if explains_undefined:
                values.setdefault("undefined_reason", None)
                values = _with_undefined(values, path, reader.line_num)
            rows.append(row_type(**values))
    return tuple(rows)
