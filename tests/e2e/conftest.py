"""Fixtures of the end-to-end tests that run a workflow (``workbench/configs/*.toml``) on the packaged
SmolLM2-135M-Instruct and the benchmark data folder."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from workbench.models import EMBEDDED_MODELS

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = REPO_ROOT.parent / "shared" / "data"
WORKFLOW_MODEL = "smollm2-135m-instruct"


@pytest.fixture
def workflow_model() -> str:
    """The packaged model's name; skips the test when the benchmark data folder or the model is absent."""
    if not DATA.is_dir():
        pytest.skip(f"benchmark data folder {DATA} is absent")
    if not EMBEDDED_MODELS[WORKFLOW_MODEL].is_installed():
        pytest.skip(f"embedded model {WORKFLOW_MODEL} is not installed")
    return WORKFLOW_MODEL


@pytest.fixture
def workflow_run(workflow_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's run folder (not yet written), with the repository root as the working directory.

    The workflow configurations' paths are relative to the repository root; the terminal is 220
    columns wide so that the tables the commands print are not wrapped.
    """
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("COLUMNS", "220")
    return tmp_path / "run"


@pytest.fixture
def read_rows() -> Callable[[Path], list[dict[str, str]]]:
    """A reader of a CSV table the workflow wrote: its rows, keyed by the header (the csv module, not the
    workbench's own readers, so that the test checks what is in the file)."""

    def read(path: Path) -> list[dict[str, str]]:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    return read
