"""The report of a synthetic run, opened from disk in headless Chromium.

Checks that every figure container was drawn by plotly (it adds ``js-plotly-plot`` to the div
and a ``main-svg`` inside it), that the page logged nothing to the console (no errors, no
uncaught exceptions), and saves a screenshot under ``test-artifacts/`` for a look by eye.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from reports import build_report

CHROMIUM = shutil.which("chromium")
REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
VIRTUAL_TIME_MS = 15_000
BROWSER_TIMEOUT_S = 120
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DRAWN_FIGURES = (
    "convergence",
    "paired-tests",
    "bbq-categories",
    "flips",
    "uncertainty",
    "reliability",
    "layer-profile-0",
    "morality-0",
    "interactions",
    "concept",
    "steering",
    "heads",
    "selected-heads",
    "bias-levels",
    "answers",
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not found on PATH: install Debian's package (apt-get install -y chromium)",
)


def synthetic_run_module() -> ModuleType:
    """tests/unit/test_reports_run_folder.py, which writes the synthetic run folder."""
    path = REPO_ROOT / "tests" / "unit" / "test_reports_run_folder.py"
    spec = importlib.util.spec_from_file_location("reports_synthetic_run", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = synthetic_run_module().write_synthetic_run(tmp_path_factory.mktemp("browser") / "run")
    return build_report(run_dir)


def run_chromium(page: Path, profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Open ``page`` (file://) in headless Chromium with ``arguments``; stderr holds its log."""
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            f"--virtual-time-budget={VIRTUAL_TIME_MS}",
            *arguments,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT_S,
        check=True,
    )


def console_messages(log: str) -> list[str]:
    """Lines of Chromium's stderr log that the page wrote to its console.

    Chromium logs console.error and uncaught exceptions as ``CONSOLE`` lines (at INFO level in
    current builds, so the level cannot be trusted); a healthy report writes none at all.
    """
    return [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def test_every_figure_is_rendered_without_console_errors(report_page: Path, tmp_path: Path) -> None:
    browser = run_chromium(report_page, tmp_path / "profile", "--dump-dom")
    dom = browser.stdout
    starts = [
        (match.start(), match.group(1), match.group(2))
        for match in re.finditer(r'<div id="figure-([^"]+)" class="([^"]*)"', dom)
    ]
    assert [anchor for _, anchor, _ in starts] == list(DRAWN_FIGURES)
    ends = [start for start, _, _ in starts[1:]] + [len(dom)]
    for (start, anchor, classes), end in zip(starts, ends):
        assert "js-plotly-plot" in classes.split(), f"figure {anchor} was not drawn by plotly"
        assert 'class="main-svg"' in dom[start:end], f"figure {anchor} has no plotly svg"
    assert console_messages(browser.stderr) == []
    assert "<script>alert(1)</script>" not in dom


def test_screenshot_of_the_report(report_page: Path, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report_browser.png"
    screenshot.unlink(missing_ok=True)
    browser = run_chromium(report_page, tmp_path / "profile", "--window-size=1400,9000", f"--screenshot={screenshot}")
    assert console_messages(browser.stderr) == []
    data = screenshot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1400, 9000)
    # a blank page compresses to a few kB; drawn figures make it far larger
    assert len(data) > 100_000
