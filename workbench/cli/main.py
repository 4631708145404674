"""The ``workbench`` command line. ``workbench COMMAND --help`` explains every option.

Errors print one line and set the exit status as :mod:`workbench.cli.errors` says.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from workbench.cli.errors import exit_status

console = Console(stderr=True)
out = Console()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # rich draws our own progress
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    return exit_status(args.handler, args, console)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="Capture, cache, probe and report what changes inside an LLM during moral self-correction.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run a configured experiment end to end (cache, results, probes, report)",
        description="Run the self-correction experiment of CONFIG into runs/<name>/: generate and score every "
        "answer round, capture activations into cache.h5, then write results/, probes/ and report/. "
        "Rerunning the same command resumes an interrupted run.",
    )
    run.add_argument("config", type=Path, help="the run's TOML configuration (see workbench/configs/demo.toml)")
    run.add_argument("--name", help="run name (folder under --output-dir); default: the config's name")
    run.add_argument("--output-dir", help="where run folders live; default: the config's output_dir (runs)")
    run.add_argument("--model", help="override [model].spec: embedded name, .gguf file, local dir or hub id")
    run.add_argument("--backend", choices=("hf", "transformer_lens", "nnsight"), help="override [model].backend")
    run.add_argument(
        "--overwrite", action="store_true", help="discard an existing cache of this run instead of resuming"
    )
    run.add_argument(
        "--check",
        action="store_true",
        help="validate CONFIG (tables, model spec, device, task items, an existing cache) without running",
    )
    run.add_argument(
        "--stages",
        default="run,results,probe,report",
        help="comma-separated stages to execute, in order (default: run,results,probe,report)",
    )
    run.set_defaults(handler=_run)

    models = commands.add_parser(
        "models",
        help="list the embedded models and where converted models are cached",
        description="List the models that ship inside PyPI wheels and the model cache folder.",
    )
    models.set_defaults(handler=_models)

    cache = commands.add_parser(
        "cache", help="inspect an activation cache", description="Inspect an HDF5 activation cache."
    )
    cache_commands = cache.add_subparsers(title="cache commands", metavar="CACHE_COMMAND")
    info = cache_commands.add_parser(
        "info",
        help="schema, model, counts, datasets and sizes",
        description="Print the schema, model, record counts and datasets of a cache.",
    )
    info.add_argument("path", type=Path, help="a cache file (runs/<name>/cache.h5) or its run folder")
    info.set_defaults(handler=_cache_info)
    verify = cache_commands.add_parser(
        "verify",
        help="check counts, NaN/inf and text hashes",
        description="Verify a cache: schema, counts, NaN/inf values, text hashes. Exit 1 on problems.",
    )
    verify.add_argument("path", type=Path, help="a cache file or its run folder")
    verify.set_defaults(handler=_cache_verify)
    repair = cache_commands.add_parser(
        "repair",
        help="bring a damaged cache back to its last good commit",
        description="Repair a truncated or damaged cache: keep the longest prefix of committed records that "
        "reads back whole, set the damaged original aside as <cache>.damaged-<time>, and print what was kept. "
        "Exit 2 when nothing can be kept (the file is then left as it is).",
    )
    repair.add_argument("path", type=Path, help="a cache file or its run folder")
    repair.set_defaults(handler=_cache_repair)

    results = commands.add_parser(
        "results",
        help="behavioural tables per condition and round",
        description="Compute the behavioural metrics of a run (with bootstrap intervals and paired "
        "tests), write results/*.csv and print the table per condition and round.",
    )
    results.add_argument("run", type=Path, help="a run folder or its cache.h5")
    results.add_argument("--metric", default="accuracy", help="metric shown in the printed table (default: accuracy)")
    results.set_defaults(handler=_results)

    probe = commands.add_parser(
        "probe",
        help="fit per-layer probes on a run's cache and apply them",
        description="Fit per-layer probes (concept set from the configuration) and measure morality "
        "levels per layer x round x condition; writes probes/ in the run folder.",
    )
    probe.add_argument("run", type=Path, help="a run folder or its cache.h5")
    probe.add_argument("--config", type=Path, help="a TOML file whose [probe] table overrides the run's")
    probe.set_defaults(handler=_probe)

    report = commands.add_parser(
        "report",
        help="write the interactive HTML report of a run",
        description="Write a self-contained interactive report (plotly, offline) of a run.",
    )
    report.add_argument("run", type=Path, help="a run folder or its cache.h5")
    report.add_argument("-o", "--output", type=Path, help="report folder (default: <run>/report)")
    report.add_argument(
        "--export",
        nargs="?",
        const="png,svg,pdf,summary",
        metavar="FORMATS",
        help="also write every figure as static files into <report>/figures/ and a one-page summary.pdf: "
        "a comma-separated list of png, svg, pdf, summary (default when given alone: all four); needs the "
        "kaleido package and Chrome or Chromium",
    )
    report.add_argument(
        "--watch",
        action="store_true",
        help="live view of a run that is still writing: rebuild the page whenever records are committed "
        "(the page says how many it shows and reloads itself) until the run closes its cache",
    )
    report.add_argument(
        "--interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="with --watch: seconds between two looks at the cache and two page reloads (default: 5)",
    )
    report.set_defaults(handler=_report)

    download = commands.add_parser(
        "download",
        help="fetch a benchmark's standard files (needs internet)",
        description="Download a benchmark's standard files into a folder, with a sha256 manifest.",
    )
    download.add_argument("dataset", choices=("bbq", "winogender"), help="which benchmark")
    download.add_argument("--dest", type=Path, required=True, help="destination folder")
    download.add_argument("--base-url", help="mirror to download from instead of the upstream repository")
    download.set_defaults(handler=_download)

    from workbench.cli import compare as compare_command
    from workbench.cli.debiasing import add_debiasing_commands
    from workbench.finetune import selection_command
    from workbench.pactrain import command as pactrain_command

    add_debiasing_commands(commands)
    pactrain = commands.add_parser("pactrain", help=pactrain_command.HELP, description=pactrain_command.HELP)
    pactrain_command.add_arguments(pactrain)
    pactrain.set_defaults(handler=pactrain_command.run_command)
    compare = commands.add_parser("compare", help=compare_command.HELP, description=compare_command.DESCRIPTION)
    compare_command.add_arguments(compare)
    compare.set_defaults(handler=compare_command.run_command)
    select = commands.add_parser("select", help=selection_command.HELP, description=selection_command.HELP)
    selection_command.add_arguments(select)
    return parser


def _run(args: argparse.Namespace) -> int:
    from workbench.cli.progress import progress_display
    from workbench.config import RunConfig
    from workbench.experiment.data_parallel import launched_world
    from workbench.experiment.runner import ExperimentRunner
    from workbench.pipeline import plan_run, probe_stage, results_stage, run_stage
    from workbench.presets import preset_overrides
    from workbench.run_folder import RunFolder

    config = RunConfig.load(args.config)
    overrides = {}
    if args.name:
        overrides["name"] = args.name
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    if args.model or args.backend:
        overrides["model"] = dataclasses.replace(
            config.model, **{k: v for k, v in (("spec", args.model), ("backend", args.backend)) if v}
        )
    config = dataclasses.replace(config, **overrides)
    world = launched_world()  # under torchrun / accelerate launch / srun: one rank of a data-parallel run
    if world.is_lead:
        for line in preset_overrides(config):
            console.print(f"[yellow]note:[/] {escape(line)}", highlight=False, soft_wrap=True)
    stages = [stage.strip() for stage in args.stages.split(",") if stage.strip()]
    unknown = sorted(set(stages) - {"run", "results", "probe", "report"})
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; use run, results, probe, report")
    plan = plan_run(config, overwrite=args.overwrite, world=world) if args.check or "run" in stages else None
    if not world.is_lead:  # its share, the barrier; rank 0 joins the shards and runs the later stages
        if "run" in stages and not args.check:
            run_stage(config, overwrite=args.overwrite, plan=plan)
            shard = RunFolder(config.run_dir).shard(world.rank, world.size)
            console.print(f"{world.name}: share written to {shard}; rank 0 joins the shards")
        return 0
    if args.check and plan is not None:
        out.print(f"{args.config}: ok", highlight=False)
        for line in plan.describe():
            out.print(f"  {escape(line)}", highlight=False, soft_wrap=True)
        return 0
    run_dir = config.run_dir
    if "run" in stages:
        with progress_display(console) as progress:
            task = progress.add_task("loading model", total=None)

            def attach(runner: ExperimentRunner) -> Callable[[int], None]:
                label = f"{config.name}: records" + (f" of {world.name}" if world.data_parallel else "")
                progress.update(task, description=label, total=runner.total_records)
                return lambda n: progress.advance(task, n)

            run_dir = run_stage(config, overwrite=args.overwrite, on_model_loaded=attach, plan=plan)
        console.print(f"cache: {RunFolder(run_dir).cache}")
    if "results" in stages:
        tables, _ = results_stage(run_dir, config.results)
        _print_results(tables.tables["behaviour"], "accuracy")
    if "probe" in stages:
        probe_stage(run_dir, config.probe)
        console.print(f"probes: {RunFolder(run_dir).probes}")
    if "report" in stages:
        from reports import build_report

        path = build_report(run_dir)
        out.print(f"report: {path}")
    return 0


def _print_results(behaviour: list[dict[str, Any]], metric: str) -> None:
    from workbench.metrics.tables import format_results_table

    out.print(format_results_table(behaviour, metric=metric))


def _models(args: argparse.Namespace) -> int:
    from workbench.models import EMBEDDED_MODELS, model_cache_dir

    table = Table(title="embedded models")
    for column in ("name", "installed", "hub id", "description", "install"):
        table.add_column(column)
    for model in EMBEDDED_MODELS.values():
        table.add_row(
            model.name, "yes" if model.is_installed() else "no", model.hub_id, model.description, model.install_command
        )
    out.print(table)
    cache_dir = model_cache_dir()
    converted = sorted(path.name for path in cache_dir.iterdir() if path.is_dir()) if cache_dir.is_dir() else []
    out.print(f"model cache: {cache_dir} (set $WORKBENCH_MODEL_CACHE to move it)")
    for name in converted:
        out.print(f"  {name}")
    return 0


def _cache_info(args: argparse.Namespace) -> int:
    from activations_cache import cache_info
    from workbench.run_folder import RunFolder

    print(cache_info(RunFolder.cache_file(args.path)))
    return 0


def _cache_verify(args: argparse.Namespace) -> int:
    from activations_cache import verify_cache
    from workbench.run_folder import RunFolder

    report = verify_cache(RunFolder.cache_file(args.path))
    print(f"{report.path}: {report.n_records} records")
    for name in sorted(report.nan_counts):
        print(f"  {name}: {report.nan_counts[name]} NaN, {report.inf_counts.get(name, 0)} inf")
    for problem in report.problems:
        print(f"  problem: {problem}")
    print("ok" if report.ok else f"{len(report.problems)} problem(s)")
    return 0 if report.ok else 1


def _cache_repair(args: argparse.Namespace) -> int:
    from activations_cache import repair_cache
    from workbench.run_folder import RunFolder

    print(repair_cache(RunFolder.cache_file(args.path)).summary())
    return 0


def _results(args: argparse.Namespace) -> int:
    from workbench.pipeline import results_stage

    tables, paths = results_stage(args.run)
    _print_results(tables.tables["behaviour"], args.metric)
    console.print(f"tables: {paths[0].parent}")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from probes import ProbeConfig, ProbeConfigError
    from workbench.config import ConfigError, RunConfig, read_toml_file
    from workbench.config_tables import dataclass_to_table
    from workbench.pipeline import probe_stage
    from workbench.run_folder import RunFolder

    run = RunFolder.with_cache(args.run)
    probe = None
    if args.config:
        override = read_toml_file(args.config).get("probe", {})
        base = dataclass_to_table(RunConfig.of_run(run.root).probe)
        try:
            probe = ProbeConfig.from_dict({**base, **override} if isinstance(override, dict) else override)
        except ProbeConfigError as error:
            raise ConfigError(f"{args.config}: {error}") from None
    probe_stage(run.root, probe)
    console.print(f"probes: {run.probes}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from reports.build import LiveBuild, build_report, export_report, watch_report
    from reports.static_export import parse_export_choices

    choices = parse_export_choices(args.export) if args.export is not None else None
    if args.watch:
        if choices is not None:
            raise ValueError(
                "--watch and --export cannot be combined: export once the run has finished "
                f"(workbench report {args.run} --export)"
            )
        if not args.interval > 0:
            raise ValueError(f"--interval {args.interval}: give a positive number of seconds")

        def built(build: LiveBuild) -> None:
            state = "the run is still writing" if build.writing else "the run has finished"
            line = f"report: {build.page} ({build.records} records; {state})"
            out.print(escape(line), highlight=False, soft_wrap=True)

        def waiting(cache: Path) -> None:
            console.print(escape(f"waiting for {cache} to appear (start `workbench run CONFIG`; Ctrl-C stops)"))

        try:
            watch_report(args.run, args.output, interval_s=args.interval, on_build=built, on_wait=waiting)
        except KeyboardInterrupt:
            console.print("stopped watching; the last page written stays in place")
        return 0
    out.print(f"report: {build_report(args.run, args.output)}")
    if choices is not None:
        written = export_report(args.run, args.output, choices)
        folders = sorted({str(path.parent) for path in written})
        out.print(escape(f"exported: {len(written)} files into {', '.join(folders)}"), highlight=False, soft_wrap=True)
    return 0


def _download(args: argparse.Namespace) -> int:
    from workbench.tasks.download import download_bbq, download_winogender

    fetch = download_bbq if args.dataset == "bbq" else download_winogender
    kwargs = {"base_url": args.base_url} if args.base_url else {}
    result = fetch(args.dest, **kwargs)
    out.print(f"downloaded into {args.dest}: {result}")
    return 0
