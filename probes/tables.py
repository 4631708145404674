"""Writing the tidy CSV tables of ``run_dir/probes/`` (RUN_FOLDER.md; names and columns: workbench/run_folder.py)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from probes.evaluation import LayerEvaluation
from probes.metrics import estimate_cells
from workbench.metrics.statistics import Estimate
from workbench.run_folder import RUN_TABLES, RunFolder


def write_table(run: RunFolder, name: str, rows: Sequence[dict[str, object]]) -> Path:
    """Write ``rows`` as the table ``name`` of :data:`~workbench.run_folder.RUN_TABLES` in ``run``.

    The header is the table's row type's fields (UTF-8, ``csv`` quoting); returns the file's path.

    Raises:
        ValueError: a row with keys other than those columns.
    """
    path = run.table(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=RUN_TABLES[name].columns, extrasaction="raise")
        writer.writeheader()
        writer.writerows(rows)
    return path


def layer_score_rows(evaluation: LayerEvaluation, site: str, position: str) -> list[dict[str, object]]:
    """``layer_scores.csv`` rows: every (layer, arm, metric), then ``selectivity`` per control arm.

    A selectivity row has ``arm`` = the control arm it is measured against and ``metric`` =
    ``selectivity`` (probe accuracy minus that arm's accuracy, split by split).
    """
    rows = [_row(site, position, score.layer, score.arm, score.metric, score.estimate) for score in evaluation.scores]
    rows += [
        _row(site, position, layer, arm, "selectivity", estimate)
        for (layer, arm), estimate in sorted(evaluation.selectivity.items())
    ]
    return rows


def _row(site: str, position: str, layer: int, arm: str, metric: str, estimate: Estimate) -> dict[str, object]:
    return {
        "site": site,
        "position": position,
        "layer": layer,
        "arm": arm,
        "metric": metric,
        **estimate_cells(estimate),
    }
