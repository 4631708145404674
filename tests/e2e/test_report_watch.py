"""``workbench report --watch``: the live view of a real run that writes its cache in another process.

The run is ``workbench run`` on a tiny random model saved to disk, started as a separate Python
process. Two settings of that process are changed so that a run of a few seconds commits several
times: the cache writer commits every 0.2 s (``commit_interval_s``; the default, 10 s, exceeds the
whole run) and pauses 0.4 s after each batch it accepts. In the crash test the process kills itself
with SIGKILL after its third batch, leaving the cache marked as being written.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reports import build_report
from reports.build import LiveBuild, watch_report
from workbench.models import tiny_model
from workbench.pipeline import results_stage
from workbench.run_folder import RunFolder, RunFolderError

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium")
RUN_TIMEOUT_S = 900
RECORDS = 40  # 10 items (2 per category) x 2 conditions x 2 rounds

CONFIG = """
name = "{name}"
seed = 0
output_dir = "{output_dir}"
[model]
spec = "{model}"
[task]
name = "bbq-sample"
limit_per_category = 2
[protocol]
instructions = ["none", "intrinsic"]
rounds = 2
answer_tokens = 4
[capture]
sites = ["blocks.*.hook_resid_post"]
batch_size = 2
[results]
n_boot = 20
"""

# argv: config, commit interval (s), pause after each batch (s), batch after which to SIGKILL itself (0: never)
RUN_IN_ANOTHER_PROCESS = """
import os, signal, sys, time
from activations_cache import writer

config, commit_interval_s, pause_s, kill_after = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
open_writer, submit = writer.CacheWriter.open.__func__, writer.CacheWriter.submit
batches = 0

def open_committing_often(cls, *args, **kwargs):
    return open_writer(cls, *args, **{**kwargs, "commit_interval_s": commit_interval_s})

def submit_and_pause(self, *args, **kwargs):
    global batches
    submit(self, *args, **kwargs)
    batches += 1
    time.sleep(pause_s)
    if batches == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)

writer.CacheWriter.open = classmethod(open_committing_often)
writer.CacheWriter.submit = submit_and_pause
from workbench.cli.main import main
sys.exit(main(["run", config, "--stages", "run"]))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_model("llama", n_layers=2)
    model.model.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    return path


