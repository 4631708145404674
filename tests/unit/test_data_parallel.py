"""Data-parallel runs: the sharding rule, the launcher's variables, the rank's device, the rendezvous and barrier
errors, and the run-folder checks that refuse a resume with another number of ranks (before any model loads)."""

from __future__ import annotations

import dataclasses
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from activations_cache import CacheMetadata, CacheSpec, CacheWriter, DatasetSpec, config_sha256
from workbench.cli.main import main
from workbench.config import RunConfig
from workbench.experiment.data_parallel import (
    BARRIER_TIMEOUT_ENV,
    RENDEZVOUS_TIMEOUT_ENV,
    SINGLE_PROCESS,
    DataParallelError,
    World,
    backend_for,
    discarded_by_overwrite,
    launched_world,
    process_group,
    rank_device,
    timeout_s,
)
from workbench.models import tiny_model
from workbench.pipeline import plan_run
from workbench.run_folder import RunFolder, RunFolderError

REPOSITORY = Path(__file__).resolve().parents[2]
TORCHRUN = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.7", "MASTER_PORT": "29400"}
SLURM = {
    "SLURM_PROCID": "5",
    "SLURM_NTASKS": "8",
    "SLURM_LOCALID": "1",
    "MASTER_ADDR": "node01",
    "MASTER_PORT": "29500",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the sharding rule -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_items", [1, 2, 5, 12, 40, 41])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shares_are_disjoint_cover_every_item_and_differ_by_at_most_one(n_items: int, size: int) -> None:
    items = [f"bbq/{index}" for index in range(n_items)]
    shares = [World(rank, size, rank, "h", 1, "WORLD_SIZE").share(items) for rank in range(size)]
    assert sorted(item for share in shares for item in share) == sorted(items)
    assert sum(len(share) for share in shares) == n_items  # disjoint
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shares == [World(rank, size, 0, "h", 1, "WORLD_SIZE").share(items) for rank in range(size)]  # deterministic


def test_share_deals_items_round_robin_in_task_order() -> None:
    """Rank r of N takes positions r, r + N, ...: the demo's 40 BBQ items (8 per category, in category order)
    give each of 2 ranks 4 items of every category."""
    items = [
        f"{category}/{k}" for category in ("Age", "Disability", "Gender", "Nationality", "Religion") for k in range(8)
    ]
    first, second = (World(rank, 2, rank, "h", 1, "WORLD_SIZE").share(items) for rank in (0, 1))
    assert first[:3] == ["Age/0", "Age/2", "Age/4"] and second[:3] == ["Age/1", "Age/3", "Age/5"]
    for category in ("Age", "Religion"):
        assert (
            sum(item.startswith(category) for item in first) == sum(item.startswith(category) for item in second) == 4
        )
    assert SINGLE_PROCESS.share(items) == items


# --- the launcher's variables ------------------------------------------------------------------------


def test_torchrun_variables() -> None:
    assert launched_world(TORCHRUN) == World(1, 2, 1, "10.0.0.7", 29400, "WORLD_SIZE")
    assert launched_world({}) == SINGLE_PROCESS
    assert launched_world({**TORCHRUN, "WORLD_SIZE": "1", "RANK": "0"}) == SINGLE_PROCESS  # torchrun --nproc_per_node 1


def test_slurm_variables_when_the_torch_ones_are_absent() -> None:
    assert launched_world(SLURM) == World(5, 8, 1, "node01", 29500, "SLURM_NTASKS")
    assert launched_world({**SLURM, **TORCHRUN}) == World(1, 2, 1, "10.0.0.7", 29400, "WORLD_SIZE")  # torchrun wins
    assert launched_world({"SLURM_NTASKS": "4"}) == SINGLE_PROCESS  # an allocation, not an srun task


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"WORLD_SIZE": "two"}, r"^WORLD_SIZE='two' is not an integer; torchrun and accelerate launch set all three$"),
        ({"WORLD_SIZE": "0"}, r"^WORLD_SIZE=0 must be at least 1"),
        ({"RANK": "2"}, r"^RANK=2 must lie in 0\.\.1 \(WORLD_SIZE=2\)$"),
        ({"LOCAL_RANK": None}, r"^LOCAL_RANK is not set but the launcher variables around it are; torchrun and"),
        ({"LOCAL_RANK": "-1"}, r"^LOCAL_RANK=-1 must be at least 0"),
        ({"MASTER_ADDR": None}, r"^WORLD_SIZE=2 makes this a 2-rank run but MASTER_ADDR is not set; start it with"),
        ({"MASTER_ADDR": None, "MASTER_PORT": ""}, r"but MASTER_ADDR and MASTER_PORT are not set;.* unset WORLD_SIZE"),
        ({"MASTER_PORT": "70000"}, r"^MASTER_PORT=70000 is not a TCP port; use one in 1\.\.65535$"),
    ],
)
def test_bad_launcher_variables_are_one_line(changes: dict[str, str | None], message: str) -> None:
    environ = {name: value for name, value in {**TORCHRUN, **changes}.items() if value is not None}
    with pytest.raises(DataParallelError, match=message):
        launched_world(environ)


