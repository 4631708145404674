"""Interactive plotly reports of a run folder: a summary of findings, then convergence, uncertainty, morality, ...

``build_report(run_dir)`` writes ``report/index.html`` (docs/report.md); :mod:`reports.summary` computes
its opening summary from the typed tables; the figure functions of
:mod:`reports.figures` take the typed tables of :class:`RunResults` and return plotly figures;
``export_figure`` writes one of them as PNG/SVG when the optional ``kaleido`` is installed.
"""

from __future__ import annotations

from reports.build import build_report
from reports.run_results import RunResults
from reports.static_export import StaticExporterMissingError, export_figure
from reports.tables import TableFormatError

__all__ = [
    "RunResults",
    "StaticExporterMissingError",
    "TableFormatError",
    "build_report",
    "export_figure",
]
