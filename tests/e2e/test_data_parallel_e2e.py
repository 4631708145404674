"""Data-parallel runs end to end: two ranks under ``torchrun`` (gloo, CPU) on a tiny random Llama saved to disk.

The joined ``cache.h5`` must hold the records of a one-process run, record for record: the same keys,
the same prompts and answers (exactly: on the tiny model no greedy choice sits at a float tie), the
same option probabilities and activations at float32 / float16 precision. A rank killed mid-run must
resume its own shard when torchrun restarts the ranks, keeping what it had committed.

Run as a script (``torchrun ... tests/e2e/test_data_parallel_e2e.py CONFIG``) this file is each rank's
command: ``workbench run CONFIG --stages run,results``, whose rank 1 kills itself (SIGKILL) on its first
attempt, after its first condition's records are committed. One launch covers the run and its resume,
to keep the test short: most of a launch's time is the ranks' imports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from activations_cache import CacheWriter, open_cache
from workbench.config import RunConfig
from workbench.run_folder import RunFolder

pytestmark = pytest.mark.e2e
REPOSITORY = Path(__file__).resolve().parents[2]
TORCHRUN = REPOSITORY / ".venv" / "bin" / "torchrun"
CRASH_OUT_ENV = "DATA_PARALLEL_TEST_OUT"
CRASH_CALL = 5
"""Rank 1's answer batch at which it dies: its share (3 items, batches of 2) takes 2 batches x 2 rounds per
condition, so the fifth is the first of the second condition, and the first condition's 6 records are committed."""

CONFIG = """
name = "dp"
seed = 0
output_dir = "{output_dir}"
[model]
spec = "{model}"
[task]
name = "bbq-sample"
categories = ["Age", "Religion"]
limit_per_category = 3
[protocol]
instructions = ["none", "intrinsic"]
rounds = 2
answer_tokens = 4
[capture]
sites = ["blocks.*.hook_resid_post", "blocks.1.attn.hook_z"]
batch_size = 2
[results]
n_boot = 50
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from workbench.models import tiny_model

    path = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_model("llama", n_layers=2)
    model.model.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    return path


def write_config(folder: Path, model_dir: Path) -> Path:
    path = folder / "dp.toml"
    path.write_text(CONFIG.format(output_dir=folder / "runs", model=model_dir))
    return path


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, dict[str, Any]]:
    """The one-process run's records and activations, by record key."""
    from workbench.pipeline import run_stage

    config = RunConfig.load(write_config(tmp_path_factory.mktemp("one"), model_dir))
    return by_key(RunFolder(run_stage(config)).cache)


def by_key(cache: Path) -> dict[str, dict[str, Any]]:
    """record key -> every record column and every activation dataset's row."""
    with open_cache(cache) as reader:
        columns = {name: np.asarray(values) for name, values in reader.records.items()}
        for position, site in reader.sites():
            layers = [reader.read(site, layer, position) for layer in reader.layers(site, position)]
            columns[f"{position}/{site}"] = np.stack(layers, axis=1)
    keys = columns["record_key"].tolist()
    return {key: {name: values[index] for name, values in columns.items()} for index, key in enumerate(keys)}


def assert_same_records(joined: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]]) -> None:
    assert sorted(joined) == sorted(reference)
    for key, record in reference.items():
        other = joined[key]
        for name, value in record.items():
            if "/" in name:  # activations, stored as float16
                np.testing.assert_allclose(other[name], value, rtol=2e-3, atol=2e-3, err_msg=f"{key} {name}")
            elif np.asarray(value).dtype.kind == "f":
                np.testing.assert_allclose(other[name], value, rtol=1e-5, atol=1e-6, err_msg=f"{key} {name}")
            else:
                assert np.array_equal(other[name], value), (key, name, other[name], value)