def test_srun_without_a_rendezvous_address_names_the_slurm_variable() -> None:
    with pytest.raises(
        DataParallelError,
        match=r"^SLURM_NTASKS=8 makes this a 8-rank run but MASTER_ADDR is not set.*"
        r"before srun, or unset SLURM_NTASKS",
    ):
        launched_world({name: value for name, value in SLURM.items() if name != "MASTER_ADDR"})


# --- the rank's device and the backend ---------------------------------------------------------------


def test_each_rank_takes_its_local_gpu_or_the_cpu() -> None:
    rank = World(3, 4, 1, "h", 1, "WORLD_SIZE")
    assert rank_device("auto", rank, cuda_devices=2) == "cuda:1"
    assert rank_device("cuda", rank, cuda_devices=2) == "cuda:1"
    assert rank_device("auto", rank, cuda_devices=0) == "cpu"
    assert rank_device("cuda", rank, cuda_devices=0) == "cuda"  # refused by the device check, as for one process
    assert rank_device("cuda:0", rank, cuda_devices=2) == "cuda:0"  # an explicit [model] device is respected
    assert rank_device("cpu", rank, cuda_devices=2) == "cpu"
    assert rank_device("auto", SINGLE_PROCESS, cuda_devices=2) == "auto"
    with pytest.raises(
        DataParallelError,
        match=r"^rank 3 of 4 has local rank 1 but this node has 1 CUDA device\(s\); "
        r"start at most 1 rank\(s\) per node \(torchrun --nproc_per_node 1\)$",
    ):
        rank_device("auto", rank, cuda_devices=1)
    assert backend_for(torch.device("cpu")) == "gloo"
    assert backend_for(torch.device("cuda", 1)) == "nccl"


def test_timeouts_come_from_the_environment() -> None:
    assert timeout_s(RENDEZVOUS_TIMEOUT_ENV, 120.0, {}) == 120.0
    assert timeout_s(BARRIER_TIMEOUT_ENV, 5.0, {BARRIER_TIMEOUT_ENV: "2.5"}) == 2.5
    with pytest.raises(DataParallelError, match=r"^WORKBENCH_BARRIER_TIMEOUT_S='-1' must be a positive number"):
        timeout_s(BARRIER_TIMEOUT_ENV, 5.0, {BARRIER_TIMEOUT_ENV: "-1"})


# --- rendezvous and barrier (real gloo process groups on this machine) --------------------------------


def test_an_unreachable_rendezvous_is_one_line_within_the_timeout() -> None:
    world = World(1, 2, 1, "127.0.0.1", free_port(), "WORLD_SIZE")
    start = time.monotonic()
    with pytest.raises(DataParallelError) as raised:
        with process_group(world, torch.device("cpu"), {RENDEZVOUS_TIMEOUT_ENV: "1"}):
            pass
    assert time.monotonic() - start < 10
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"rank 1 of 2: the rendezvous MASTER_ADDR=127.0.0.1 MASTER_PORT={world.master_port} did")
    assert "start every rank with the same MASTER_ADDR and MASTER_PORT" in message and "unset WORLD_SIZE" in message


def test_rank_zero_alone_at_the_rendezvous_is_one_line() -> None:
    """In a process of its own: a failed ``init_process_group`` leaves torch's group counter advanced, so a later
    group in the same process would not meet its peers (torch resets it only when a group is destroyed)."""
    alone = (
        "import torch\n"
        "from workbench.experiment.data_parallel import DataParallelError, World, process_group\n"
        "try:\n"
        f"    with process_group(World(0, 2, 0, '127.0.0.1', {free_port()}, 'WORLD_SIZE'), torch.device('cpu'),\n"
        "                       {'WORKBENCH_RENDEZVOUS_TIMEOUT_S': '1'}):\n"
        "        pass\n"
        "except DataParallelError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", alone], cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.stdout.splitlines()) == 1
    assert re.match(
        r"rank 0 of 2: the 2 ranks did not all meet at the rendezvous MASTER_ADDR=127\.0\.0\.1 MASTER_PORT=\d+ "
        r"within 1 s \(.*1/2 clients joined.*\); start every rank with the same MASTER_ADDR and MASTER_PORT",
        done.stdout,
    ), done.stdout


