"""Writing the tidy CSV tables of ``run_dir/probes/`` (RUN_FOLDER.md)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from probes.evaluation import LayerEvaluation
from probes.metrics import Estimate

LAYER_SCORE_COLUMNS = ("site", "position", "layer", "arm", "metric", "value", "ci_low", "ci_high")


def write_table(path: Path, columns: Sequence[str], rows: Sequence[dict[str, object]]) -> Path:
    """Write ``rows`` under a header of ``columns`` (UTF-8, ``csv`` quoting); returns ``path``.

    Raises:
        ValueError: a row with keys other than ``columns``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="raise")
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
        **estimate.csv_cells(),
    }
