"""``workbench report``: build the self-contained HTML report of one run folder."""

from __future__ import annotations

from pathlib import Path

import plotly.offline

from reports.html_page import render_report_page
from reports.run_results import RunResults
from reports.sections import report_figures
from workbench.run_folder import REPORT_PAGE, RunFolder


def build_report(run_dir: Path, out_dir: Path | None = None) -> Path:
    """Write ``index.html`` for the run folder ``run_dir`` (or its ``cache.h5``); return its path.

    The page goes to ``out_dir`` when given, else to ``<run folder>/report/``. It opens offline:
    plotly.js is embedded once. Figures whose tables are missing are left out and the page says
    why. Raises ``workbench.run_folder.RunFolderError`` / ``TableFormatError`` (both ``ValueError``) for bad input.
    """
    results = RunResults.load(run_dir)
    target = out_dir if out_dir is not None else RunFolder(results.run_dir).report
    page = render_report_page(results, report_figures(results), plotly.offline.get_plotlyjs())
    target.mkdir(parents=True, exist_ok=True)
    path = target / REPORT_PAGE
    path.write_text(page, encoding="utf-8")
    return path
