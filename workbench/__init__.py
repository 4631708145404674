"""Moral self-correction workbench: models, hook layer, tasks, protocols, runner, command line.

``workbench.open_run(path)`` opens a run folder in a notebook (:mod:`workbench.notebook`); it is imported
on first use, so that the command line does not load pandas and xarray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.notebook import open_run

__version__ = "0.1.0"
__all__ = ["__version__", "open_run"]


def __getattr__(name: str) -> Any:
    if name == "open_run":
        from workbench.notebook import open_run

        return open_run
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
