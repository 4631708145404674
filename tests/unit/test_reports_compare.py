"""``workbench compare``: one report over several run folders, on real runs of tiny random models.

The two runs are made by the real stages (``workbench run``, ``results``, ``probe``) on tiny random
Llamas of 2 and 3 layers, so their morality tables have different layer counts and the relative depth
axis is tested on what the probe stage writes. Expected numbers are read back from the runs' CSV files
with the csv module, never from the comparison's own code. The page is opened in headless Chromium
(no console message, every figure drawn, the expected traces) and a screenshot is left in
``test-artifacts/compare_browser.png`` for a look by eye.
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from reports.compare import ComparisonError, build_comparison, load_comparison
from reports.compare_sections import comparison_figures
from reports.compare_tables import between_runs, config_differences
from reports.figures.comparison import relative_depth
from workbench.bias.levels import write_bias_levels
from workbench.cli.compare import add_arguments, run_command
from workbench.cli.errors import USER_ERROR_STATUS, exit_status
from workbench.config import RunConfig
from workbench.models import tiny_model
from workbench.pipeline import probe_stage, results_stage, run_stage
from workbench.run_folder import RunFolderError
from workbench.run_tables import BiasLevel

CONFIG = """
name = "{name}"
output_dir = "{output_dir}"
[model]
spec = "{model}"
device = "cpu"
[task]
name = "bbq-sample"
categories = ["Age", "Religion"]
limit_per_category = {limit}
[protocol]
instructions = ["none", "intrinsic"]
rounds = 2
answer_tokens = 4
[capture]
sites = ["blocks.*.hook_resid_post"]
batch_size = 8
[results]
n_boot = 50
n_permutations = 100
[probe]
n_folds = 2
n_repeats = 1
max_concept_examples = 16
"""
CONDITIONS = ("instr=none+cot=off+fb=off", "instr=intrinsic+cot=off+fb=off")
HOSTILE = "<img src=x onerror=alert(1)>"
CHROMIUM = shutil.which("chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

CENSUS_SCRIPT = """
<script>
window.addEventListener('load', function () {
  setTimeout(function () {
    var census = {};
    document.querySelectorAll('.plotly-graph-div').forEach(function (gd) {
      census[gd.id] = {
        data: gd.data ? gd.data.length : -1,
        drawn: gd.querySelectorAll('.scatterlayer .trace, .barlayer .trace').length,
        legend: Array.from(gd.querySelectorAll('.legendtext')).map(function (e) { return e.textContent; }),
        svg: gd.querySelectorAll('.main-svg').length,
      };
    });
    var pre = document.createElement('pre');
    pre.id = 'census';
    pre.textContent = JSON.stringify(census);
    document.body.appendChild(pre);
  }, 1500);
});
</script>
"""


def make_run(root: Path, n_layers: int, limit: int = 4) -> Path:
    """A run folder written by the real stages on a tiny random Llama of ``n_layers`` layers."""
    model_dir = root / f"model-{n_layers}"
    model = tiny_model("llama", n_layers=n_layers)
    model.model.save_pretrained(model_dir)
    model.tokenizer.save_pretrained(model_dir)
    config_path = root / f"layers-{n_layers}.toml"
    name = f"tiny-{n_layers}-layers"
    config_path.write_text(CONFIG.format(name=name, output_dir=root / "runs", model=model_dir, limit=limit))
    run_dir = run_stage(RunConfig.load(config_path))
    results_stage(run_dir)
    probe_stage(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two runs of the same task and conditions: a 2-layer and a 3-layer model."""
    root = tmp_path_factory.mktemp("compare")
    return make_run(root, 2), make_run(root, 3)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def copy_run(run: Path, target: Path, *, cache: bool = True) -> Path:
    """A copy of the run folder ``run`` at ``target`` (without its cache when ``cache`` is false)."""
    shutil.copytree(run, target, ignore=None if cache else shutil.ignore_patterns("cache.h5"))
    return target


def edit_config(run: Path, old: str, new: str) -> None:
    path = run / "config.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_relative_depth_puts_first_and_last_blocks_of_any_model_at_0_and_1() -> None:
    assert [relative_depth(layer, 2) for layer in (0, 1)] == [0.0, 1.0]
    assert [relative_depth(layer, 3) for layer in (0, 1, 2)] == [0.0, 0.5, 1.0]
    assert relative_depth(15, 31) == 0.5
    assert relative_depth(30, 30) == 1.0  # a final-norm site, after the last block
    assert relative_depth(0, 1) == 1.0
    for layer, n_layers in ((4, 3), (-1, 3), (0, 0)):
        with pytest.raises(ValueError):
            relative_depth(layer, n_layers)


