"""The stages of a run, each reading the previous stage's files in the run folder.

``run`` (model -> cache.h5) -> ``results`` (cache -> results/*.csv) -> ``probe``
(cache -> probes/) -> ``report`` (everything -> report/index.html). Every stage can be rerun on
its own; none re-runs the model unless asked.

Before a model loads, :func:`plan_run` checks everything that can be checked without it (the model
spec, the device, the task's items, the conditions, an existing cache's configuration), so that a
bad run is refused in seconds and leaves the run folder as it was.

Under a launcher (``torchrun``, ``accelerate launch``, ``srun``) the ``run`` stage is data-parallel:
each rank writes its share into its own shard, and rank 0 joins the shards into ``cache.h5`` after
the barrier (:mod:`workbench.experiment.data_parallel`, docs/scale-out.md).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from activations_cache import config_sha256, join_shards, open_cache
from probes import ProbeConfig, run_probe_stage
from workbench.config import RunConfig
from workbench.experiment.data_parallel import (
    SINGLE_PROCESS,
    World,
    check_device_map,
    check_resumable,
    discarded_by_overwrite,
    process_group,
    rank_device,
)
from workbench.experiment.image_checks import check_image_run_before_loading
from workbench.experiment.records import read_run_records
from workbench.experiment.runner import ExperimentRunner
from workbench.hooks.nnsight_remote import check_remote_ready
from workbench.inference.engines import check_engine_available
from workbench.inference.semantic_equivalence import check_nli_model, resolved_rule
from workbench.metrics.tables import ResultsConfig, ResultTables, compute_results, record_row, write_results
from workbench.models.loading import LoadedModel, ModelLocation, check_device, load_model, resolve_model_spec
from workbench.presets import preset_lines
from workbench.protocols import Condition, dialogue_schedule
from workbench.run_folder import RunFolder, RunFolderError
from workbench.tasks.items import Item
from workbench.tasks.registry import load_configured_task


@dataclass(frozen=True)
class RunPlan:
    """A run configuration checked against everything but the model's own weights.

    Attributes:
        config: the configuration.
        model: where the model's weights are (not loaded).
        device: the device the model will run on.
        items: the task's items, loaded and checked (all of them, whatever this rank's share).
        conditions: the protocol conditions, in run order.
        world: this process's place among the ranks of a data-parallel run.
    """

    config: RunConfig
    model: ModelLocation
    device: torch.device
    items: Sequence[Item]
    conditions: Sequence[Condition]
    world: World = SINGLE_PROCESS

    @property
    def n_records(self) -> int:
        """Answer rounds the run writes: items x sum of each condition's rounds."""
        return len(self.items) * sum(condition.rounds for condition in self.conditions)

    def describe(self) -> list[str]:
        """One line per fact, for ``workbench run --check``."""
        config = self.config
        return [
            f"model: {self.model.spec} ({self.model.source}: {self.model.path or self.model.model_id}), "
            f"backend {config.model.backend}, device {self.device}",
            f"task: {config.task.name}, {len(self.items)} items",
            f"conditions: {len(self.conditions)} ({', '.join(condition.name for condition in self.conditions)})",
            f"records: {self.n_records} answer rounds into {RunFolder(config.run_dir).cache}",
            *self._rank_lines(),
            *preset_lines(config),
        ]

    def _rank_lines(self) -> list[str]:
        world = self.world
        if not world.data_parallel:
            return []
        share = len(world.share(self.items))
        folder = RunFolder(self.config.run_dir)
        return [
            f"ranks: {world.size} ({world.source}, rendezvous {world.master_addr}:{world.master_port}); {world.name}: "
            f"{share} items into {folder.shard(world.rank, world.size)}; rank 0 joins the shards into {folder.cache}"
        ]


