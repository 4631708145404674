"""The run folder's contract: the name of every path a stage writes, and the one error for a bad folder.

One run = one folder (``runs/<name>/``, workbench/RUN_FOLDER.md). :class:`RunFolder` names its
paths, :data:`RUN_TABLES` its tidy CSV tables (where each lives, its row type of
:mod:`workbench.run_tables` and the command that writes it), and :class:`RunFolderError` is what a
stage raises for a folder that lacks what it needs. This module is the only one that spells those
file and folder names. It imports only the row types (which import only the standard library and
:mod:`workbench.metrics.undefined`), so that ``workbench``, ``probes`` and ``reports`` can all import it
without a cycle.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.run_tables import (
    AnswerFlip,
    BBQCategoryMetric,
    BehaviourMetric,
    BiasLevel,
    CalibrationBin,
    ConceptUncertainty,
    ConvergenceRound,
    DebiasedHead,
    HeadEffect,
    InteractionEffect,
    ItemAnswer,
    LayerScore,
    MoralityLevel,
    PairedTest,
    SelectionCandidate,
    SteeringEffect,
    columns_of,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_CONFIG = "config.toml"
_CACHE = "cache.h5"
_SHARDS = "shards"
_SHARD_NAME = re.compile(r"cache\.rank(?P<rank>\d+)-of-(?P<world_size>\d+)\.h5")
_RESULTS = "results"
_PROBES = "probes"
_CONCEPT_CACHE = "concepts.h5"
_PROBE_SUMMARY = "summary.json"
_ATTRIBUTION = "attribution"
_CHECKPOINTS = "checkpoints"
_REPORT = "report"
REPORT_PAGE = "index.html"
"""The report's file name, in ``report/`` or in the folder ``workbench report -o`` names."""
REPORT_FIGURES = "figures"
REPORT_SUMMARY = "summary.pdf"
"""Beside the report page, what ``workbench report --export`` writes: ``figures/<anchor>.<format>``
and the one-page PDF summary."""

RESULTS_STAGE = "workbench results"
PROBE_STAGE = "workbench probe"
ATTRIBUTE_STAGE = "workbench attribute"
BIAS_STAGE = "workbench bias"
SELECT_STAGE = "workbench select"


class RunFolderError(ValueError):
    """A path that is not the run folder a stage needs: missing, a file, or without the files of an earlier stage."""


@dataclass(frozen=True)
class RunTable:
    """One tidy CSV table of the run folder.

    Attributes:
        folder: the run folder's sub-folder that holds it (``results``, ``probes``, ``attribution``).
        file_name: its file name in that folder.
        row_type: the dataclass of one row (:mod:`workbench.run_tables`); its fields are the columns.
        stage: the command that writes it, as the user types it (``workbench results``).
    """

    folder: str
    file_name: str
    row_type: type[DataclassInstance]
    stage: str

    @property
    def path(self) -> str:
        """Its path relative to the run folder, ``/``-separated (``results/behaviour.csv``)."""
        return f"{self.folder}/{self.file_name}"

    @property
    def stem(self) -> str:
        """Its file name without ``.csv`` (``behaviour``)."""
        return Path(self.file_name).stem

    @property
    def columns(self) -> tuple[str, ...]:
        """Its header: the row type's field names, in order."""
        return columns_of(self.row_type)


# Every table of the run folder, by name, in the order of workbench/RUN_FOLDER.md.
RUN_TABLES: dict[str, RunTable] = {
    "behaviour": RunTable(_RESULTS, "behaviour.csv", BehaviourMetric, RESULTS_STAGE),
    "convergence": RunTable(_RESULTS, "convergence.csv", ConvergenceRound, RESULTS_STAGE),
    "flips": RunTable(_RESULTS, "flips.csv", AnswerFlip, RESULTS_STAGE),
    "calibration": RunTable(_RESULTS, "calibration.csv", CalibrationBin, RESULTS_STAGE),
    "paired_tests": RunTable(_RESULTS, "paired_tests.csv", PairedTest, RESULTS_STAGE),
    "behaviour_interactions": RunTable(_RESULTS, "interactions.csv", InteractionEffect, RESULTS_STAGE),
    "items": RunTable(_RESULTS, "items.csv", ItemAnswer, RESULTS_STAGE),
    "bbq_categories": RunTable(_RESULTS, "bbq_categories.csv", BBQCategoryMetric, RESULTS_STAGE),
    "layer_scores": RunTable(_PROBES, "layer_scores.csv", LayerScore, PROBE_STAGE),
    "morality": RunTable(_PROBES, "morality.csv", MoralityLevel, PROBE_STAGE),
    "concept_uncertainty": RunTable(_PROBES, "concept_uncertainty.csv", ConceptUncertainty, PROBE_STAGE),
    "steering": RunTable(_PROBES, "steering.csv", SteeringEffect, PROBE_STAGE),
    "probe_interactions": RunTable(_PROBES, "interactions.csv", InteractionEffect, PROBE_STAGE),
    "heads": RunTable(_ATTRIBUTION, "heads.csv", HeadEffect, ATTRIBUTE_STAGE),
    "bias_levels": RunTable(_ATTRIBUTION, "bias_levels.csv", BiasLevel, BIAS_STAGE),
    "selected_heads": RunTable(_ATTRIBUTION, "selected_heads.csv", DebiasedHead, ATTRIBUTE_STAGE),
    "selection": RunTable(_ATTRIBUTION, "selection.csv", SelectionCandidate, SELECT_STAGE),
}