def test_depth_figure_lines_up_models_of_2_and_3_layers(runs: tuple[Path, Path]) -> None:
    comparison = load_comparison(list(runs))
    assert [run.n_layers for run in comparison.runs] == [2, 3]  # read from each run's cache
    assert comparison.conditions == CONDITIONS
    figures = {entry.anchor: entry for entry in comparison_figures(comparison)}
    figure = figures["depth-morality-0"].figure
    assert figure is not None
    lines = [trace for trace in figure.data if trace.mode == "lines+markers"]
    # per condition panel: each run's last round (solid), then its first round (dotted)
    assert [(trace.name, trace.line.dash) for trace in lines[:4]] == [
        ("tiny-2-layers", "solid"),
        ("tiny-2-layers, round 0", "dot"),
        ("tiny-3-layers", "solid"),
        ("tiny-3-layers, round 0", "dot"),
    ]
    assert list(lines[0].x) == [0.0, 1.0] and list(lines[2].x) == [0.0, 0.5, 1.0]
    for trace, run in ((lines[0], runs[0]), (lines[2], runs[1])):
        expected = [
            float(row["value"])
            for row in read_csv(run / "probes" / "morality.csv")
            if row["condition"] == CONDITIONS[0] and row["round"] == "1" and row["measure"] == "probe_probability"
        ]
        assert list(trace.y) == pytest.approx(expected, rel=1e-6)
    accuracy = figures["depth-probe-accuracy"].figure
    assert accuracy is not None
    probe_lines = [trace for trace in accuracy.data if trace.line.dash == "solid"]
    assert [list(trace.x) for trace in probe_lines] == [[0.0, 1.0], [0.0, 0.5, 1.0]]


def test_page_tables_match_the_runs_csv_files(runs: tuple[Path, Path], tmp_path: Path) -> None:
    page = build_comparison(list(runs), tmp_path / "out").read_text(encoding="utf-8")
    assert re.findall(r'<section class="figure" id="([^"]+)">', page) == [
        "behaviour",
        "depth-morality-0",
        "depth-probe-accuracy",
    ]
    assert 'Bias levels per run and checkpoint: <span class="omitted">omitted, tiny-2-layers: attribution/' in page
    differences = page[page.index('id="differences"') : page.index('id="metrics"')]
    assert re.findall(r'<td class="key">([^<]+)</td>', differences) == ["model.spec"]
    metrics = page[page.index('id="metrics"') : page.index('id="between-runs"')]
    for run in runs:
        for row in read_csv(run / "results" / "behaviour.csv"):
            if row["metric"] == "accuracy":
                value = float(row["value"])
                assert f"round {row['round']}: {value:.3g} [" in metrics.replace("−", "-")
    between = page[page.index('id="between-runs"') : page.index('id="figures"')]
    answers = [read_csv(run / "results" / "items.csv") for run in runs]
    for condition in CONDITIONS:
        scored = [
            {
                row["item_id"]: row["correct"] == "1"
                for row in rows
                if row["condition"] == condition and row["round"] == "1"
            }
            for rows in answers
        ]
        shared = sorted(set(scored[0]) & set(scored[1]))
        difference = np.mean([float(scored[1][item]) - float(scored[0][item]) for item in shared])
        assert f"{difference:+.3g}".replace("-", "−") + " [" in between
        assert f"n = {len(shared)} shared items" in between


def test_between_runs_is_paired_over_the_items_both_answered(runs: tuple[Path, Path]) -> None:
    comparison = load_comparison(list(runs))
    reference, other = (run.results.items or () for run in comparison.runs)
    found = between_runs(reference, other, CONDITIONS[1], level=0.95, n_boot=200, seed=0)
    assert found is not None and found.round == 1
    first = {item.item_id: item.correct for item in reference if item.condition == CONDITIONS[1] and item.round == 1}
    dropped = next(iter(first))
    fewer = tuple(item for item in other if item.item_id != dropped)
    smaller = between_runs(reference, fewer, CONDITIONS[1], level=0.95, n_boot=200, seed=0)
    assert smaller is not None and smaller.change.n == found.change.n - 1


