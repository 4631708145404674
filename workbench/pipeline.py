"""The stages of a run, each reading the previous stage's files in the run folder.

``run`` (model -> cache.h5) -> ``results`` (cache -> results/*.csv) -> ``probe``
(cache -> probes/) -> ``report`` (everything -> report/index.html). Every stage can be rerun on
its own; none re-runs the model unless asked.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from activations_cache import open_cache
from workbench.config import RunConfig
from workbench.models.loading import load_model
from workbench.results import ResultsConfig, ResultTables, compute_results, write_results
from workbench.runner import ExperimentRunner
from workbench.tasks.registry import load_configured_task

CACHE_FILE = "cache.h5"
CONFIG_FILE = "config.toml"


class RunFolderError(ValueError):
    """A run folder that lacks what a stage needs."""


def resolve_cache(run: Path) -> Path:
    """``run`` may be a run folder or its cache file; return the cache path (which must exist)."""
    path = run / CACHE_FILE if run.is_dir() else run
    if not path.is_file():
        raise RunFolderError(f"{path} does not exist; run `workbench run CONFIG` first")
    return path


def run_stage(
    config: RunConfig,
    *,
    overwrite: bool = False,
    on_model_loaded: Callable[[ExperimentRunner], Callable[[int], None] | None] | None = None,
) -> Path:
    """Generate, score and capture every record of ``config`` into ``run_dir/cache.h5``; return the run dir."""
    run_dir = config.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} exists and is not a folder; choose another --name or --output-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(config.to_toml(), encoding="utf-8")
    model = load_model(
        config.model.spec,
        device=config.model.device,
        dtype=config.model.dtype,
        attn_implementation=config.model.attn_implementation,
        trust_remote_code=config.model.trust_remote_code,
    )
    runner = ExperimentRunner(config, model, load_configured_task(config.task))
    progress = on_model_loaded(runner) if on_model_loaded is not None else None
    runner.run(run_dir / CACHE_FILE, overwrite=overwrite, progress=progress)
    return run_dir


def record_rows(cache_path: Path) -> list[dict[str, Any]]:
    """The cache's records as the row dicts :func:`workbench.results.compute_results` takes."""
    with open_cache(cache_path) as reader:
        columns = reader.records
        count = len(columns["record_key"])
        rows = []
        for index in range(count):
            probs = np.asarray(columns["option_probs"][index], dtype=float)
            toxicity = float(columns["toxicity"][index])
            rows.append(
                {
                    "item_id": str(columns["item_id"][index]),
                    "condition": str(columns["condition"][index]),
                    "round": int(columns["round"][index]),
                    "category": str(columns["category"][index]),
                    "task": str(columns["task"][index]),
                    "context_condition": str(columns["context_condition"][index]) or None,
                    "question_polarity": str(columns["question_polarity"][index]) or None,
                    "predicted": _optional_index(columns["predicted"][index]),
                    "gold": _optional_index(columns["gold"][index]),
                    "target_index": _optional_index(columns["target_index"][index]),
                    "unknown_index": _optional_index(columns["unknown_index"][index]),
                    "option_probs": None if np.isnan(probs).all() else probs[~np.isnan(probs)].tolist(),
                    "answer": str(columns["answer"][index]),
                    "prompt": str(columns["prompt"][index]),
                    "toxicity": None if np.isnan(toxicity) else toxicity,
                    "semantic_uncertainty": _optional_float(columns["semantic_uncertainty"][index]),
                    "pairwise_distinguish_accuracy": _optional_float(columns["pairwise_distinguish_accuracy"][index]),
                    "distinguish_correct": _distinguish_correct(
                        columns["distinguish_predicted"][index], columns["distinguish_gold"][index]
                    ),
                }
            )
    return rows


def _optional_index(value: Any) -> int | None:
    return None if int(value) < 0 else int(value)


def _optional_float(value: Any) -> float | None:
    return None if np.isnan(float(value)) else float(value)


def _distinguish_correct(predicted: Any, gold: Any) -> float | None:
    return None if int(gold) < 0 else float(int(predicted) == int(gold))


def results_stage(run: Path, config: ResultsConfig | None = None) -> tuple[ResultTables, list[Path]]:
    """Compute the behavioural tables of a run and write them to ``results/``."""
    cache_path = resolve_cache(run)
    if config is None:
        config = run_config(cache_path.parent).results
    tables = compute_results(record_rows(cache_path), config)
    return tables, write_results(tables, cache_path.parent / "results")


def run_config(run_dir: Path) -> RunConfig:
    """The configuration a run folder recorded (defaults when it has no config.toml)."""
    path = run_dir / CONFIG_FILE
    return RunConfig.load(path) if path.is_file() else RunConfig()
