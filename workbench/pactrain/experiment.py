"""Seeds x networks x methods: every run of a PAC-Bayes training experiment, and their summary.

For each network and seed, both methods see the same digits split and start from the same random
initial weights. The summary gives, per network and method, the mean test accuracy over seeds with
a 95% Student-t interval (mean ± t_{0.975, s-1} · sd / sqrt(s), s seeds; no interval for one seed).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import stats

from workbench.pactrain.baseline import adam_grid_search
from workbench.pactrain.bound import vacuous_message
from workbench.pactrain.config import PACTrainConfig, PACTrainError
from workbench.pactrain.data import digits_split
from workbench.pactrain.networks import build_network
from workbench.pactrain.training import train_pac_bayes

INTERVAL_LEVEL = 0.95


@dataclass(frozen=True)
class RunRecord:
    """One (network, method, seed) run. Accuracies in [0, 1]; bound terms in nats (PAC-Bayes runs only);
    the chosen Adam cell (Adam runs only); ``seconds`` of wall time."""

    network: str
    method: str
    seed: int
    train_size: int
    test_accuracy: float
    train_accuracy: float
    seconds: float
    bound: float | None = None
    trivial_bound: float | None = None
    vacuous: bool | None = None
    empirical_risk: float | None = None
    kl: float | None = None
    k: float | None = None
    gamma: float | None = None
    prior_scale: float | None = None
    posterior_scale: float | None = None
    inside_k_grid: bool | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    validation_accuracy: float | None = None


@dataclass(frozen=True)
class GridRecord:
    """One cell of one seed's Adam grid (trained on the fit part of the training set)."""

    network: str
    seed: int
    learning_rate: float
    weight_decay: float
    validation_accuracy: float
    validation_loss: float
    test_accuracy: float
    chosen: bool


@dataclass(frozen=True)
class SummaryRow:
    """Mean test accuracy over seeds of one (network, method) with its 95% interval (NaN for one seed).

    ``mean_bound`` and ``vacuous_runs`` are for PAC-Bayes rows; ``adam_choice`` is the Adam cell
    chosen most often (``"lr=0.001 wd=0.0001 (3/5)"``) for Adam rows.
    """

    network: str
    method: str
    seeds: int
    mean_test_accuracy: float
    interval_low: float
    interval_high: float
    mean_bound: float | None = None
    vacuous_runs: int | None = None
    adam_choice: str | None = None

    @property
    def half_width(self) -> float:
        return (self.interval_high - self.interval_low) / 2


@dataclass(frozen=True)
class ExperimentResults:
    """Every run and every Adam grid cell, in (network, seed, method) order."""

    runs: tuple[RunRecord, ...]
    grid: tuple[GridRecord, ...]


def run_seed(config: PACTrainConfig, network: str, seed: int) -> tuple[list[RunRecord], list[GridRecord]]:
    """Both configured methods for one network and seed."""
    split = digits_split(seed, config.test_fraction, config.train_size)
    runs: list[RunRecord] = []
    grid: list[GridRecord] = []
    if "pac_bayes" in config.methods:
        start = time.perf_counter()
        pac = train_pac_bayes(build_network(network, split.num_classes, config.hidden_width, seed), split, config, seed)
        report = pac.report
        runs.append(
            RunRecord(
                network=network,
                method="pac_bayes",
                seed=seed,
                train_size=split.train_size,
                test_accuracy=pac.test_accuracy,
                train_accuracy=pac.train_accuracy,
                seconds=time.perf_counter() - start,
                bound=report.bound,
                trivial_bound=report.trivial_bound,
                vacuous=report.vacuous,
                empirical_risk=report.empirical_risk,
                kl=report.kl,
                k=report.k,
                gamma=report.gamma,
                prior_scale=report.prior_scale,
                posterior_scale=report.posterior_scale,
                inside_k_grid=report.inside_k_grid,
            )
        )
    if "adam_grid" in config.methods:
        start = time.perf_counter()
        adam = adam_grid_search(
            lambda: build_network(network, split.num_classes, config.hidden_width, seed), split, config, seed
        )
        runs.append(
            RunRecord(
                network=network,
                method="adam_grid",
                seed=seed,
                train_size=split.train_size,
                test_accuracy=adam.test_accuracy,
                train_accuracy=adam.train_accuracy,
                seconds=time.perf_counter() - start,
                learning_rate=adam.chosen.learning_rate,
                weight_decay=adam.chosen.weight_decay,
                validation_accuracy=adam.chosen.validation_accuracy,
            )
        )
        grid.extend(
            GridRecord(
                network=network,
                seed=seed,
                learning_rate=cell.learning_rate,
                weight_decay=cell.weight_decay,
                validation_accuracy=cell.validation_accuracy,
                validation_loss=cell.validation_loss,
                test_accuracy=cell.test_accuracy,
                chosen=cell is adam.chosen,
            )
            for cell in adam.grid
        )
    return runs, grid