def plan_run(config: RunConfig, *, overwrite: bool = False, world: World = SINGLE_PROCESS) -> RunPlan:
    """Check ``config`` without loading the model (seconds); the run folder is not touched.

    ``world`` is this process's place in a data-parallel run (:func:`launched_world`); its device is
    the rank's own (:func:`rank_device`).

    Raises:
        RunFolderError: the run folder is a file, its cache or a shard was written by another
            configuration, or by another number of ranks.
        ModelSpecError, DeviceError, TaskConfigError, DataParallelError, ...: one line naming what to fix.
    """
    run_dir = config.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} exists and is not a folder; choose another --name or --output-dir")
    location = resolve_model_spec(config.model.spec)
    check_remote_ready(config.model.remote, location.model_id, location.source)
    check_engine_available(config.generation.engine)
    check_device_map(config.model.device_map, world)
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = check_device(rank_device(config.model.device, world, cuda_devices))
    items = load_configured_task(config.task)
    if not items:
        raise RunFolderError(f"[task] {config.task.name} selects no items; widen its filters or check its path")
    check_image_run_before_loading(config, location, items)
    if world.size > len(items):
        raise RunFolderError(
            f"[task] {config.task.name} selects {len(items)} items, fewer than the {world.size} ranks "
            f"({world.source}={world.size}); start at most {len(items)} ranks"
        )
    settings = config.protocol
    conditions = settings.conditions()
    rules = {resolved_rule(settings.uncertainty_equivalence, bool(item.options)) for item in items}
    needed = sorted(rule for rule in rules if rule is not None)
    if settings.uncertainty_samples and needed:
        check_nli_model(settings.nli_model, needed[0])  # config.json only; before the model loads
    protocol = settings.transcript_rules(items)
    one_item_per_task = {item.task: item for item in items}.values()
    for condition in conditions:
        for item in one_item_per_task:
            dialogue_schedule(item, condition, protocol)  # a cell without source templates: one line, now
    folder = RunFolder(run_dir)
    cache_path = folder.cache
    if not overwrite:
        check_resumable(folder, world, config)
    if cache_path.is_file() and not overwrite:
        wanted = config_sha256(config.to_dict())
        with open_cache(cache_path, expect="run") as reader:
            recorded, resumes = reader.metadata["config_sha256"], config.resumes(reader.config)
        if not resumes:
            raise RunFolderError(
                f"{cache_path} was written by another configuration (config sha256 {str(recorded)[:12]} in the "
                f"file, {wanted[:12]} now); use another --name, or --overwrite to discard it"
            )
    return RunPlan(config, location, device, items, conditions, world)


def run_stage(
    config: RunConfig,
    *,
    overwrite: bool = False,
    on_model_loaded: Callable[[ExperimentRunner], Callable[[int], None] | None] | None = None,
    plan: RunPlan | None = None,
) -> Path:
    """Generate, score and capture every record of ``config`` into ``run_dir/cache.h5``; return the run dir.

    ``plan`` is :func:`plan_run`'s check of ``config`` when the caller already made it; its world
    (:func:`launched_world`) makes the run data-parallel. Without it, the run is a single process.

    ``config.toml`` is written only once the cache writer has accepted the run (lock taken,
    configuration matching): a refused run leaves the folder as it was. A run that fails before
    committing any record into a cache it created removes that cache and restores ``config.toml``.

    Data-parallel (a world of two or more ranks): each rank meets the others before its model
    loads, writes its share into ``shards/cache.rank<r>-of-<N>.h5`` (resuming it when it exists) and
    waits at the barrier; rank 0 then joins the shards into ``cache.h5``, and the others return
    without touching it. Only rank 0 writes ``config.toml``.

    Raises:
        DataParallelError: no rendezvous, or a rank that did not reach the barrier (committed
            records stay in the shards).
    """
    plan = plan or plan_run(config, overwrite=overwrite)
    folder = RunFolder(config.run_dir)
    if not plan.world.data_parallel:
        _write_cache(config, plan, folder.cache, overwrite, on_model_loaded)
        return config.run_dir
    size = plan.world.size
    with process_group(plan.world, plan.device) as barrier:
        _write_cache(config, plan, folder.shard(plan.world.rank, size), overwrite, on_model_loaded)
        barrier.wait(folder.shards)
        if plan.world.is_lead:
            join_shards([folder.shard(rank, size) for rank in range(size)], folder.cache)
    return config.run_dir


