"""``workbench compare RUN RUN... [-o DIR]``: one report over several run folders (reports/compare.py).

Runs that cannot be compared (different task, different metric settings, no shared condition) are
refused in one line naming the runs and the key, through the CLI's error handling (exit status 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

HELP = "write one report comparing several run folders (models or checkpoints side by side)"
DESCRIPTION = (
    "Write one self-contained HTML page over several run folders: behaviour per round side by side, "
    "bias levels per checkpoint, per-layer morality on a depth axis normalised to [0, 1], the configuration "
    "keys that differ, and the key metrics of every run with intervals. Runs of different tasks, metric "
    "settings or without a shared condition are refused (docs/report.md, 'Comparing runs')."
)

out = Console()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``workbench compare``."""
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="two or more run folders (or their cache.h5)")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="folder for index.html (default: <first run's parent>/compare-<run>-vs-<run>)",
    )


def run_command(args: argparse.Namespace) -> int:
    """Build the comparison page and print its path; errors propagate to the CLI's one-line handling."""
    from reports.compare import build_comparison

    path = build_comparison(list(args.runs), args.output)
    out.print(escape(f"comparison: {path}"), highlight=False, soft_wrap=True)
    return 0
