"""``workbench compare``: one report over several run folders (models or checkpoints side by side).

:func:`load_comparison` reads each run through its owners (:class:`reports.run_results.RunResults` for
the tables, :meth:`workbench.config.RunConfig.of_run` for the resolved configuration, the run's cache
for its model's depth) and refuses, in one line naming the runs and the key, runs that cannot be
compared (:class:`ComparisonError`):

- fewer than two runs, or one folder given twice;
- a different task: ``[task]`` ``name``, ``categories``, ``context_conditions`` or ``polarities``
  differ (they choose which items are asked; ``limit_per_category``, ``seed`` and ``path``, which only
  sample or locate them, may differ and are listed among the differences);
- a metric computed differently: a ``[results]`` key that changes what a metric of the task means
  (:data:`RESULTS_KEYS`: the unparsed-answer rule, the BBQ bias convention, the Winogender rule, the
  interval level) differs;
- no condition that every run has.

A run without ``config.toml`` or ``results/behaviour.csv`` is a :class:`RunFolderError` that names the
command that writes it. :func:`build_comparison` writes the page (:mod:`reports.compare_page`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from activations_cache import CacheFormatError, open_cache
from reports.figures.style import condition_order
from reports.run_results import RunResults
from reports.summary import results_settings
from workbench.protocols.conditions import condition_label
from workbench.run_folder import REPORT_PAGE, RESULTS_STAGE, RunFolder, RunFolderError

if TYPE_CHECKING:
    from workbench.config import RunConfig

TASK_KEYS = ("name", "categories", "context_conditions", "polarities")
"""``[task]`` keys that choose which items a run asks: runs that differ in one are not compared."""

SAMPLE_KEYS = ("limit_per_category", "seed", "path")
"""``[task]`` keys that only sample or locate the items: they may differ (the page says so)."""

RESULTS_KEYS = {
    "bbq": ("unparsed", "bbq_convention", "level"),
    "bbq-sample": ("unparsed", "bbq_convention", "level"),
    "winogender": ("unparsed", "winogender_rule", "level"),
    "realtoxicity": ("level",),
}
"""Per task, the ``[results]`` keys that change what its metrics mean: runs that differ in one are not compared."""

DEFAULT_FOLDER_PREFIX = "compare-"
"""Without ``-o``, the page goes to ``<first run's parent>/compare-<run>-vs-<run>/``."""

MIN_RUNS = 2


class ComparisonError(ValueError):
    """Run folders that cannot be compared: too few, one given twice, or of different tasks, metrics or conditions."""


@dataclass(frozen=True)
class ComparedRun:
    """One run of a comparison.

    Attributes:
        label: its name in the comparison (the folder's name; its path when two folders share a name).
        results: its tables.
        config: its resolved configuration (``config.toml``).
        n_layers: its model's number of blocks, ``None`` when its cache does not show it.
        depth_unknown: why ``n_layers`` is ``None`` (one line), else ``None``.
    """

    label: str
    results: RunResults
    config: RunConfig
    n_layers: int | None
    depth_unknown: str | None = None

    @property
    def rounds(self) -> tuple[int, ...]:
        """The rounds of its ``results/behaviour.csv``."""
        return tuple(sorted({row.round for row in self.results.behaviour or ()}))

    @property
    def conditions(self) -> tuple[str, ...]:
        """The conditions of its ``results/behaviour.csv``, in design order."""
        return tuple(condition_order(row.condition for row in self.results.behaviour or ()))


@dataclass(frozen=True)
class Comparison:
    """Runs found comparable, with what they share.

    Attributes:
        runs: the runs, in the order given (the first is the reference of the paired differences).
        conditions: the conditions every run has, in design order.
        notes: what differs without making the comparison meaningless (plain text, one sentence each).
        level, n_boot, seed: the intervals' level and the bootstrap settings of the reference run.
    """

    runs: tuple[ComparedRun, ...]
    conditions: tuple[str, ...]
    notes: tuple[str, ...]
    level: float
    n_boot: int
    seed: int


def load_comparison(paths: Sequence[Path]) -> Comparison:
    """Load the run folders ``paths`` (or their ``cache.h5``) and check that they can be compared.

    Raises:
        ComparisonError: the runs cannot be compared (module docstring); the message names the runs and the key.
        RunFolderError / TableFormatError / ConfigError: a run folder that is missing, lacks ``config.toml``
            or ``results/behaviour.csv``, or holds a malformed file.
    """
    if len(paths) < MIN_RUNS:
        raise ComparisonError(
            f"compare needs at least {MIN_RUNS} run folders, got {len(paths)}; "
            "pass them all: workbench compare runs/a runs/b -o DIR"
        )
    folders = [RunFolder.at(Path(path)) for path in paths]
    seen: dict[Path, Path] = {}
    for path, folder in zip(paths, folders):
        resolved = folder.root.resolve()
        if resolved in seen:
            raise ComparisonError(f"{seen[resolved]} and {path} are the same run folder; give each run once")
        seen[resolved] = Path(path)
    labels = _labels([Path(path) for path in paths], folders)
    runs = tuple(_load_run(label, folder) for label, folder in zip(labels, folders))
    _check_task(runs)
    _check_results(runs)
    conditions = _shared_conditions(runs)
    level, n_boot, seed = results_settings(runs[0].results.config)
    return Comparison(runs, conditions, _notes(runs, conditions), level, n_boot, seed)


