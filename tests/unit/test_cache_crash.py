"""Resume after SIGKILL at random moments: the final file equals an uninterrupted run's.

Run as a script, this file is the child writer: ``python test_cache_crash.py CACHE``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from activations_cache import CacheMetadata, CacheSpec, CacheWriter, ColumnSpec, DatasetSpec

N_BATCHES = 30
BATCH = 4
SPEC = CacheSpec(
    datasets=[
        DatasetSpec("last_prompt", "hook_resid_post", layers=(0, 1, 2, 3), shape=(64,)),
        DatasetSpec("last_prompt", "attn.hook_z", layers=(1, 3), shape=(4, 16)),
    ],
    record_columns={"option_probs": ColumnSpec("float64", length=3), "predicted": ColumnSpec("int64")},
    dtype="float32",
    chunk_bytes=64 * 4 * 6,  # 6 records per chunk: commits fall inside batches too
)
META = CacheMetadata("tiny/llama", "w123", "tiny/tok", {"task": "bbq", "n": N_BATCHES * BATCH}, seed=0)


def record(i: int) -> dict[str, Any]:
    return {
        "record_key": f"r{i}",
        "item_id": f"i{i // 3}",
        "condition": "baseline",
        "round": i % 3,
        "prompt": f"p{i}",
        "answer": f"a{i}",
        "n_prompt_tokens": i,
        "n_answer_tokens": 1,
        "option_probs": [i / 1000, 0.5, 0.5 - i / 1000],
        "predicted": i % 3,
    }


def activations(indices: list[int]) -> dict[tuple[str, str], np.ndarray]:
    """Deterministic per record: a generator seeded by the record index."""
    resid = np.stack([np.random.default_rng(i).standard_normal((4, 64)) for i in indices])
    heads = np.stack([np.random.default_rng(10_000 + i).standard_normal((2, 4, 16)) for i in indices])
    return {("last_prompt", "hook_resid_post"): resid, ("last_prompt", "attn.hook_z"): heads}


def run_writer(path: Path, pause_s: float) -> None:
    """Write every batch not yet committed, printing ``submitted`` after each one."""
    with CacheWriter.open(path, SPEC, META, queue_size=2, commit_interval_s=0.0) as writer:
        done = writer.committed_keys()
        for batch in range(N_BATCHES):
            todo = [i for i in range(batch * BATCH, (batch + 1) * BATCH) if f"r{i}" not in done]
            if todo:
                writer.submit([record(i) for i in todo], activations(todo))
                print("submitted", flush=True)
                time.sleep(pause_s)


def _child(path: Path) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.Popen([sys.executable, __file__, str(path)], stdout=subprocess.PIPE, text=True, cwd=root, env=env)


def _file_flagged_open(path: Path) -> bool:
    try:
        with h5py.File(path, "r"):
            return False
    except OSError:
        return True


def assert_same_content(reference: Path, resumed: Path) -> None:
    with h5py.File(reference, "r") as ref, h5py.File(resumed, "r") as res:
        assert ref["committed_records"][()] == res["committed_records"][()] == N_BATCHES * BATCH
        for name in ("activations/last_prompt/hook_resid_post", "activations/last_prompt/attn.hook_z"):
            assert ref[name].shape == res[name].shape
            np.testing.assert_array_equal(ref[name][:], res[name][:])
        assert sorted(ref["records"]) == sorted(res["records"])
        for name in ref["records"]:
            np.testing.assert_array_equal(ref["records"][name][:], res["records"][name][:])
        kept = sorted(set(ref.attrs) - {"created_at", "resumed_at"})
        assert kept == sorted(set(res.attrs) - {"created_at", "resumed_at"})
        for name in kept:
            assert ref.attrs[name] == res.attrs[name], name


def test_sigkill_at_random_moments_then_rerun_gives_the_uninterrupted_file(tmp_path: Path) -> None:
    reference = tmp_path / "reference.h5"
    run_writer(reference, pause_s=0.0)
    path = tmp_path / "cache.h5"
    rng = random.Random(20260131)
    flagged_after_kill = 0
    committed_after_kill = []
    for _ in range(6):
        child = _child(path)
        assert child.stdout is not None
        for _ in range(rng.randint(0, 6)):
            if child.stdout.readline() == "":
                break
        time.sleep(rng.uniform(0.0, 0.03))
        child.send_signal(signal.SIGKILL)
        child.wait()
        if path.exists():
            flagged_after_kill += _file_flagged_open(path)
            with h5py.File(path, "r", swmr=True) as file:
                committed_after_kill.append(int(file["committed_records"][()]))
    assert flagged_after_kill >= 1, "no kill hit an open writer: the recovery path went untested"
    assert any(0 < count < N_BATCHES * BATCH for count in committed_after_kill), committed_after_kill
    child = _child(path)
    child.communicate(timeout=60)
    assert child.returncode == 0
    assert_same_content(reference, path)
    assert sorted(os.listdir(tmp_path)) == ["cache.h5", "reference.h5"]


if __name__ == "__main__":
    run_writer(Path(sys.argv[1]), pause_s=0.02)