def test_a_rank_that_leaves_before_the_barrier_is_named_by_rank_zero(tmp_path: Path) -> None:
    port = free_port()
    leaver = (
        "import torch\n"
        "from workbench.experiment.data_parallel import World, process_group\n"
        f"with process_group(World(1, 2, 1, '127.0.0.1', {port}, 'WORLD_SIZE'), torch.device('cpu')):\n"
        "    pass\n"  # leaves the group without reaching the barrier, as a failed rank does
    )
    other = subprocess.Popen([sys.executable, "-c", leaver], cwd=REPOSITORY, stderr=subprocess.DEVNULL)
    try:
        with pytest.raises(DataParallelError) as raised:
            with process_group(World(0, 2, 0, "127.0.0.1", port, "WORLD_SIZE"), torch.device("cpu")) as barrier:
                barrier.wait(tmp_path / "shards")
    finally:
        assert other.wait(timeout=60) == 0
    assert str(raised.value) == (
        "rank 0 of 2: rank(s) 1 did not arrive (failed, killed, or still running) within 86400 s "
        f"(WORKBENCH_BARRIER_TIMEOUT_S); every rank's committed records stay in {tmp_path / 'shards'}: "
        "rerun the same command to resume"
    )


# --- the run folder: shard names, and resuming with another number of ranks is refused --------------


