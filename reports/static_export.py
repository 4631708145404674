"""Static (PNG or SVG) export of one report figure through the optional kaleido exporter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import plotly.graph_objects as go

STATIC_FORMATS = (".png", ".svg")


class StaticExporterMissingError(ImportError):
    """The optional static-image exporter (the ``kaleido`` package) is not installed."""


def export_figure(fig: go.Figure, path: Path) -> Path:
    """Write ``fig`` as a static image to ``path`` (format from its suffix: ``.png`` or ``.svg``).

    Needs the optional ``kaleido`` package; the HTML report never does. Returns ``path``.
    """
    if path.suffix.lower() not in STATIC_FORMATS:
        raise ValueError(
            f"{path}: cannot export a figure as {path.suffix or 'a file without suffix'}; "
            f"use one of {', '.join(STATIC_FORMATS)}"
        )
    if importlib.util.find_spec("kaleido") is None:
        raise StaticExporterMissingError(
            f"cannot write {path}: static export needs the optional package 'kaleido', which is "
            "not installed; install it (pip install kaleido) or use the HTML report"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_image(path, format=path.suffix.lower().lstrip("."))
    return path