def build_comparison(paths: Sequence[Path], out_dir: Path | None = None) -> Path:
    """Write the comparison page of the run folders ``paths`` into ``out_dir``; return its path.

    ``out_dir`` defaults to :func:`default_output`. The page opens offline (plotly.js embedded once).
    Raises what :func:`load_comparison` raises, before anything is written.
    """
    import plotly.offline

    from reports.compare_page import render_comparison_page

    comparison = load_comparison(paths)
    target = out_dir if out_dir is not None else default_output(comparison)
    page = render_comparison_page(comparison, plotly.offline.get_plotlyjs())
    target.mkdir(parents=True, exist_ok=True)
    path = target / REPORT_PAGE
    path.write_text(page, encoding="utf-8")
    return path


def default_output(comparison: Comparison) -> Path:
    """``<first run's parent>/compare-<label>-vs-<label>...``: the comparison's folder when ``-o`` is not given."""
    names = "-vs-".join(re.sub(r"[^A-Za-z0-9._-]+", "_", run.label) for run in comparison.runs)
    return comparison.runs[0].results.run_dir.parent / f"{DEFAULT_FOLDER_PREFIX}{names}"


def _labels(paths: Sequence[Path], folders: Sequence[RunFolder]) -> list[str]:
    """Each run's folder name, or the path as given for every run whose folder name another run shares."""
    names = [folder.root.resolve().name for folder in folders]
    return [str(path) if names.count(name) > 1 else name for path, name in zip(paths, names)]


def _load_run(label: str, folder: RunFolder) -> ComparedRun:
    from workbench.config import RunConfig

    results = RunResults.load(folder.root)
    if not folder.config.is_file():
        raise RunFolderError(
            f"{folder.config} not found: compare reads each run's task and [results] settings from it; "
            "pass run folders written by `workbench run CONFIG`"
        )
    absent = results.absence("behaviour")
    if absent is not None:
        raise RunFolderError(f"{folder.root}: {absent}; compare draws every run's behaviour")
    config = RunConfig.of_run(folder.root)
    n_layers, unknown = _model_depth(folder)
    return ComparedRun(label, results, config, n_layers, unknown)


def _model_depth(folder: RunFolder) -> tuple[int | None, str | None]:
    """The number of blocks of the run's model as its cache proves it (``probes.cache_reading.model_depth``)."""
    from probes.cache_reading import model_depth
    from probes.errors import CacheSiteError

    if not folder.cache.is_file():
        return None, f"{folder.cache} not found (the model's depth is read from the run's cache)"
    try:
        with open_cache(folder.cache, expect="run", strict=False) as reader:
            return model_depth(reader), None
    except (CacheFormatError, CacheSiteError) as error:
        return None, " ".join(str(error).split())


def _values_line(runs: Sequence[ComparedRun], values: Sequence[object]) -> str:
    return "; ".join(f"{run.label}: {_shown(value)}" for run, value in zip(runs, values))


def _shown(value: object) -> str:
    if value is None:
        return "not set"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _run_names(runs: Sequence[ComparedRun]) -> str:
    return ", ".join(run.label for run in runs)


def _check_task(runs: Sequence[ComparedRun]) -> None:
    for key in TASK_KEYS:
        values = [getattr(run.config.task, key) for run in runs]
        if len(set(values)) > 1:
            raise ComparisonError(
                f"cannot compare {_run_names(runs)}: [task] {key} differs ({_values_line(runs, values)}); "
                "compare runs of one task over the same items (only [task] "
                f"{', '.join(SAMPLE_KEYS)} may differ)"
            )


def _check_results(runs: Sequence[ComparedRun]) -> None:
    task = runs[0].config.task.name
    for key in RESULTS_KEYS.get(task, ("unparsed", "bbq_convention", "winogender_rule", "level")):
        values = [getattr(run.config.results, key) for run in runs]
        if len(set(values)) > 1:
            raise ComparisonError(
                f"cannot compare {_run_names(runs)}: [results] {key} differs ({_values_line(runs, values)}), "
                f"so the {task} metrics mean different things; set it alike in each run's config.toml and rerun "
                f"`{RESULTS_STAGE} RUN` on the others"
            )


def _shared_conditions(runs: Sequence[ComparedRun]) -> tuple[str, ...]:
    shared = set(runs[0].conditions).intersection(*(run.conditions for run in runs[1:]))
    if not shared:
        listed = "; ".join(f"{run.label}: {', '.join(run.conditions)}" for run in runs)
        raise ComparisonError(
            f"cannot compare {_run_names(runs)}: no condition is in every run ({listed}); "
            "compare runs that share at least one [protocol] instruction x cot x feedback condition"
        )
    return tuple(condition_order(shared))


def _notes(runs: Sequence[ComparedRun], conditions: Sequence[str]) -> tuple[str, ...]:
    """What differs between the runs without making the comparison meaningless, one sentence each."""
    notes = []
    for condition in condition_order(name for run in runs for name in run.conditions):
        if condition not in conditions:
            having = [run.label for run in runs if condition in run.conditions]
            notes.append(
                f"The condition {condition_label(condition)} ({condition}) is only in {', '.join(having)}: "
                "it is left out of the side-by-side figures and tables."
            )
    for key in SAMPLE_KEYS:
        values = [getattr(run.config.task, key) for run in runs]
        if len(set(values)) > 1:
            notes.append(
                f"[task] {key} differs ({_values_line(runs, values)}): the runs may have asked different "
                "items of the same task; paired differences use only the items both answered."
            )
    rounds = [run.rounds for run in runs]
    if len(set(rounds)) > 1:
        spans = [f"{r[0]}–{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in rounds]
        notes.append(f"The runs have different rounds ({_values_line(runs, spans)}); each run's last round is its own.")
    for run in runs:
        if run.depth_unknown is not None:
            notes.append(
                f"The model depth of {run.label} is unknown ({run.depth_unknown}): "
                "it is left out of the figures on the relative depth axis."
            )
    return tuple(notes)