def test_shard_paths_and_the_shards_present(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    assert folder.shard(1, 4) == tmp_path / "shards" / "cache.rank1-of-4.h5"
    assert folder.shard_files() == {}
    folder.shards.mkdir()
    for name in (
        "cache.rank1-of-2.h5",
        "cache.rank0-of-2.h5",
        "cache.rank0-of-2.h5.lock",
        "cache.rank2-of-3.h5",
        "cache.rank0-of-2.h5.creating",
        "notes.txt",
    ):
        (folder.shards / name).write_bytes(b"")
    assert folder.shard_files() == {
        folder.shard(0, 2): (0, 2),
        folder.shard(1, 2): (1, 2),
        folder.shard(2, 3): (2, 3),
    }
    assert discarded_by_overwrite(folder, World(0, 2, 0, "h", 1, "WORLD_SIZE")) == [folder.shard(2, 3)]
    assert discarded_by_overwrite(folder, SINGLE_PROCESS) == list(folder.shard_files())


CONFIG = """
name = "dp"
seed = 0
[model]
spec = "{model}"
[task]
name = "bbq-sample"
categories = ["Age"]
limit_per_category = 3
[protocol]
instructions = ["none"]
rounds = 2
answer_tokens = 4
[capture]
sites = ["blocks.*.hook_resid_post"]
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_model("llama", n_layers=2)
    model.model.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    return path


def run_config(tmp_path: Path, model_dir: Path, seed: int = 0) -> RunConfig:
    path = tmp_path / "dp.toml"
    path.write_text(CONFIG.format(model=model_dir))
    return dataclasses.replace(RunConfig.load(path), output_dir=str(tmp_path / "runs"), seed=seed)


def write_cache(path: Path, config: RunConfig) -> bytes:
    """A one-record cache written by ``config`` (as a shard or cache.h5 of it would be); returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = CacheSpec(datasets=(DatasetSpec("last_prompt", "hook_resid_post", (0,), (4,)),))
    meta = CacheMetadata("tiny", "sha256:0", "tiny", config.to_dict(), config.seed)
    record = {
        "record_key": "k",
        "item_id": "i",
        "condition": "c",
        "round": 0,
        "prompt": "p",
        "answer": "a",
        "n_prompt_tokens": 1,
        "n_answer_tokens": 1,
    }
    with CacheWriter.open(path, spec, meta) as writer:
        writer.submit([record], {("last_prompt", "hook_resid_post"): np.zeros((1, 1, 4))})
    return path.read_bytes()


TWO_RANKS = World(0, 2, 0, "127.0.0.1", 29400, "WORLD_SIZE")


def test_shards_of_another_number_of_ranks_are_refused_and_kept(tmp_path: Path, model_dir: Path) -> None:
    config = run_config(tmp_path, model_dir)
    folder = RunFolder(config.run_dir)
    kept = write_cache(folder.shard(2, 3), config)
    for world, ranks in ((TWO_RANKS, "2 rank(s)"), (SINGLE_PROCESS, "1 rank(s)")):
        with pytest.raises(
            RunFolderError,
            match=(
                rf"^{folder.shards} holds the shards of a 3-rank run and this run has {re.escape(ranks)}: changing the number of "
                r"ranks is refused; resume with 3 ranks \(e\.g\. torchrun --nproc_per_node 3 -m workbench run CONFIG\), "
                r"or use another --name, or --overwrite to discard them$"
            ),
        ):
            plan_run(config, world=world)
    assert folder.shard(2, 3).read_bytes() == kept
    assert plan_run(config, world=TWO_RANKS, overwrite=True).world == TWO_RANKS


def test_a_single_process_cache_is_not_resumed_by_ranks(tmp_path: Path, model_dir: Path) -> None:
    config = run_config(tmp_path, model_dir)
    folder = RunFolder(config.run_dir)
    write_cache(folder.cache, config)
    with pytest.raises(
        RunFolderError,
        match=(
            rf"^{folder.cache} was written by a single-process run and this run has 2 ranks: changing the number of "
            r"ranks is refused; resume it in one process \(workbench run CONFIG, without a launcher\)"
        ),
    ):
        plan_run(config, world=TWO_RANKS)
    assert plan_run(config).world == SINGLE_PROCESS  # the single-process resume stays as it was


def test_a_rank_whose_shard_belongs_to_another_configuration_is_refused(tmp_path: Path, model_dir: Path) -> None:
    config = run_config(tmp_path, model_dir)
    other = run_config(tmp_path, model_dir, seed=7)
    folder = RunFolder(config.run_dir)
    write_cache(folder.shard(0, 2), config)
    kept = write_cache(folder.shard(1, 2), other)
    wanted, recorded = config_sha256(config.to_dict()), config_sha256(other.to_dict())
    with pytest.raises(
        RunFolderError,
        match=(
            rf"^{folder.shard(1, 2)} was written by another configuration \(config sha256 {recorded[:12]} in the file, "
            rf"{wanted[:12]} now\); use another --name, or --overwrite to discard it$"
        ),
    ):
        plan_run(config, world=TWO_RANKS)
    assert folder.shard(1, 2).read_bytes() == kept


def test_more_ranks_than_items_is_refused(tmp_path: Path, model_dir: Path) -> None:
    config = run_config(tmp_path, model_dir)
    with pytest.raises(
        RunFolderError,
        match=r"^\[task\] bbq-sample selects 3 items, fewer than the 4 ranks "
        r"\(WORLD_SIZE=4\); start at most 3 ranks$",
    ):
        plan_run(config, world=World(0, 4, 0, "h", 1, "WORLD_SIZE"))


def test_plan_describes_the_ranks_share(tmp_path: Path, model_dir: Path) -> None:
    config = run_config(tmp_path, model_dir)
    plan = plan_run(config, world=World(1, 2, 1, "10.0.0.7", 29400, "WORLD_SIZE"))
    assert plan.device == torch.device("cpu") and plan.n_records == 6
    folder = RunFolder(config.run_dir)
    assert (
        f"ranks: 2 (WORLD_SIZE, rendezvous 10.0.0.7:29400); rank 1 of 2: 1 items into {folder.shard(1, 2)}; "
        f"rank 0 joins the shards into {folder.cache}"
    ) in plan.describe()


def test_the_command_line_reports_an_unreachable_rendezvous_and_leaves_no_folder(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dp.toml"
    path.write_text(CONFIG.format(model=model_dir))
    port = free_port()
    for name, value in {
        **TORCHRUN,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        RENDEZVOUS_TIMEOUT_ENV: "1",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["run", str(path), "--output-dir", str(tmp_path / "runs")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) >= 1 and lines[-1].startswith("error: rank 1 of 2: the rendezvous MASTER_ADDR=127.0.0.1")
    assert not (tmp_path / "runs").exists()


def test_a_device_map_with_two_ranks_is_refused_before_the_model_loads(tmp_path: Path, model_dir: Path) -> None:
    path = tmp_path / "dp.toml"
    path.write_text(CONFIG.format(model=model_dir).replace("[model]\n", '[model]\ndevice_map = "auto"\n'))
    config = dataclasses.replace(RunConfig.load(path), output_dir=str(tmp_path / "runs"))
    with pytest.raises(
        DataParallelError,
        match=(
            r'^\[model\] device_map = "auto" spreads one model over all the GPUs of its process, and this run has 2 '
            r"ranks \(WORLD_SIZE=2\), each with a copy of the model on its own device; remove device_map for a "
            r"data-parallel run, or start one process without a launcher to spread the model$"
        ),
    ):
        plan_run(config, world=TWO_RANKS)
    assert plan_run(config).world == SINGLE_PROCESS  # one process keeps its device map
    assert not (tmp_path / "runs").exists()
