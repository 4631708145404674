"""The experiment's files and its printed table.

``write_runs`` -> ``results.csv`` (one row per network, method and seed), ``write_summary`` ->
``summary.csv`` (mean test accuracy and its 95% interval per network and method),
``write_grid`` -> ``adam_grid.csv`` (every Adam cell of every seed, the chosen one marked).
Empty cells are values that do not apply to the row's method. ``format_summary`` is the table
the command prints, at most 80 characters wide.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.pactrain.experiment import GridRecord, RunRecord, SummaryRow

RUNS_FILE = "results.csv"
SUMMARY_FILE = "summary.csv"
GRID_FILE = "adam_grid.csv"
TABLE_WIDTH = 80


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _write(path: Path, rows: Sequence[Any], row_type: type, extra: dict[str, str] | None = None) -> Path:
    """Write dataclass ``rows`` of ``row_type`` as CSV (header = its fields, then the ``extra`` columns)."""
    names = [field.name for field in dataclasses.fields(row_type)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, *(extra or {})])
        for row in rows:
            values = [_cell(getattr(row, name)) for name in names]
            writer.writerow([*values, *(_cell(getattr(row, attribute)) for attribute in (extra or {}).values())])
    return path


def write_runs(folder: Path, runs: Sequence[RunRecord]) -> Path:
    """``folder/results.csv``, one row per run."""
    return _write(folder / RUNS_FILE, runs, RunRecord)


def write_summary(folder: Path, rows: Sequence[SummaryRow]) -> Path:
    """``folder/summary.csv`` with the interval's half-width as a last column."""
    return _write(folder / SUMMARY_FILE, rows, SummaryRow, {"half_width": "half_width"})


def write_grid(folder: Path, grid: Sequence[GridRecord]) -> Path:
    """``folder/adam_grid.csv``, one row per grid cell and seed."""
    return _write(folder / GRID_FILE, grid, GridRecord)


def format_summary(rows: Sequence[SummaryRow]) -> str:
    """The summary as fixed-width text lines (<= 80 columns): accuracy in %, ± the 95% half-width."""
    header = f"{'network':<8}{'method':<10}{'seeds':>5}  {'test acc % ± 95%':<18}{'bound':>7}  {'Adam choice':<28}"
    lines = [header, "-" * len(header)]
    for row in rows:
        spread = "" if math.isnan(row.half_width) else f" ± {100 * row.half_width:.2f}"
        accuracy = f"{100 * row.mean_test_accuracy:.2f}{spread}"
        bound = "" if row.mean_bound is None else f"{row.mean_bound:.3f}"
        lines.append(
            f"{row.network:<8}{row.method:<10}{row.seeds:>5}  {accuracy:<18}{bound:>7}  {row.adam_choice or '':<28}"
        )
    return "\n".join(line.rstrip()[:TABLE_WIDTH] for line in lines)