def run_experiment(
    config: PACTrainConfig,
    workers: int = 1,
    on_seed: Callable[[list[RunRecord]], None] | None = None,
) -> ExperimentResults:
    """Every (network, seed) of ``config``; ``workers`` > 1 runs them in that many processes (same numbers).

    Args:
        on_seed: called with each (network, seed)'s runs as they finish, in order.

    Raises:
        PACTrainError: ``workers`` < 1.
    """
    if workers < 1:
        raise PACTrainError(f"[pactrain] workers = {workers} must be an integer >= 1")
    jobs = [(network, seed) for network in config.networks for seed in config.seeds]
    runs: list[RunRecord] = []
    grid: list[GridRecord] = []

    def collect(seed_runs: list[RunRecord], seed_grid: list[GridRecord]) -> None:
        runs.extend(seed_runs)
        grid.extend(seed_grid)
        if on_seed is not None:
            on_seed(seed_runs)

    if workers == 1:
        for network, seed in jobs:
            collect(*run_seed(config, network, seed))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(run_seed, config, network, seed) for network, seed in jobs]
            for future in futures:
                collect(*future.result())
    return ExperimentResults(tuple(runs), tuple(grid))


def t_interval(values: list[float], level: float = INTERVAL_LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean of ``values``; low = high = NaN for one value."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + level) / 2, len(values) - 1)) * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def summarize(results: ExperimentResults) -> list[SummaryRow]:
    """One row per (network, method), in the order the runs came."""
    keys = list(dict.fromkeys((run.network, run.method) for run in results.runs))
    rows = []
    for network, method in keys:
        group = [run for run in results.runs if (run.network, run.method) == (network, method)]
        mean, low, high = t_interval([run.test_accuracy for run in group])
        mean_bound = vacuous_runs = adam_choice = None
        if method == "pac_bayes":
            mean_bound = float(np.mean([run.bound for run in group if run.bound is not None]))
            vacuous_runs = sum(bool(run.vacuous) for run in group)
        else:
            (cell, count), *_ = Counter((run.learning_rate, run.weight_decay) for run in group).most_common(1)
            adam_choice = f"lr={cell[0]:g} wd={cell[1]:g} ({count}/{len(group)})"
        rows.append(SummaryRow(network, method, len(group), mean, low, high, mean_bound, vacuous_runs, adam_choice))
    return rows


def require_non_vacuous_runs(results: ExperimentResults) -> None:
    """Raise one line naming the PAC-Bayes run with the worst vacuous bound, if any run's bound is vacuous.

    Raises:
        PACTrainError: the culprit (network and seed), its bound, how many runs are vacuous, and the fix.
    """
    vacuous = [
        (run, run.bound, run.trivial_bound, run.kl, run.k)
        for run in results.runs
        if run.vacuous and run.bound is not None and run.trivial_bound is not None
    ]
    if not vacuous:
        return
    worst, bound, trivial_bound, kl, k = max(vacuous, key=lambda item: item[1])
    pac_runs = sum(run.method == "pac_bayes" for run in results.runs)
    culprit = f"{worst.network} seed {worst.seed} ({len(vacuous)} of {pac_runs} PAC-Bayes runs vacuous)"
    raise PACTrainError(vacuous_message(culprit, bound, trivial_bound, kl or math.nan, k or math.nan))