def torchrun(arguments: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2"]  # c10d rendezvous: a fresh store per restart
    done = subprocess.run(
        [*command, *arguments],
        cwd=REPOSITORY,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    failures = [line for line in done.stderr.splitlines() if "error" in line and not line.startswith("frame")]
    assert done.returncode == 0, "\n".join(failures[-20:]) or done.stderr[-4000:]
    return done


def test_two_torchrun_ranks_one_killed_and_restarted_write_the_one_process_cache(
    tmp_path: Path, model_dir: Path, one_process: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """One torchrun launch (2 ranks, gloo) covers the run and its resume: rank 1 dies (SIGKILL) with its first
    condition committed, torchrun stops rank 0 and restarts both, each resumes its own shard, rank 0 joins them."""
    from workbench.cli.main import main
    from workbench.experiment.data_parallel import World

    config_path = write_config(tmp_path, model_dir)
    done = torchrun(["--max-restarts", "1", __file__, str(config_path)], env={CRASH_OUT_ENV: str(tmp_path)})
    calls = {path.stem: json.loads(path.read_text()) for path in tmp_path.glob("rank*-attempt*.json")}
    assert calls["rank1-attempt0"] == CRASH_CALL  # died there ...
    assert calls["rank1-attempt1"] == 4  # ... and redid only the second condition's 2 batches x 2 rounds
    folder = RunFolder(RunConfig.load(config_path).run_dir)
    with open_cache(folder.shard(1, 2)) as reader:
        assert len(json.loads(reader.metadata["resumed_at"])) == 1  # recovered after the kill, not rewritten
    assert_same_records(by_key(folder.cache), one_process)
    assert "rank 1 of 2: share written to" in done.stderr and (folder.results / "behaviour.csv").is_file()
    assert folder.config.read_text() == RunConfig.load(config_path).to_toml()
    order = list(dict.fromkeys(str(record["item_id"]) for record in one_process.values()))  # the task's item order
    for rank in (0, 1):
        with open_cache(folder.shard(rank, 2)) as reader:
            shard_items = list(dict.fromkeys(reader.records["item_id"].tolist()))
        assert shard_items == World(rank, 2, rank, "h", 1, "WORLD_SIZE").share(order)  # a dialogue stays on its rank

    before = {path: path.read_bytes() for path in folder.shard_files()}
    assert main(["run", str(config_path), "--stages", "run"]) == 2  # one process may not resume 2 ranks' shards
    assert "holds the shards of a 2-rank run and this run has 1 rank(s)" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in folder.shard_files()} == before


def _crashing_worker(config_path: str, out: Path) -> int:
    """``workbench run CONFIG --stages run,results`` as one torchrun rank; rank 1 dies at answer batch
    ``CRASH_CALL`` of its first attempt, once its earlier records are committed."""
    import workbench.experiment.runner as runner_module
    from workbench.cli.main import main
    from workbench.inference.answering import answer_batch as real_answer_batch

    rank, attempt = int(os.environ["RANK"]), int(os.environ["TORCHELASTIC_RESTART_COUNT"])
    shard = RunFolder(RunConfig.load(Path(config_path)).run_dir).shard(rank, int(os.environ["WORLD_SIZE"]))
    calls = [0]

    def record_calls() -> None:
        (out / f"rank{rank}-attempt{attempt}.json").write_text(json.dumps(calls[0]))

    def answer_batch(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if rank == 1 and attempt == 0 and calls[0] == CRASH_CALL:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with open_cache(shard) as reader:  # the writer thread commits in the background
                    if reader.n_records == 6:
                        break
                time.sleep(0.05)
            record_calls()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_answer_batch(*args, **kwargs)

    class CommitEveryBatch(CacheWriter):  # the default commits every 10 s: too rarely for a run of seconds
        @classmethod
        def open(cls, *args: Any, **kwargs: Any) -> CacheWriter:
            return super().open(*args, **{**kwargs, "commit_interval_s": 0.0})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner_module, "answer_batch", answer_batch)
        patch.setattr(runner_module, "CacheWriter", CommitEveryBatch)
        status = main(["run", config_path, "--stages", "run,results"])
    record_calls()
    return status


if __name__ == "__main__":
    sys.exit(_crashing_worker(sys.argv[1], Path(os.environ[CRASH_OUT_ENV])))