def start_run(root: Path, model_dir: Path, name: str, kill_after: int = 0) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``workbench run`` in another process; return it once its cache exists, with the run folder.

    A thread waits for the process, so that it is reaped the moment it dies (a dead child that is not
    waited for stays a zombie, whose pid still answers as a live process).
    """
    config = root / f"{name}.toml"
    config.write_text(CONFIG.format(name=name, output_dir=root / "runs", model=model_dir))
    log = root / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", RUN_IN_ANOTHER_PROCESS, str(config), "0.2", "0.4", str(kill_after)],
            cwd=REPO_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    threading.Thread(target=process.wait, daemon=True).start()
    run_dir = root / "runs" / name
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not RunFolder(run_dir).cache.is_file():
        if process.poll() is not None:
            pytest.fail(f"the run exited with {process.returncode} before writing its cache: {log.read_text()[-2000:]}")
        assert time.monotonic() < deadline, "the run wrote no cache in time"
        time.sleep(0.1)
    return process, run_dir


def finish(process: subprocess.Popen[bytes]) -> int:
    try:
        return process.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def figure_sections(page: str) -> list[str]:
    return re.findall(r'<section class="figure".*?</section>', page, flags=re.DOTALL)


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> tuple[Path, list[tuple[LiveBuild, str]]]:
    """A run watched while it writes: its folder and every page the watcher wrote, with its text."""
    root = tmp_path_factory.mktemp("watch")
    process, run_dir = start_run(root, model_dir, "live")
    builds: list[tuple[LiveBuild, str]] = []
    try:
        watch_report(run_dir, interval_s=0.3, on_build=lambda build: builds.append((build, build.page.read_text())))
    finally:
        returncode = finish(process)
    assert returncode == 0
    return run_dir, builds


def test_pages_follow_the_records_as_they_commit(watched: tuple[Path, list[tuple[LiveBuild, str]]]) -> None:
    run_dir, builds = watched
    counts = [build.records for build, _ in builds]
    live = [build.records for build, _ in builds if build.writing]
    assert live == sorted(set(live)), "every page built while the run writes shows more records than the one before"
    # the last page (the run closed its cache) may show the count of the last live page, without the refresh
    assert counts[:-1] == live and counts[-1] >= live[-1]
    assert counts[-1] == RECORDS
    assert [build.writing for build, _ in builds] == [True] * (len(builds) - 1) + [False]
    assert any(0 < build.records < RECORDS for build, _ in builds), "no page was built while the run wrote"
    for build, page in builds:
        assert build.page == run_dir / "report" / "index.html"
        if build.writing:
            assert f"shows the <b>{build.records} records</b> committed so far; the run is still writing" in page
            assert '<meta http-equiv="refresh" content="1">' in page
        else:
            assert f"shows all <b>{RECORDS} records</b>: the run has finished writing its cache" in page
            assert 'http-equiv="refresh"' not in page
        drawn = '<section class="figure" id="convergence">' in page
        assert drawn == (build.records > 0)  # a page of the first look, before any commit, has no figure yet
    assert not (run_dir / "results").exists(), "the live view computes its tables outside the run folder"


def test_last_page_draws_what_workbench_results_then_report_draw(
    watched: tuple[Path, list[tuple[LiveBuild, str]]], tmp_path: Path
) -> None:
    run_dir, builds = watched
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("report"))
    results_stage(copy)
    report = build_report(copy).read_text(encoding="utf-8")
    assert figure_sections(builds[-1][1]) == figure_sections(report)


def test_cli_watch_of_a_finished_run_builds_once_and_returns(
    watched: tuple[Path, list[tuple[LiveBuild, str]]], tmp_path: Path
) -> None:
    run_dir, _ = watched
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "workbench",
            "report",
            str(run_dir),
            "--watch",
            "--interval",
            "0.2",
            "-o",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"report: {tmp_path / 'index.html'} ({RECORDS} records; the run has finished)"
    assert f"shows all <b>{RECORDS} records</b>" in (tmp_path / "index.html").read_text(encoding="utf-8")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not found on PATH: apt-get install -y chromium")
def test_screenshot_of_a_live_page(watched: tuple[Path, list[tuple[LiveBuild, str]]], tmp_path: Path) -> None:
    assert CHROMIUM is not None
    _, builds = watched
    live = next(page for build, page in builds if build.writing and build.records > 0)
    page = tmp_path / "live.html"
    page.write_text(live.replace('<meta http-equiv="refresh" content="1">', ""), encoding="utf-8")  # hold still
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report_watch.png"
    screenshot.unlink(missing_ok=True)
    browser = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=15000",
            "--window-size=1400,1600",
            f"--screenshot={screenshot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert [line for line in browser.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line] == []
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_crashed_writer_is_one_line_while_watching_and_when_watching_starts(tmp_path: Path, model_dir: Path) -> None:
    process, run_dir = start_run(tmp_path, model_dir, "crashed", kill_after=3)
    builds: list[LiveBuild] = []
    try:
        with pytest.raises(RunFolderError) as crashed:
            watch_report(run_dir, interval_s=0.3, on_build=builds.append)
    finally:
        returncode = finish(process)
    assert returncode == -9  # SIGKILL
    cache = run_dir / "cache.h5"
    message = str(crashed.value)
    pattern = (
        rf"{re.escape(str(cache))} is marked as being written but its writer \(pid {process.pid} on host [^,]+, "
        r"since [^)]+\) is no longer running: the run crashed or was killed with (\d+) records committed; "
        r"rerun the same `workbench run CONFIG` to resume it \(`workbench cache repair .+` if it will not open\), "
        r"then watch again"
    )
    match = re.fullmatch(pattern, message)
    assert match is not None, message
    assert 0 < int(match.group(1)) < RECORDS
    assert all(build.writing for build in builds)

    done = subprocess.run(
        [sys.executable, "-m", "workbench", "report", str(run_dir), "--watch", "--interval", "0.2"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={**os.environ, "COLUMNS": "1000"},
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "is no longer running: the run crashed" in lines[0]
