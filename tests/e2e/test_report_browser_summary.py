"""The report's summary, table of contents and every figure, as headless Chromium draws them.

A copy of the page gets a small script that, once plotly has drawn, writes a census of the page into
the DOM (per figure: traces in its data, traces drawn, legend entries, subplot titles, y tick labels;
for the page: the table of contents' CSS position, the folded details). ``--dump-dom`` returns it.
Checks: the expected number of traces per figure (the Python figure's), human condition labels in
the legends and panel titles, the summary before the figures, a sticky table of contents, the
configuration and file status folded, and no console message at all.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from reports import build_report
from reports.run_results import RunResults
from reports.sections import report_figures

CHROMIUM = shutil.which("chromium")
REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
VIRTUAL_TIME_MS = 15_000
BROWSER_TIMEOUT_S = 120
LABEL_A = "intrinsic instruction · no CoT · no feedback"
LABEL_B = "intrinsic instruction · CoT · no feedback"

CENSUS_SCRIPT = """
<script>
window.addEventListener('load', function () {
  setTimeout(function () {
    var census = {figures: {}};
    var texts = function (root, selector) {
      return Array.from(root.querySelectorAll(selector)).map(function (e) { return e.textContent; });
    };
    document.querySelectorAll('.plotly-graph-div').forEach(function (gd) {
      census.figures[gd.id] = {
        data: gd.data ? gd.data.length : -1,
        drawn: gd.querySelectorAll('.scatterlayer .trace, .barlayer .trace, .heatmaplayer .hm, .sankey').length,
        legend: texts(gd, '.legendtext'),
        annotations: texts(gd, '.annotation-text'),
        yticks: texts(gd, '.ytick text'),
      };
    });
    var nav = document.getElementById('contents');
    census.toc = {position: getComputedStyle(nav).position, top: getComputedStyle(nav).top,
                  links: texts(nav, 'a')};
    census.closed_details = document.querySelectorAll('details:not([open])').length;
    census.open_details = document.querySelectorAll('details[open]').length;
    var pre = document.createElement('pre');
    pre.id = 'census';
    pre.textContent = JSON.stringify(census);
    document.body.appendChild(pre);
  }, 1500);
});
</script>
"""

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not found on PATH: install Debian's package (apt-get install -y chromium)",
)


def _module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    """Lines of Chromium's stderr log that the page wrote to its console (a healthy report writes none)."""
    return [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def census_of(page: Path, tmp_path: Path) -> tuple[dict[str, Any], str]:
    """The census the injected script writes, and the page's console messages (joined)."""
    probe = tmp_path / "census.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", CENSUS_SCRIPT + "</body>"), encoding="utf-8")
    browser = run_chromium(probe, tmp_path / "profile", "--window-size=1400,1000", "--dump-dom")
    found = re.search(r'<pre id="census">(.*?)</pre>', browser.stdout, flags=re.DOTALL)
    assert found is not None, "the census script did not run"
    return json.loads(html.unescape(found.group(1))), "\n".join(console_messages(browser.stderr))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    synthetic = _module("reports_synthetic_run", REPO_ROOT / "tests" / "unit" / "test_reports_run_folder.py")
    run_dir: Path = synthetic.write_synthetic_run(tmp_path_factory.mktemp("browser-full") / "run")
    build_report(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def census(full_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The census of the full synthetic run's page (one browser run for the tests below)."""
    found, console = census_of(full_run / "report" / "index.html", tmp_path_factory.mktemp("census"))
    assert console == ""
    return found


def test_every_figure_draws_its_traces_with_human_labels(full_run: Path, census: dict[str, Any]) -> None:
    drawn = [entry for entry in report_figures(RunResults.load(full_run)) if entry.figure is not None]
    assert sorted(census["figures"]) == sorted(f"figure-{entry.anchor}" for entry in drawn)
    for entry in drawn:
        assert entry.figure is not None
        shown = census["figures"][f"figure-{entry.anchor}"]
        assert shown["data"] == len(entry.figure.data), entry.anchor
        visible = sum(1 for trace in entry.figure.data if trace.visible is not False)
        assert shown["drawn"] == visible, entry.anchor
    legends = {anchor: census["figures"][f"figure-{anchor}"]["legend"] for anchor in ("convergence", "bbq-categories")}
    for anchor, legend in legends.items():
        assert LABEL_A in legend and LABEL_B in legend, anchor
        assert not any("instr=" in text for text in legend), anchor
    assert "convergence round" in census["figures"]["figure-convergence"]["legend"]
    reliability = census["figures"]["figure-reliability"]["annotations"]
    # two-line panel titles (textContent joins the lines)
    assert reliability == ["intrinsic instructionno CoT · no feedback", "intrinsic instructionCoT · no feedback"]
    assert census["figures"]["figure-paired-tests"]["yticks"][0].startswith("CoT − no CoT")
    assert census["figures"]["figure-bbq-categories"]["yticks"] == ["all", "Age", "Age (names)"]


def test_table_of_contents_is_sticky_and_details_are_folded(census: dict[str, Any]) -> None:
    assert census["toc"]["position"] == "sticky" and census["toc"]["top"] == "0px"
    links = census["toc"]["links"]
    assert links[:2] == ["Summary of findings", "Change over rounds"]
    assert "Behaviour per round and convergence" in links and links[-1] == "Run details"
    assert (census["closed_details"], census["open_details"]) == (3, 0)


def test_summary_page_in_the_browser(tmp_path: Path) -> None:
    summary = _module("report_summary_run", REPO_ROOT / "tests" / "unit" / "test_report_summary.py")
    run_dir: Path = summary.write_summary_run(tmp_path / "run")
    page = build_report(run_dir)
    text = page.read_text(encoding="utf-8")
    main = text[text.index("<main>") :]
    assert main.index('id="summary"') < main.index('class="figure"')
    for part in ("summary-rounds", "summary-reference", "summary-hidden", "summary-categories"):
        assert f'id="{part}"' in main
    assert "+0.75 [0.25, 1], p = 0.25" in main
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report_summary.png"
    screenshot.unlink(missing_ok=True)
    shot = run_chromium(page, tmp_path / "profile", "--window-size=1400,2400", f"--screenshot={screenshot}")
    assert console_messages(shot.stderr) == []
    assert screenshot.stat().st_size > 100_000  # the summary's tables and the first figures, not a blank page