def tables_written_by(stage: str) -> tuple[RunTable, ...]:
    """The tables of :data:`RUN_TABLES` that ``stage`` (e.g. :data:`RESULTS_STAGE`) writes, in order."""
    return tuple(table for table in RUN_TABLES.values() if table.stage == stage)


@dataclass(frozen=True)
class RunFolder:
    """The named paths of one run folder; building one creates and checks nothing.

    Attributes:
        root: the run folder (``runs/<name>``).
    """

    root: Path

    @classmethod
    def at(cls, path: Path) -> RunFolder:
        """The run folder ``path``, or the one holding ``path`` when that is a run's existing ``cache.h5``."""
        path = Path(path)
        return cls(path.parent if path.is_file() and path.name == _CACHE else path)

    @staticmethod
    def cache_file(path: Path) -> Path:
        """The cache a ``workbench cache`` command reads: ``path`` itself when it is a file (a run's
        ``cache.h5``, a concept cache, or one rank's shard), else the cache of the run folder ``path``.

        Raises:
            RunFolderError: ``path`` is neither a file nor a run folder holding its cache.
        """
        path = Path(path)
        return path if path.is_file() else RunFolder.with_cache(path).cache

    @classmethod
    def with_cache(cls, path: Path) -> RunFolder:
        """The run folder ``path`` (a folder or its ``cache.h5``), whose cache must exist.

        Raises:
            RunFolderError: ``path`` does not exist, is a file other than a ``cache.h5``, or is a
                folder without one.
        """
        path = Path(path)
        if path.is_file() and path.name != _CACHE:
            raise RunFolderError(f"{path} is not a run's {_CACHE}; pass the run folder (runs/<name>) or its {_CACHE}")
        folder = cls.at(path)
        if not folder.cache.is_file():
            missing = folder.cache if path.is_dir() else path
            raise RunFolderError(f"{missing} does not exist; run `workbench run CONFIG` first")
        return folder

    @property
    def config(self) -> Path:
        """``config.toml``: the resolved configuration, every default written out."""
        return self.root / _CONFIG

    def read_config(self) -> dict[str, Any] | None:
        """The parsed ``config.toml`` (``None`` when the run folder has none yet).

        Raises:
            RunFolderError: the file is not valid TOML.
        """
        if not self.config.is_file():
            return None
        try:
            with self.config.open("rb") as handle:
                return tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise RunFolderError(
                f"{self.config}: not valid TOML ({error}); restore the file `workbench run` wrote"
            ) from None

    @property
    def cache(self) -> Path:
        """``cache.h5``: records and activations (activations_cache/FORMAT.md)."""
        return self.root / _CACHE

    @property
    def shards(self) -> Path:
        """``shards/``: per-rank caches of a multi-process run, joined into ``cache.h5`` by ``join_shards``."""
        return self.root / _SHARDS

    def shard(self, rank: int, world_size: int) -> Path:
        """``shards/cache.rank<rank>-of-<world_size>.h5``: the cache rank ``rank`` of a ``world_size``-rank run
        writes (docs/scale-out.md)."""
        return self.shards / f"cache.rank{rank}-of-{world_size}.h5"

    def shard_files(self) -> dict[Path, tuple[int, int]]:
        """The per-rank caches present in ``shards/``: path -> (rank, world size), by world size, then rank.

        Only names :meth:`shard` writes count (a ``.lock`` or ``.creating`` file beside them does not).
        """
        if not self.shards.is_dir():
            return {}
        found = {}
        for path in self.shards.iterdir():
            match = _SHARD_NAME.fullmatch(path.name)
            if match is not None and path.is_file():
                found[path] = (int(match["rank"]), int(match["world_size"]))
        return dict(sorted(found.items(), key=lambda entry: (entry[1][1], entry[1][0])))

    @property
    def results(self) -> Path:
        """``results/``: the behavioural tables (``workbench results``)."""
        return self.root / _RESULTS

    @property
    def probes(self) -> Path:
        """``probes/``: fitted probes and their tables (``workbench probe``)."""
        return self.root / _PROBES

    @property
    def concept_cache(self) -> Path:
        """``probes/concepts.h5``: the concept set's activations (an activation cache of its own)."""
        return self.probes / _CONCEPT_CACHE

    @property
    def probe_summary(self) -> Path:
        """``probes/summary.json``: layer band, concept-uncertainty correlations, concept-set sizes."""
        return self.probes / _PROBE_SUMMARY

    @property
    def attribution(self) -> Path:
        """``attribution/``: head attribution, bias levels and the sample selection (``workbench attribute`` /
        ``bias`` / ``select``)."""
        return self.root / _ATTRIBUTION

    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``: debiased and fine-tuned models (``workbench debias`` / ``finetune``)."""
        return self.root / _CHECKPOINTS

    def checkpoint(self, name: str) -> Path:
        """``checkpoints/<name>/``: one saved checkpoint."""
        return self.checkpoints / name

    @property
    def report(self) -> Path:
        """``report/``: the interactive report (``workbench report``)."""
        return self.root / _REPORT

    @property
    def report_page(self) -> Path:
        """``report/index.html``."""
        return self.report / REPORT_PAGE

    def table(self, name: str) -> Path:
        """The CSV file of the table ``name`` of :data:`RUN_TABLES` (``"behaviour"`` -> ``results/behaviour.csv``)."""
        return self.root / RUN_TABLES[name].path