def test_hostile_run_and_checkpoint_names_are_escaped(runs: tuple[Path, Path], tmp_path: Path) -> None:
    hostile = copy_run(runs[1], tmp_path / f"run {HOSTILE}")
    write_bias_levels(hostile, [BiasLevel(f"<script>alert(2)</script>{HOSTILE}", "crows_pairs", 0.6, 0.5, 0.7, 10)])
    write_bias_levels(
        copy_run(runs[0], tmp_path / "base"), [BiasLevel("pretrained", "crows_pairs", 0.55, 0.45, 0.65, 10)]
    )
    page = build_comparison([tmp_path / "base", hostile], tmp_path / "out").read_text(encoding="utf-8")
    assert HOSTILE not in page and "<script>alert(2)" not in page
    assert "run &lt;img src=x onerror=alert(1)&gt;" in page  # the page's tables and headings
    assert "run &lt;img src=x onerror=alert(1)&gt; \\u00b7 &lt;script&gt;alert(2)&lt;\\u002fscript&gt;" in page  # a bar
    assert 'id="bias-levels"' in page


def test_depth_unknown_without_cache_is_said_and_left_out_of_depth_figures(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    without = copy_run(runs[1], tmp_path / "no-cache", cache=False)
    comparison = load_comparison([runs[0], without])
    assert comparison.runs[1].n_layers is None
    assert any(note.startswith("The model depth of no-cache is unknown") for note in comparison.notes)
    figures = {entry.anchor: entry for entry in comparison_figures(comparison)}
    entry = figures["depth-morality-0"]
    assert entry.figure is not None and entry.note is not None and "its model&#x27;s depth is unknown" in entry.note
    assert {trace.name for trace in entry.figure.data if trace.mode == "lines+markers"} == {
        "tiny-2-layers",
        "tiny-2-layers, round 0",
    }


def test_sample_keys_may_differ_and_are_said(runs: tuple[Path, Path], tmp_path: Path) -> None:
    smaller = copy_run(runs[1], tmp_path / "smaller")
    edit_config(smaller, "limit_per_category = 4", "limit_per_category = 3")
    comparison = load_comparison([runs[0], smaller])
    assert any(
        note.startswith("[task] limit_per_category differs (tiny-2-layers: 4; smaller: 3)") for note in comparison.notes
    )
    keys = [difference.key for difference in config_differences([run.config.to_dict() for run in comparison.runs])]
    assert keys == ["model.spec", "task.limit_per_category"]


def test_config_differences_list_only_differing_keys_and_absent_ones() -> None:
    tables = [
        {"name": "a", "seed": 0, "model": {"spec": "x", "device": "cpu"}, "task": {"name": "bbq"}},
        {"name": "b", "seed": 0, "model": {"spec": "y", "device": "cpu"}, "task": {"name": "bbq", "seed": 3}},
    ]
    found = [(difference.key, difference.values) for difference in config_differences(tables)]
    assert found == [("model.spec", ("x", "y")), ("task.seed", (None, "3"))]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'categories = [\n    "Age",\n    "Religion",\n]',
            'categories = [\n    "Age",\n]',
            "[task] categories differs (tiny-2-layers: [Age, Religion]; other: [Age])",
        ),
        (
            'name = "bbq-sample"',
            'name = "bbq"\npath = "x"',
            "[task] name differs (tiny-2-layers: bbq-sample; other: bbq)",
        ),
        (
            'unparsed = "excluded"',
            'unparsed = "wrong"',
            "[results] unparsed differs (tiny-2-layers: excluded; other: wrong)",
        ),
        ("level = 0.95", "level = 0.9", "[results] level differs (tiny-2-layers: 0.95; other: 0.9)"),
    ],
)
def test_incomparable_runs_are_refused_in_one_line_naming_runs_and_key(
    runs: tuple[Path, Path], tmp_path: Path, old: str, new: str, message: str
) -> None:
    other = copy_run(runs[1], tmp_path / "other")
    edit_config(other, old, new)
    with pytest.raises(ComparisonError) as error:
        load_comparison([runs[0], other])
    text = str(error.value)
    assert "\n" not in text and text.startswith("cannot compare tiny-2-layers, other: ")
    assert message in text


def test_runs_without_a_shared_condition_are_refused(runs: tuple[Path, Path], tmp_path: Path) -> None:
    other = copy_run(runs[1], tmp_path / "other")
    behaviour = other / "results" / "behaviour.csv"
    text = behaviour.read_text(encoding="utf-8")
    behaviour.write_text(text.replace("instr=none+", "instr=ladder-1+").replace("instr=intrinsic+", "instr=negated+"))
    with pytest.raises(ComparisonError, match=r"^cannot compare tiny-2-layers, other: no condition is in every run "):
        load_comparison([runs[0], other])


