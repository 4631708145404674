"""``workbench pactrain``: PAC-Bayes training from scratch vs an Adam grid search on the 8x8 digits.

The command writes, into ``-o DIR``: ``config.json`` (the resolved configuration), ``results.csv``
(rewritten after every network and seed, so an interrupted run keeps what finished),
``adam_grid.csv`` and ``summary.csv``, then prints the summary table. A vacuous PAC-Bayes bound
is reported as one line after every file is written (exit status 2 through the CLI's error
handling), or as a note with ``--allow-vacuous``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from workbench.pactrain.config import METHODS, NETWORKS, PACTrainConfig, PACTrainError
from workbench.pactrain.data import digits_split
from workbench.pactrain.experiment import RunRecord, require_non_vacuous_runs, run_experiment, summarize
from workbench.pactrain.tables import format_summary, write_grid, write_runs, write_summary

CONFIG_FILE = "config.json"
HELP = "train an MLP and a CNN from scratch on the 8x8 digits by PAC-Bayes bound minimisation vs an Adam grid"

# the options that set a PACTrainConfig field of the same name
_CONFIG_OPTIONS = (
    "networks",
    "methods",
    "seeds",
    "epochs",
    "stage1_epochs",
    "batch_size",
    "train_size",
    "test_fraction",
    "validation_fraction",
    "learning_rate",
    "noise_learning_rate",
    "hidden_width",
    "adam_learning_rates",
    "adam_weight_decays",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``workbench pactrain`` (defaults: ``PACTrainConfig``'s, see docs/pactrain.md)."""
    defaults = PACTrainConfig()
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the CSV files (created)")
    parser.add_argument("--config", type=Path, help="TOML file with a [pactrain] table; the options below override it")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, help=f"default: {' '.join(defaults.networks)}")
    parser.add_argument("--methods", nargs="+", choices=METHODS, help=f"default: {' '.join(defaults.methods)}")
    parser.add_argument("--seeds", nargs="+", type=int, help=f"one run per seed; default: {defaults.seeds}")
    parser.add_argument("--epochs", type=int, help=f"epochs for every method and grid cell; default {defaults.epochs}")
    parser.add_argument("--stage1-epochs", type=int, help="PAC-Bayes epochs learning noise and prior; default 4/5")
    parser.add_argument("--batch-size", type=int, help=f"default {defaults.batch_size}")
    parser.add_argument("--train-size", type=int, help="a stratified subset of the training split; default: all")
    parser.add_argument("--test-fraction", type=float, help=f"default {defaults.test_fraction}")
    parser.add_argument(
        "--validation-fraction", type=float, help=f"Adam's validation share; default {defaults.validation_fraction}"
    )
    parser.add_argument("--learning-rate", type=float, help=f"PAC-Bayes step on w; default {defaults.learning_rate}")
    parser.add_argument(
        "--noise-learning-rate", type=float, help=f"PAC-Bayes Adam step on p, b; default {defaults.noise_learning_rate}"
    )
    parser.add_argument("--hidden-width", type=int, help=f"MLP hidden width; default {defaults.hidden_width}")
    parser.add_argument(
        "--adam-learning-rates", nargs="+", type=float, help=f"grid; default {defaults.adam_learning_rates}"
    )
    parser.add_argument(
        "--adam-weight-decays", nargs="+", type=float, help=f"grid (L2); default {defaults.adam_weight_decays}"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes running seeds in parallel; default 1")
    parser.add_argument(
        "--allow-vacuous", action="store_true", help="report a vacuous bound as a note instead of an error"
    )


def config_from_arguments(args: argparse.Namespace) -> PACTrainConfig:
    """The ``--config`` file's [pactrain] table (or the defaults) with the options given on the command line.

    Raises:
        PACTrainError: a missing or unreadable ``--config`` file, or a value the configuration refuses.
    """
    table: dict[str, Any] = {}
    path: Path | None = getattr(args, "config", None)
    if path is not None:
        try:
            table = dict(tomllib.loads(path.read_text(encoding="utf-8")).get("pactrain", {}))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise PACTrainError(f"--config {path}: {error}; give a TOML file with a [pactrain] table") from None
    for key in _CONFIG_OPTIONS:
        value = getattr(args, key, None)
        if value is not None:
            table[key] = value
    return PACTrainConfig.from_dict(table)


def run_command(args: argparse.Namespace) -> int:
    """Run the experiment ``args`` describe and write its files; 0 on success.

    Raises:
        PACTrainError: a bad option (before anything runs) or, after every file is written, a vacuous
            bound (unless ``--allow-vacuous``).
    """
    config = config_from_arguments(args)
    digits_split(config.seeds[0], config.test_fraction, config.train_size)  # a train_size too large: before any file
    output: Path = args.output
    if output.exists() and not output.is_dir():
        raise PACTrainError(f"-o {output} is a file; give a folder for the CSV files")
    output.mkdir(parents=True, exist_ok=True)
    (output / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n", encoding="utf-8")
    finished: list[RunRecord] = []

    def on_seed(runs: list[RunRecord]) -> None:
        finished.extend(runs)
        write_runs(output, finished)
        described = ", ".join(f"{run.method} {100 * run.test_accuracy:.2f}%" for run in runs)
        print(f"{runs[0].network} seed {runs[0].seed}: {described}", file=sys.stderr)

    results = run_experiment(config, workers=args.workers, on_seed=on_seed)
    write_runs(output, results.runs)
    write_grid(output, results.grid)
    rows = summarize(results)
    write_summary(output, rows)
    print(format_summary(rows))
    try:
        require_non_vacuous_runs(results)
    except PACTrainError as error:
        if not args.allow_vacuous:
            raise
        print(f"note: {error}", file=sys.stderr)
    return 0
