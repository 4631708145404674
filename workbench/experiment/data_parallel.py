"""Data-parallel runs under an existing launcher: who this process is, which dialogues it runs, the barrier.

``torchrun``, ``accelerate launch`` and Slurm's ``srun`` start the same command N times; each copy
(a *rank*) learns its place from the environment (:func:`launched_world`), runs its share of the
items (:meth:`World.share`) into its own cache, and meets the others at one barrier before rank 0
joins the shards. Everything here is the launcher's contract and the sharding rule; the run folder's
paths are :mod:`workbench.run_folder`'s and the stages are :mod:`workbench.pipeline`'s
(docs/scale-out.md).

The rules:

* **Who.** ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT`` (torchrun,
  accelerate); when ``WORLD_SIZE`` is absent, Slurm's ``SLURM_PROCID`` / ``SLURM_NTASKS`` /
  ``SLURM_LOCALID`` with ``MASTER_ADDR`` / ``MASTER_PORT`` exported by the job script. A world of
  one is today's single-process run.
* **Which.** Rank ``r`` of ``N`` takes the items at positions ``r, r + N, r + 2N, ...`` of the task's
  item order: a dialogue (one item under one condition, all its rounds) stays on one rank, the
  shares differ by at most one item, and the BBQ categories (which differ in context length) are
  dealt evenly.
* **Where.** ``[model] device = "auto"`` (or ``"cuda"``) puts rank ``r`` on ``cuda:LOCAL_RANK`` when
  CUDA is present, else on the CPU; any other device is taken as written. ``[model] device_map`` (one
  model spread over the process's GPUs) is refused with two or more ranks.
* **The barrier.** The process group's backend is ``nccl`` on CUDA and ``gloo`` on the CPU; the
  barrier itself runs over a ``gloo`` group (no tensor moves, it names the ranks that did not come,
  and its timeout raises where NCCL's watchdog would end the process).
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.distributed.distributed_c10d import PrefixStore
from torch.distributed.rendezvous import rendezvous

from activations_cache import config_sha256, open_cache
from workbench.config import RunConfig
from workbench.run_folder import RunFolder, RunFolderError

RENDEZVOUS_TIMEOUT_ENV = "WORKBENCH_RENDEZVOUS_TIMEOUT_S"
"""Seconds every rank waits for the others to meet at ``MASTER_ADDR:MASTER_PORT`` before the model loads."""
BARRIER_TIMEOUT_ENV = "WORKBENCH_BARRIER_TIMEOUT_S"
"""Seconds a rank that finished its share waits at the barrier for the slowest one."""
DEFAULT_RENDEZVOUS_TIMEOUT_S = 120.0
DEFAULT_BARRIER_TIMEOUT_S = 86_400.0
_CONNECT_RETRY_S = 0.25

_T = TypeVar("_T")


class DataParallelError(ValueError):
    """A launcher environment, rendezvous or barrier that a data-parallel run cannot go on with."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one run.

    Attributes:
        rank: this process's rank, 0 to ``size - 1``; rank 0 joins the shards and runs the later stages.
        size: the number of ranks (1: a single-process run).
        local_rank: its index among the ranks of its node (picks its GPU).
        master_addr: host of the rendezvous (rank 0's node, or torchrun's agent); empty for one process.
        master_port: TCP port of the rendezvous; 0 for one process.
        source: the variables it was read from (for messages): ``"WORLD_SIZE"`` or ``"SLURM_NTASKS"``.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    master_addr: str = ""
    master_port: int = 0
    source: str = ""

    @property
    def is_lead(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0

    @property
    def data_parallel(self) -> bool:
        """Whether more than one rank shares the run."""
        return self.size > 1

    @property
    def name(self) -> str:
        """``rank 1 of 4``."""
        return f"rank {self.rank} of {self.size}"

    def share(self, items: Sequence[_T]) -> list[_T]:
        """This rank's items: positions ``rank, rank + size, ...`` of ``items`` (all of them for one process)."""
        return list(items[self.rank :: self.size])


SINGLE_PROCESS = World()


def launched_world(environ: Mapping[str, str] | None = None) -> World:
    """The world the launcher describes in ``environ`` (default: this process's environment).

    Raises:
        DataParallelError: a variable that is not an integer or out of range, ``LOCAL_RANK`` missing
            beside ``RANK`` / ``WORLD_SIZE``, or no ``MASTER_ADDR`` / ``MASTER_PORT`` for a world of two or more.
    """
    env = os.environ if environ is None else environ
    if env.get("WORLD_SIZE"):
        names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
        hint = "torchrun and accelerate launch set all three"
    elif env.get("SLURM_NTASKS") and env.get("SLURM_PROCID"):
        names = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
        hint = "srun sets all three for each task"
    else:
        return SINGLE_PROCESS
    rank_name, size_name, local_name = names
    size = _integer(env, size_name, hint)
    if size < 1:
        raise DataParallelError(f"{size_name}={size} must be at least 1 (the number of ranks)")
    if size == 1:
        return SINGLE_PROCESS
    rank, local_rank = _integer(env, rank_name, hint), _integer(env, local_name, hint)
    if not 0 <= rank < size:
        raise DataParallelError(f"{rank_name}={rank} must lie in 0..{size - 1} ({size_name}={size})")
    if local_rank < 0:
        raise DataParallelError(f"{local_name}={local_rank} must be at least 0 (the rank's index on its node)")
    address = env.get("MASTER_ADDR", "")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
    if missing:
        raise DataParallelError(
            f"{size_name}={size} makes this a {size}-rank run but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set; start it with torchrun or accelerate launch "
            "(they set both), export MASTER_ADDR (rank 0's host) and MASTER_PORT (a free port there) before "
            f"srun, or unset {size_name} for a single-process run"
        )
    port = _integer(env, "MASTER_PORT", "a TCP port on rank 0's host")
    if not 0 < port < 2**16:
        raise DataParallelError(f"MASTER_PORT={port} is not a TCP port; use one in 1..65535")
    return World(rank, size, local_rank, address, port, size_name)


def _integer(env: Mapping[str, str], name: str, hint: str) -> int:
    value = env.get(name)
    if value is None or value == "":
        raise DataParallelError(f"{name} is not set but the launcher variables around it are; {hint}")
    try:
        return int(value)
    except ValueError:
        raise DataParallelError(f"{name}={value!r} is not an integer; {hint}") from None


def check_resumable(folder: RunFolder, world: World, config: RunConfig) -> None:
    """Refuse a run folder that this world cannot resume without losing or mixing committed records.

    The number of ranks is fixed for the life of a run: a resumed rank must see the very batches its
    committed records came from (docs/scale-out.md, "Resume"). So this refuses shards of another
    number of ranks, a single-process ``cache.h5`` under a launcher (or shards without one), and a
    shard of this world written by another configuration (:meth:`RunConfig.resumes`). ``--overwrite``
    skips the check.

    Raises:
        RunFolderError: one line naming the file or folder and the fix.
    """
    shards = folder.shard_files()
    other_sizes = sorted({size for _, size in shards.values() if size != world.size})
    if other_sizes:
        sizes = " and ".join(f"{size}-rank" for size in other_sizes)
        relaunch = f"torchrun --nproc_per_node {other_sizes[0]} -m workbench run CONFIG"
        raise RunFolderError(
            f"{folder.shards} holds the shards of a {sizes} run and this run has {world.size} rank(s): changing "
            f"the number of ranks is refused; resume with {other_sizes[0]} ranks (e.g. {relaunch}), or use "
            "another --name, or --overwrite to discard them"
        )
    if world.data_parallel and folder.cache.is_file():
        with open_cache(folder.cache, expect="run") as reader:
            joined = "shards" in reader.metadata
        if not joined:
            raise RunFolderError(
                f"{folder.cache} was written by a single-process run and this run has {world.size} ranks: changing "
                "the number of ranks is refused; resume it in one process (workbench run CONFIG, without a "
                "launcher), or use another --name, or --overwrite to discard it"
            )
    wanted = config_sha256(config.to_dict())
    for path in shards:
        with open_cache(path, expect="run") as reader:
            recorded, resumes = str(reader.metadata["config_sha256"]), config.resumes(reader.config)
        if not resumes:
            raise RunFolderError(
                f"{path} was written by another configuration (config sha256 {recorded[:12]} in the file, "
                f"{wanted[:12]} now); use another --name, or --overwrite to discard it"
            )


def discarded_by_overwrite(folder: RunFolder, world: World) -> list[Path]:
    """What ``--overwrite`` removes besides the caches the ranks overwrite themselves: the shards of every
    other number of ranks, and for a data-parallel world the joined (or single-process) ``cache.h5``."""
    stale = [path for path, (_, size) in folder.shard_files().items() if size != world.size]
    return stale + ([folder.cache] if world.data_parallel and folder.cache.is_file() else [])


def rank_device(configured: str, world: World, cuda_devices: int) -> str:
    """The device this rank's model runs on.

    Args:
        configured: ``[model] device``.
        world: this process's world.
        cuda_devices: CUDA devices this process sees (0 without CUDA).

    Returns:
        ``configured`` for one process, or for any device but ``"auto"`` / ``"cuda"``; else
        ``cuda:LOCAL_RANK`` with CUDA, ``"cpu"`` for ``"auto"`` without it (``"cuda"`` stays, and
        is then refused by the device check).

    Raises:
        DataParallelError: ``LOCAL_RANK`` past the node's CUDA devices.
    """
    if not world.data_parallel or configured not in ("auto", "cuda"):
        return configured
    if cuda_devices == 0:
        return "cpu" if configured == "auto" else configured
    if world.local_rank >= cuda_devices:
        raise DataParallelError(
            f"{world.name} has local rank {world.local_rank} but this node has {cuda_devices} CUDA device(s); "
            f"start at most {cuda_devices} rank(s) per node (torchrun --nproc_per_node {cuda_devices})"
        )
    return f"cuda:{world.local_rank}"


def check_device_map(device_map: str | None, world: World) -> None:
    """Refuse ``[model] device_map`` (one model over the process's GPUs) together with two or more ranks.

    Each rank holds a whole copy of the model on its own device (:func:`rank_device`); a device map would
    spread every rank's copy over all the node's GPUs, which the ranks then share.

    Raises:
        DataParallelError: a device map under a launcher that starts more than one rank.
    """
    if device_map is not None and world.data_parallel:
        raise DataParallelError(
            f'[model] device_map = "{device_map}" spreads one model over all the GPUs of its process, and this run '
            f"has {world.size} ranks ({world.source}={world.size}), each with a copy of the model on its own device; "
            "remove device_map for a data-parallel run, or start one process without a launcher to spread the model"
        )


def backend_for(device: torch.device) -> str:
    """The process group's backend: ``nccl`` for a CUDA device, ``gloo`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def timeout_s(name: str, default: float, environ: Mapping[str, str] | None = None) -> float:
    """Seconds from the environment variable ``name`` (:data:`RENDEZVOUS_TIMEOUT_ENV`, :data:`BARRIER_TIMEOUT_ENV`).

    Raises:
        DataParallelError: not a positive number.
    """
    value = (os.environ if environ is None else environ).get(name)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise DataParallelError(f"{name}={value!r} must be a positive number of seconds (default {default:g})")
    return seconds


class Barrier:
    """The one barrier of a data-parallel run: every rank has closed its shard (see :func:`process_group`)."""

    def __init__(self, world: World, group: dist.ProcessGroup, seconds: float) -> None:
        self.world = world
        self.group = group
        self.seconds = seconds

    def wait(self, shards: Path) -> None:
        """Return once every rank has called it; raise when one left or took longer than the barrier timeout.

        Args:
            shards: the folder of the shards (named in the error: what was committed stays there).

        Raises:
            DataParallelError: naming the ranks that did not arrive (rank 0) or rank 0 (the others).
        """
        try:
            dist.monitored_barrier(self.group, timeout=timedelta(seconds=self.seconds), wait_all_ranks=True)
        except RuntimeError as error:
            reported = re.search(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier", str(error))
            if not self.world.is_lead:
                who = "rank 0 did not answer (it failed, was killed, or its own wait ran out)"
            elif reported is not None:
                who = f"rank(s) {reported.group(1).strip()} did not arrive (failed, killed, or still running)"
            else:
                who = f"the barrier failed ({' '.join(str(error).split())})"
            raise DataParallelError(
                f"{self.world.name}: {who} within {self.seconds:g} s ({BARRIER_TIMEOUT_ENV}); every rank's "
                f"committed records stay in {shards}: rerun the same command to resume"
            ) from None


@contextmanager
def process_group(world: World, device: torch.device, environ: Mapping[str, str] | None = None) -> Iterator[Barrier]:
    """Meet the other ranks at ``world``'s rendezvous; yield the run's :class:`Barrier`; leave the group at exit.

    A rank other than 0 first waits until the rendezvous port answers (up to
    :data:`RENDEZVOUS_TIMEOUT_ENV` seconds, default 120), so that an unreachable rendezvous is one line.

    Raises:
        DataParallelError: the rendezvous did not answer, or not every rank came, within the timeout.
    """
    rendezvous_s = timeout_s(RENDEZVOUS_TIMEOUT_ENV, DEFAULT_RENDEZVOUS_TIMEOUT_S, environ)
    barrier_s = timeout_s(BARRIER_TIMEOUT_ENV, DEFAULT_BARRIER_TIMEOUT_S, environ)
    where = f"MASTER_ADDR={world.master_addr} MASTER_PORT={world.master_port}"
    fix = (
        f"start every rank with the same MASTER_ADDR and MASTER_PORT, reachable from every node, or unset "
        f"{world.source} for a single-process run ({RENDEZVOUS_TIMEOUT_ENV} sets the wait)"
    )
    if not world.is_lead:
        _wait_for_port(world, rendezvous_s, where, fix)
    host = f"[{world.master_addr}]" if ":" in world.master_addr else world.master_addr
    # torchrun keeps its store across the restarts of --max-restarts: keys of an attempt of their own, or the
    # restarted ranks read the dead ones' addresses
    attempt = (os.environ if environ is None else environ).get("TORCHELASTIC_RESTART_COUNT", "0")
    try:
        store, _, _ = next(
            rendezvous(
                f"tcp://{host}:{world.master_port}", world.rank, world.size, timeout=timedelta(seconds=rendezvous_s)
            )
        )
        dist.init_process_group(
            backend_for(device),
            store=PrefixStore(f"workbench/attempt-{attempt}", store),
            rank=world.rank,
            world_size=world.size,
            timeout=timedelta(seconds=rendezvous_s),
        )
    except (RuntimeError, ValueError) as error:
        raise DataParallelError(
            f"{world.name}: the {world.size} ranks did not all meet at the rendezvous {where} within "
            f"{rendezvous_s:g} s ({' '.join(str(error).split())}); {fix}"
        ) from None
    try:
        group = dist.new_group(backend="gloo", timeout=timedelta(seconds=barrier_s))
        yield Barrier(world, group, barrier_s)
    finally:
        dist.destroy_process_group()


def _wait_for_port(world: World, seconds: float, where: str, fix: str) -> None:
    """Return once ``world.master_addr:master_port`` accepts a TCP connection; raise after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((world.master_addr, world.master_port), timeout=max(0.1, remaining)):
                return
        except OSError as error:
            if time.monotonic() + _CONNECT_RETRY_S >= deadline:
                raise DataParallelError(
                    f"{world.name}: the rendezvous {where} did not answer within {seconds:g} s ({error}); {fix}"
                ) from None
            time.sleep(_CONNECT_RETRY_S)