def test_too_few_twice_and_missing_stages_are_one_line_errors(runs: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ComparisonError, match="at least 2 run folders, got 1"):
        load_comparison([runs[0]])
    with pytest.raises(ComparisonError, match="are the same run folder"):
        load_comparison([runs[0], runs[0] / "cache.h5"])
    no_results = copy_run(runs[1], tmp_path / "no-results")
    shutil.rmtree(no_results / "results")
    with pytest.raises(RunFolderError, match=r"results/behaviour.csv not found \(run `workbench results` on this run"):
        load_comparison([runs[0], no_results])
    no_config = copy_run(runs[1], tmp_path / "no-config")
    (no_config / "config.toml").unlink()
    with pytest.raises(RunFolderError, match="config.toml not found: compare reads each run's task"):
        load_comparison([runs[0], no_config])


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="workbench compare")
    add_arguments(parser)
    return parser.parse_args(argv)


def test_command_writes_the_page_and_refuses_in_one_line(runs: tuple[Path, Path], tmp_path: Path) -> None:
    args = parsed(str(runs[0]), str(runs[1]), "-o", str(tmp_path / "out"))
    assert run_command(args) == 0
    assert (tmp_path / "out" / "index.html").is_file()
    default = parsed(str(runs[0]), str(runs[1]))
    assert run_command(default) == 0
    assert (runs[0].parent / "compare-tiny-2-layers-vs-tiny-3-layers" / "index.html").is_file()
    other = copy_run(runs[1], tmp_path / "other")
    edit_config(other, 'unparsed = "excluded"', 'unparsed = "wrong"')
    console = Console(file=io.StringIO(), width=400)
    assert exit_status(run_command, parsed(str(runs[0]), str(other)), console) == USER_ERROR_STATUS
    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert printed.count("\n") == 1 and printed.startswith("error: cannot compare tiny-2-layers, other: [results]")


def run_chromium(page: Path, profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
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
            "--virtual-time-budget=15000",
            *arguments,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not found on PATH: apt-get install -y chromium")
def test_page_in_headless_chromium(runs: tuple[Path, Path], tmp_path: Path) -> None:
    write_bias_levels(
        copy_run(runs[0], tmp_path / "base"), [BiasLevel("pretrained", "crows_pairs", 0.55, 0.45, 0.65, 10)]
    )
    write_bias_levels(copy_run(runs[1], tmp_path / "deeper"), [BiasLevel("debiased", "crows_pairs", 0.5, 0.4, 0.6, 10)])
    page = build_comparison([tmp_path / "base", tmp_path / "deeper"], tmp_path / "out")
    probe = tmp_path / "census.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", CENSUS_SCRIPT + "</body>"), encoding="utf-8")
    browser = run_chromium(probe, tmp_path / "profile", "--window-size=1400,1000", "--dump-dom")
    assert [line for line in browser.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line] == []
    found = re.search(r'<pre id="census">(.*?)</pre>', browser.stdout, flags=re.DOTALL)
    assert found is not None, "the census script did not run"
    census = json.loads(html.unescape(found.group(1)))
    comparison = load_comparison([tmp_path / "base", tmp_path / "deeper"])
    expected = {f"figure-{entry.anchor}": entry.figure for entry in comparison_figures(comparison)}
    assert (
        set(census)
        == set(expected)
        == {
            "figure-behaviour",
            "figure-bias-levels",
            "figure-depth-morality-0",
            "figure-depth-probe-accuracy",
        }
    )
    for div, figure in expected.items():
        assert figure is not None and census[div]["svg"] > 0, div
        assert census[div]["data"] == census[div]["drawn"] == len(figure.data), div
    assert census["figure-behaviour"]["legend"] == ["base", "deeper"]
    assert census["figure-bias-levels"]["legend"] == ["base · pretrained", "deeper · debiased"]
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "compare_browser.png"
    screenshot.unlink(missing_ok=True)
    run_chromium(page, tmp_path / "profile", "--window-size=1400,5200", f"--screenshot={screenshot}")
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and screenshot.stat().st_size > 100_000


def test_runs_sharing_a_folder_name_are_labelled_by_their_path(runs: tuple[Path, Path], tmp_path: Path) -> None:
    first = copy_run(runs[0], tmp_path / "a" / "run")
    second = copy_run(runs[1], tmp_path / "b" / "run")
    comparison = load_comparison([first, second])
    assert [run.label for run in comparison.runs] == [str(first), str(second)]
