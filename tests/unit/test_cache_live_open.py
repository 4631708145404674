"""Opening a cache while another process commits to it never reports a sound file as damaged."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from activations_cache import open_cache

_WRITER = """
import sys, time
import numpy as np
from pathlib import Path
from activations_cache import CacheMetadata, CacheSpec, CacheWriter, DatasetSpec

path = Path(sys.argv[1])
spec = CacheSpec(datasets=(DatasetSpec(position="last_prompt", site="hook_resid_post", layers=(0, 1), shape=(8,)),))
meta = CacheMetadata(model_id="m", weights_hash="w", tokenizer="t", config={"a": 1}, seed=0)
with CacheWriter.open(path, spec, meta, commit_interval_s=0.05, overwrite=True) as writer:
    for batch in range(int(sys.argv[2])):
        records = [
            {"record_key": f"k{batch}-{i}", "item_id": f"i{i}", "condition": "c", "round": 0,
             "prompt": "p" * (100 + batch), "answer": "a" * 30, "n_prompt_tokens": 1, "n_answer_tokens": 1}
            for i in range(4)
        ]
        writer.submit(records, {("last_prompt", "hook_resid_post"): np.zeros((4, 2, 8), np.float32)})
        time.sleep(0.02)
"""


def test_opens_during_commits_of_another_process_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), "250"])
    try:
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        opened, counts = 0, []
        while writer.poll() is None and opened < 200:
            with open_cache(path) as reader:  # before the fix about 1 open in 8 raised "is damaged"
                counts.append(reader.n_records)
            opened += 1
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0
    assert opened >= 10, "the writer finished before the reader could open its file during commits"
    assert counts == sorted(counts), "a later open saw fewer committed records than an earlier one"
    with open_cache(path) as reader:
        assert reader.n_records == 1000