def _write_cache(
    config: RunConfig,
    plan: RunPlan,
    cache_path: Path,
    overwrite: bool,
    on_model_loaded: Callable[[ExperimentRunner], Callable[[int], None] | None] | None,
) -> None:
    """Load the model and run this process's share of ``plan`` into ``cache_path`` (``cache.h5`` or its shard)."""
    folder = RunFolder(config.run_dir)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    config_path = folder.config
    lead = plan.world.is_lead
    created = not cache_path.exists()
    previous_config = config_path.read_bytes() if config_path.is_file() else None
    model = load_model(
        config.model.spec,
        device=plan.device if config.model.device_map is None else "auto",
        dtype=config.model.dtype,
        attn_implementation=config.model.attn_implementation,
        trust_remote_code=config.model.trust_remote_code,
        device_map=config.model.device_map,
    )
    runner = ExperimentRunner(config, model, plan.items, world=plan.world)
    progress = on_model_loaded(runner) if on_model_loaded is not None else None

    def accepted() -> None:  # the writer holds this process's cache
        if not lead:
            return
        if overwrite:
            for path in discarded_by_overwrite(folder, plan.world):
                path.unlink(missing_ok=True)
        write_atomically(config_path, config.to_toml().encode("utf-8"))

    try:
        runner.run(cache_path, overwrite=overwrite, progress=progress, on_open=accepted)
    except BaseException:
        if created and _holds_no_record(cache_path):
            cache_path.unlink()
            if lead and not folder.shard_files():  # no other rank's records for config.toml to describe
                if previous_config is None:
                    config_path.unlink(missing_ok=True)
                else:
                    write_atomically(config_path, previous_config)
        raise


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that a reader sees the old or the new file, never a part."""
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def _holds_no_record(cache_path: Path) -> bool:
    if not cache_path.is_file():
        return False
    try:
        with open_cache(cache_path, expect="run") as reader:
            return reader.n_records == 0
    except ValueError:  # unreadable: leave it for `workbench cache verify` / `repair`
        return False


def probe_stage(run: Path, probe: ProbeConfig | None = None, model: LoadedModel | None = None) -> list[Path]:
    """Fit and apply the probes of a run folder (``probes/``); returns the written files.

    The model, when concept capture or steering needs it, is loaded from the run folder's own
    ``config.toml`` (the user's ``[model]`` table: spec, device, ``trust_remote_code``), never from
    the configuration recorded inside the cache; the cache's recorded spec must agree with it, and
    the weights are checked against the cache's hash before they are loaded where files allow.

    Args:
        run: a run folder or its ``cache.h5``.
        probe: the ``[probe]`` table; ``None``: the run folder's.
        model: the run's model when already loaded.

    Raises:
        RunFolderError: the cache names another model than ``config.toml``.
    """
    folder = RunFolder.with_cache(run)
    user = RunConfig.of_run(folder.root)
    with open_cache(folder.cache, expect="run") as reader:
        recorded_model = reader.config.get("model")
    recorded_spec = recorded_model.get("spec") if isinstance(recorded_model, dict) else None
    if model is None and recorded_spec != user.model.spec:
        source = folder.config if folder.config.is_file() else "the default configuration"
        raise RunFolderError(
            f"{folder.cache} records model {recorded_spec!r} but {source} names {user.model.spec!r}; "
            f"write the run's [model] table into {folder.config} (nothing is loaded from the cache)"
        )

    def load_users_model(expected_weights_hash: str) -> LoadedModel:
        return load_model(
            user.model.spec,
            device=user.model.device,
            dtype=user.model.dtype,
            attn_implementation=user.model.attn_implementation,
            trust_remote_code=user.model.trust_remote_code,
            expected_weights_hash=expected_weights_hash,
            device_map=user.model.device_map,
        )

    return run_probe_stage(folder.root, probe or user.probe, model, loader=load_users_model, backend=user.model.backend)


def results_stage(run: Path, config: ResultsConfig | None = None) -> tuple[ResultTables, list[Path]]:
    """Compute the behavioural tables of a run and write them to ``results/``."""
    folder = RunFolder.with_cache(run)
    if config is None:
        config = RunConfig.of_run(folder.root).results
    tables = compute_results([record_row(record) for record in read_run_records(folder.cache)], config)
    return tables, write_results(tables, folder.results)
