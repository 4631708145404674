"""How the command line reports errors: the user's errors, the unexpected ones, and their exit status.

Every command module raises an exception and lets :func:`exit_status` print it. Errors that are the
user's to fix (bad configuration, unknown model, wrong site name, a cache of another run, ...) are
``ValueError`` subclasses of the package that found them, or a missing file; they print one line
naming the culprit and the fix, and exit with status 2. An unexpected error prints one line too,
and exits with status 1; ``WORKBENCH_DEBUG=1`` shows its traceback.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape

DEBUG_ENV = "WORKBENCH_DEBUG"
USER_ERROR_STATUS = 2
UNEXPECTED_ERROR_STATUS = 1
INTERRUPTED_STATUS = 130
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    ImportError,
)


class DebiasingConfigError(ValueError):
    """A debiasing TOML file that is missing, unreadable, or wrong for the command."""


class CheckpointLabelError(ValueError):
    """``--label`` values that do not match the ``--model`` values one to one."""


class CheckpointKindError(ValueError):
    """An encoder checkpoint given to a command (or a bias measure) that needs a causal LM."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (a KeyError's repr quotes are dropped)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(text.split()) or type(error).__name__


def exit_status(handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace, console: Console) -> int:
    """Run one command's handler and turn what it raised into one printed line and an exit status."""
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: rerun the same command to resume; finished records are kept")
        return INTERRUPTED_STATUS
    except USER_ERRORS as error:
        console.print(f"[red]error:[/] {escape(one_line(error))}", highlight=False, soft_wrap=True)
        return USER_ERROR_STATUS
    except Exception as error:  # a defect or an environment failure (disk full, ...): still one line
        if os.environ.get(DEBUG_ENV):
            raise
        console.print(
            f"[red]unexpected error:[/] {escape(type(error).__name__)}: {escape(one_line(error))} "
            f"(rerun with {DEBUG_ENV}=1 for the traceback, and report it; finished records are kept)",
            highlight=False,
            soft_wrap=True,
        )
        return UNEXPECTED_ERROR_STATUS
