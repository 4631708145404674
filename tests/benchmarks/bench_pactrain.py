"""PAC-Bayes training from scratch vs Adam under a grid search, MLP and CNN on the 8x8 digits (run by hand).

    .venv/bin/python tests/benchmarks/bench_pactrain.py [--seeds 0 1 2 3 4] [--epochs 100] [--workers 2]

Both methods get the same epochs, batches, split and initial weights per seed (``PACTrainConfig``
defaults otherwise: 1257 training / 540 test digits, batch 128, MLP width 256). PAC-Bayes training
trains once per seed with its fixed defaults; the Adam baseline trains every cell of its 3 x 3
grid (learning rate x L2 weight decay) on 80% of the training digits, picks the cell on the other
20%, and retrains that cell on all of them. The script prints the summary (mean test accuracy
over seeds with its 95% Student-t half-width, the mean PAC-Bayes bound in nats, the Adam cell
chosen most often), the bound's terms per network, and the grid's mean accuracies per cell.
``workbench pactrain -o DIR`` runs the same experiment and writes it as CSV.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from workbench.pactrain import PACTrainConfig, RunRecord, run_experiment, summarize
from workbench.pactrain.tables import format_summary, write_grid, write_runs, write_summary


def _progress(runs: list[RunRecord]) -> None:
    described = ", ".join(f"{run.method} {100 * run.test_accuracy:.2f}% ({run.seconds:.0f} s)" for run in runs)
    print(f"{runs[0].network} seed {runs[0].seed}: {described}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=PACTrainConfig().epochs)
    parser.add_argument("--workers", type=int, default=2, help="processes (each runs single-threaded)")
    parser.add_argument("--output", type=Path, help="also write the CSV files here")
    arguments = parser.parse_args()
    config = dataclasses.replace(PACTrainConfig(), seeds=tuple(arguments.seeds), epochs=arguments.epochs)

    start = time.perf_counter()
    results = run_experiment(config, workers=arguments.workers, on_seed=_progress)
    seconds = time.perf_counter() - start
    rows = summarize(results)

    print(
        f"8x8 digits, {results.runs[0].train_size} train digits, {len(config.seeds)} seeds, {config.epochs} epochs, "
        f"batch {config.batch_size}; {seconds:.0f} s on {arguments.workers} worker(s)"
    )
    print(format_summary(rows))
    print()
    print(f"{'network':<8}{'KL':>10}{'K':>8}{'gamma':>7}{'E_Q train CE':>14}{'bound':>8}  vacuous")
    for network in config.networks:
        pac = [run for run in results.runs if run.network == network and run.method == "pac_bayes"]
        if not pac:
            continue
        mean = {
            key: float(np.mean([getattr(run, key) for run in pac]))
            for key in ("kl", "k", "gamma", "empirical_risk", "bound")
        }
        vacuous = sum(bool(run.vacuous) for run in pac)
        print(
            f"{network:<8}{mean['kl']:>10.0f}{mean['k']:>8.3f}{mean['gamma']:>7.2f}{mean['empirical_risk']:>14.3f}"
            f"{mean['bound']:>8.3f}  {vacuous}/{len(pac)}"
        )
    print()
    print(f"{'network':<8}{'lr':>8}{'wd':>8}{'val acc %':>11}{'test acc %':>12}{'chosen':>8}")
    for network in config.networks:
        for learning_rate in config.adam_learning_rates:
            for weight_decay in config.adam_weight_decays:
                cells = [
                    cell
                    for cell in results.grid
                    if (cell.network, cell.learning_rate, cell.weight_decay) == (network, learning_rate, weight_decay)
                ]
                if not cells:
                    continue
                validation = 100 * float(np.mean([cell.validation_accuracy for cell in cells]))
                test = 100 * float(np.mean([cell.test_accuracy for cell in cells]))
                chosen = sum(cell.chosen for cell in cells)
                print(f"{network:<8}{learning_rate:>8g}{weight_decay:>8g}{validation:>11.2f}{test:>12.2f}{chosen:>8}")
    if arguments.output is not None:
        write_runs(arguments.output, results.runs)
        write_grid(arguments.output, results.grid)
        write_summary(arguments.output, rows)


if __name__ == "__main__":
    main()
