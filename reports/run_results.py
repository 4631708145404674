"""A run folder loaded into typed tables: the single input of every report figure."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reports.tables import (
    AnswerFlip,
    BehaviourMetric,
    BiasLevel,
    CalibrationBin,
    ConceptUncertainty,
    ConvergenceRound,
    HeadEffect,
    InteractionEffect,
    ItemAnswer,
    LayerScore,
    MoralityLevel,
    read_table,
)

CACHE_FILE = "cache.h5"
CONFIG_FILE = "config.toml"


class RunFolderError(ValueError):
    """The path given is not a run folder that a report can be built from."""


@dataclass(frozen=True)
class RunTable:
    """Where one table lives in the run folder and which ``workbench`` stage writes it."""

    path: str
    row_type: type
    stage: str


# RunResults field name -> table; paths as in workbench/RUN_FOLDER.md.
RUN_TABLES: dict[str, RunTable] = {
    "behaviour": RunTable("results/behaviour.csv", BehaviourMetric, "workbench results"),
    "convergence": RunTable("results/convergence.csv", ConvergenceRound, "workbench results"),
    "flips": RunTable("results/flips.csv", AnswerFlip, "workbench results"),
    "calibration": RunTable("results/calibration.csv", CalibrationBin, "workbench results"),
    "behaviour_interactions": RunTable("results/interactions.csv", InteractionEffect, "workbench results"),
    "items": RunTable("results/items.csv", ItemAnswer, "workbench results"),
    "layer_scores": RunTable("probes/layer_scores.csv", LayerScore, "workbench probe"),
    "morality": RunTable("probes/morality.csv", MoralityLevel, "workbench probe"),
    "concept_uncertainty": RunTable("probes/concept_uncertainty.csv", ConceptUncertainty, "workbench probe"),
    "probe_interactions": RunTable("probes/interactions.csv", InteractionEffect, "workbench probe"),
    "heads": RunTable("attribution/heads.csv", HeadEffect, "workbench attribute"),
    "bias_levels": RunTable("attribution/bias_levels.csv", BiasLevel, "workbench bias"),
}


@dataclass(frozen=True)
class RunResults:
    """Every table of one run folder; a table is ``None`` when its file does not exist.

    ``config`` is the parsed ``config.toml`` (``None`` when absent). Tables are tuples of the
    row types of :mod:`reports.tables`, in file order.
    """

    run_dir: Path
    config: dict[str, Any] | None
    behaviour: tuple[BehaviourMetric, ...] | None = None
    convergence: tuple[ConvergenceRound, ...] | None = None
    flips: tuple[AnswerFlip, ...] | None = None
    calibration: tuple[CalibrationBin, ...] | None = None
    behaviour_interactions: tuple[InteractionEffect, ...] | None = None
    items: tuple[ItemAnswer, ...] | None = None
    layer_scores: tuple[LayerScore, ...] | None = None
    morality: tuple[MoralityLevel, ...] | None = None
    concept_uncertainty: tuple[ConceptUncertainty, ...] | None = None
    probe_interactions: tuple[InteractionEffect, ...] | None = None
    heads: tuple[HeadEffect, ...] | None = None
    bias_levels: tuple[BiasLevel, ...] | None = None

    @classmethod
    def load(cls, run: Path) -> RunResults:
        """Load the run folder ``run`` (or the folder of ``run`` when it is the run's cache file).

        Raises :class:`RunFolderError` when the folder does not exist or holds neither
        ``results/`` nor ``cache.h5``, and ``TableFormatError`` / :class:`RunFolderError` for a
        malformed table or ``config.toml``.
        """
        run_dir = run.parent if run.is_file() and run.name == CACHE_FILE else run
        if not run_dir.is_dir():
            raise RunFolderError(
                f"{run}: no such run folder; run `workbench run CONFIG` first, "
                "then pass the folder it writes (runs/<name>)"
            )
        if not (run_dir / "results").is_dir() and not (run_dir / CACHE_FILE).is_file():
            raise RunFolderError(
                f"{run_dir}: holds neither results/ nor {CACHE_FILE}; run `workbench run CONFIG` "
                "first, then pass the folder it writes (runs/<name>)"
            )
        tables = {
            name: read_table(run_dir / table.path, table.row_type)
            for name, table in RUN_TABLES.items()
            if (run_dir / table.path).is_file()
        }
        return cls(run_dir=run_dir, config=_read_config(run_dir / CONFIG_FILE), **tables)

    @property
    def name(self) -> str:
        """The run's name: its folder's name."""
        return self.run_dir.resolve().name


def _read_config(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise RunFolderError(f"{path}: not valid TOML ({error}); restore the file `workbench run` wrote") from None
