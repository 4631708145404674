"""Damaged caches: truncation is refused at once, random damage never hangs or prints a traceback,
and ``repair_cache`` brings a file back to its last good commit.

Run as a script, this file is the fuzz worker: ``python test_cache_damage.py OUT SEED...`` damages
copies of ``OUT/base.h5`` / ``OUT/flagged.h5`` and prints one JSON line per call it makes.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cache_writer import META, make_activations, make_records, make_spec

from activations_cache import (
    CacheError,
    CacheFormatError,
    CachePathError,
    CacheWriter,
    open_cache,
    repair_cache,
    verify_cache,
)

ROOT = Path(__file__).resolve().parents[2]
N_RECORDS = 40
SEEDS = range(20)
CALL_LIMIT_S = 10.0
"""Longest any one call may take on a damaged file (a sound open takes milliseconds)."""


def write_base(path: Path) -> None:
    """40 records committed 4 at a time (commit_interval_s=0): heaps and chunks spread over the file."""
    with CacheWriter.open(path, make_spec(), META, commit_interval_s=0.0) as writer:
        for start in range(0, N_RECORDS, 4):
            writer.submit(make_records(start, start + 4), make_activations(start, start + 4))


def write_flagged(path: Path) -> None:
    """A copy of a cache taken while its writer runs: what a killed writer leaves (marked open for write)."""
    live = path.with_name("live.h5")
    writer = CacheWriter.open(live, make_spec(), META, commit_interval_s=0.0)
    try:
        for start in range(0, N_RECORDS, 4):
            writer.submit(make_records(start, start + 4), make_activations(start, start + 4))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open_cache(live) as reader:
                if reader.n_records == N_RECORDS:
                    break
            time.sleep(0.02)
        shutil.copyfile(live, path)
    finally:
        writer.close()
        live.unlink()


def damage(data: bytes, seed: int) -> bytes:
    """Seed % 3: 0 truncates at a random offset, 1 overwrites 1-4 random runs of bytes, 2 zeroes a
    4 KiB block (what a crashed filesystem can leave)."""
    rng = random.Random(seed)
    if seed % 3 == 0:
        return data[: rng.randrange(len(data))]
    damaged = bytearray(data)
    if seed % 3 == 1:
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(damaged))
            run = len(damaged[at : at + rng.randint(1, 64)])
            damaged[at : at + run] = rng.randbytes(run)
    else:
        at = rng.randrange(len(damaged)) & ~4095
        damaged[at : at + 4096] = bytes(len(damaged[at : at + 4096]))
    return bytes(damaged)


def case_path(out: Path, seed: int) -> Path:
    """Seeds below 10 damage the cleanly closed cache, the others the one of a killed writer."""
    base = out / ("base.h5" if seed < 10 else "flagged.h5")
    path = out / f"case{seed}.h5"
    if not path.exists():
        path.write_bytes(damage(base.read_bytes(), seed))
    return path


def _cli(argv: list[str]) -> tuple[int, str, str]:
    from workbench.cli.main import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(argv)
        except BaseException as error:
            print(f"Traceback: {type(error).__name__}: {error}", file=sys.stderr)
            code = -1
    return code, stdout.getvalue(), stderr.getvalue()


def _open(path: Path) -> tuple[int, str, str]:
    try:
        with open_cache(path) as reader:
            return 0, f"{reader.n_records} records", ""
    except CacheError as error:
        return 2, "", f"error: {error}\n"
    except BaseException as error:
        return -1, "", f"Traceback: {type(error).__name__}: {error}\n"


def run_worker(out: Path, seeds: list[int]) -> None:
    """For each seed: ``open_cache``, ``workbench cache info`` and ``workbench cache verify``, in process."""
    _cli(["cache", "info", str(out / "base.h5")])  # imports the CLI (seconds) before any call is timed
    for seed in seeds:
        path = case_path(out, seed)
        calls = {
            "open_cache": lambda path=path: _open(path),
            "cache info": lambda path=path: _cli(["cache", "info", str(path)]),
            "cache verify": lambda path=path: _cli(["cache", "verify", str(path)]),
        }
        for name, call in calls.items():
            faulthandler.dump_traceback_later(60, exit=True)  # a hang ends the worker, failing the test
            started = time.monotonic()
            code, stdout, stderr = call()
            seconds = time.monotonic() - started
            faulthandler.cancel_dump_traceback_later()
            line = {"seed": seed, "call": name, "code": code, "stdout": stdout, "stderr": stderr, "seconds": seconds}
            print(json.dumps(line), flush=True)


def check_answer(what: str, code: int, stdout: str, stderr: str) -> None:
    """Success, a verify report (exit 1), or exactly one ``error:`` line (exit 2); never a traceback."""
    assert "Traceback" not in stdout + stderr, f"{what}: {stdout}{stderr}"
    if code == 2:
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{what}: {stderr!r}"
        assert stdout == "", f"{what}: {stdout!r}"
    else:
        assert code in ((0, 1) if "verify" in what else (0,)), f"{what}: exit {code}: {stdout}{stderr}"


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("damage")
    write_base(out / "base.h5")
    write_flagged(out / "flagged.h5")
    return out


def _truncated(source: Path, target: Path, fraction: float = 0.5) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def test_random_damage_is_answered_in_bounded_time_without_traceback(caches: Path) -> None:
    """20 seeds x (open_cache, cache info, cache verify) in one worker process, and the real CLI once."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for seed in SEEDS:
        case_path(caches, seed)
    worker = subprocess.Popen(
        [sys.executable, __file__, str(caches), *map(str, SEEDS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    commands = {
        seed: subprocess.Popen(
            [sys.executable, "-m", "workbench", "cache", "info", str(case_path(caches, seed))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for seed in (12,)  # a truncated cache of a killed writer
    }
    try:
        stdout, stderr = worker.communicate(timeout=240)
        answers = {seed: command.communicate(timeout=240) for seed, command in commands.items()}
    finally:
        for process in (worker, *commands.values()):
            process.kill()
    assert worker.returncode == 0, f"the worker died or hung: {stderr[-3000:]}"
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert len(lines) == 3 * len(SEEDS)
    for line in lines:
        what = f"seed {line['seed']} {line['call']}"
        check_answer(what, line["code"], line["stdout"], line["stderr"])
        assert line["seconds"] < CALL_LIMIT_S, f"{what} took {line['seconds']:.1f} s"
    refused = [line for line in lines if line["code"] == 2]
    assert len({line["seed"] for line in refused}) >= 7, "too few seeds damaged the cache: the fuzz tests little"
    for seed, (out, err) in answers.items():
        check_answer(f"workbench cache info (seed {seed})", commands[seed].returncode, out, err)
        assert commands[seed].returncode == 2 and "is truncated" in err and "workbench cache repair" in err, err


def test_truncated_or_zeroed_cache_is_refused_at_once_by_reader_and_writer(caches: Path, tmp_path: Path) -> None:
    """All three used to hang: SWMR opens skip HDF5's end-of-file check and retry failed reads for days."""
    half = _truncated(caches / "base.h5", tmp_path / "half.h5")
    resumed = _truncated(caches / "flagged.h5", tmp_path / "resumed.h5")
    zeroed = tmp_path / "zeroed.h5"
    data = (caches / "base.h5").read_bytes()
    zeroed.write_bytes(data[:100] + bytes(len(data) - 100))  # all but the superblock zeroed
    program = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "from test_cache_writer import META, make_spec\n"
        "from activations_cache import CacheError, CacheWriter, open_cache\n"
        f"attempts = [lambda: open_cache({str(half)!r}), lambda: CacheWriter.open({str(resumed)!r}, make_spec(), META),\n"
        f"            lambda: open_cache({str(zeroed)!r})]\n"
        "for attempt in attempts:\n"
        "    try:\n"
        "        attempt()\n"
        "        print('opened')\n"
        "    except CacheError as error:\n"
        "        print(error)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
        )
    except subprocess.TimeoutExpired:
        pytest.fail("opening a truncated or zeroed cache hung")
    answers = done.stdout.splitlines()
    assert len(answers) == 3, done.stdout + done.stderr
    assert f"{half} is truncated (" in answers[0] and f"workbench cache repair {half}" in answers[0]
    assert f"cache {resumed} is truncated (" in answers[1] and f"workbench cache repair {resumed}" in answers[1]
    assert answers[2].startswith(f"{zeroed} is damaged: its root attributes cannot be read (")
    assert answers[2].endswith(
        f"run `workbench cache repair {zeroed}` (it keeps the damaged file next to it), or rerun the capture"
    )


def _records_and_layer(path: Path, rows: int) -> tuple[list[str], np.ndarray]:
    with h5py.File(path, "r") as file:
        keys = file["records/record_key"].asstr()[:rows].tolist()
        return keys, file["activations/last_prompt/hook_resid_post"][:rows]


def test_repair_keeps_the_readable_prefix_of_a_truncated_cache_and_the_original(caches: Path, tmp_path: Path) -> None:
    path = _truncated(caches / "base.h5", tmp_path / "cache.h5", fraction=0.97)
    damaged = path.read_bytes()
    report = repair_cache(path)
    assert report.repaired and report.committed_records == N_RECORDS
    assert 0 < report.kept_records < N_RECORDS, report.summary()
    assert report.datasets == ("last_prompt/hook_resid_post", "last_prompt/attn.hook_z")
    assert report.backup is not None and report.backup.name.startswith("cache.h5.damaged-")
    assert report.backup.read_bytes() == damaged
    assert any(problem.startswith("truncated (") for problem in report.problems)
    summary = report.summary().splitlines()
    assert len(summary) == 2
    assert summary[0].startswith(f"repaired {path}: kept {report.kept_records} of {N_RECORDS} committed records")
    assert summary[1].startswith(f"damaged original kept as {report.backup}; found: truncated (")
    kept = report.kept_records
    keys, layer = _records_and_layer(path, kept)
    reference_keys, reference_layer = _records_and_layer(caches / "base.h5", kept)
    assert keys == reference_keys == [f"k{i}" for i in range(kept)]
    np.testing.assert_array_equal(layer, reference_layer)
    with open_cache(path) as reader:
        assert reader.n_records == kept
        assert len(reader.metadata["repaired_at"]) > 2
    assert verify_cache(path).ok
    assert sorted(os.listdir(tmp_path)) == sorted(["cache.h5", report.backup.name])  # no lock or staging left
    again = repair_cache(path)
    assert not again.repaired and again.backup is None
    assert again.summary() == (
        f"{path} is sound: {kept} records, datasets last_prompt/hook_resid_post, last_prompt/attn.hook_z; "
        "nothing to repair"
    )
    with CacheWriter.open(path, make_spec(), META) as writer:  # the same run resumes the repaired cache
        assert writer.committed_keys() == {f"k{i}" for i in range(kept)}
        writer.submit(make_records(kept, N_RECORDS), make_activations(kept, N_RECORDS))
    with open_cache(path) as reader:
        assert reader.records["record_key"].tolist() == [f"k{i}" for i in range(N_RECORDS)]


def test_repair_of_a_killed_writers_file_keeps_every_record(caches: Path, tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    shutil.copyfile(caches / "flagged.h5", path)
    report = repair_cache(path)
    assert report.repaired and report.kept_records == N_RECORDS
    assert report.problems == ("left open for write by a writer that did not close it",)
    with h5py.File(path, "r") as file:  # a plain open refuses a file marked open for write
        assert file["committed_records"][()] == N_RECORDS
    assert verify_cache(path).ok


def test_repair_clamps_a_bad_committed_count(caches: Path, tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    shutil.copyfile(caches / "base.h5", path)
    with h5py.File(path, "r+") as file:
        file["committed_records"][()] = -5
    report = repair_cache(path)
    assert report.repaired and report.committed_records == -5 and report.kept_records == N_RECORDS
    assert report.problems == ("committed_records is -5, below 0",)
    with open_cache(path) as reader:
        assert reader.records["record_key"].tolist() == [f"k{i}" for i in range(N_RECORDS)]


def test_repair_cuts_at_the_first_record_whose_text_was_edited(caches: Path, tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    shutil.copyfile(caches / "base.h5", path)
    with h5py.File(path, "r+") as file:
        file["records/answer"][17] = "edited"
    report = repair_cache(path)
    assert report.kept_records == 17
    assert report.problems == ("record 17 (record_key 'k17'): answer_sha256 does not match its text",)


def test_repair_refuses_an_unreadable_file_and_a_running_writer(tmp_path: Path) -> None:
    garbage = tmp_path / "cache.h5"
    garbage.write_bytes(b"\x00" * 4096)
    with pytest.raises(CacheFormatError) as refused:
        repair_cache(garbage)
    message = str(refused.value)
    assert message.startswith(f"cannot repair {garbage}: no HDF5 signature in its 4096 bytes;") and "\n" not in message
    assert sorted(os.listdir(tmp_path)) == ["cache.h5"] and garbage.read_bytes() == b"\x00" * 4096
    live = tmp_path / "live.h5"
    with CacheWriter.open(live, make_spec(), META):
        with pytest.raises(
            CachePathError, match=rf"cache .*live.h5 is being written by another process \(pid {os.getpid()} "
        ):
            repair_cache(live)


def test_cli_repair_answers_in_one_or_two_lines(
    caches: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from workbench.cli.main import main

    run = tmp_path / "run"
    run.mkdir()
    _truncated(caches / "base.h5", run / "cache.h5", fraction=0.97)
    assert main(["cache", "repair", str(run)]) == 0
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"repaired {run / 'cache.h5'}: kept ") and printed.err == ""
    assert main(["cache", "repair", str(run / "cache.h5")]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("; nothing to repair")
    (run / "cache.h5").write_bytes(b"not a cache")
    assert main(["cache", "repair", str(run)]) == 2
    printed = capsys.readouterr()
    assert printed.out == "" and len(printed.err.splitlines()) == 1
    assert printed.err.startswith(f"error: cannot repair {run / 'cache.h5'}: no HDF5 signature")


def _worker_main(argv: list[str]) -> None:
    run_worker(Path(argv[0]), [int(seed) for seed in argv[1:]])


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
