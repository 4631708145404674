"""A run folder loaded into typed tables: the single input of every report figure."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from reports.figures.style import condition_order
from reports.tables import read_table
from workbench.run_folder import RUN_TABLES, RunFolder, RunFolderError, RunTable
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
    SteeringEffect,
)


@dataclass(frozen=True)
class RunResults:
    """Every table of one run folder that the report draws; a table is ``None`` when its file does not exist.

    ``config`` is the parsed ``config.toml`` (``None`` when absent). Each other field is named as
    its table in :data:`workbench.run_folder.RUN_TABLES` and holds a tuple of its row type
    (:mod:`workbench.run_tables`), in file order.
    """

    run_dir: Path
    config: dict[str, Any] | None
    behaviour: tuple[BehaviourMetric, ...] | None = None
    convergence: tuple[ConvergenceRound, ...] | None = None
    flips: tuple[AnswerFlip, ...] | None = None
    calibration: tuple[CalibrationBin, ...] | None = None
    paired_tests: tuple[PairedTest, ...] | None = None
    behaviour_interactions: tuple[InteractionEffect, ...] | None = None
    items: tuple[ItemAnswer, ...] | None = None
    bbq_categories: tuple[BBQCategoryMetric, ...] | None = None
    layer_scores: tuple[LayerScore, ...] | None = None
    morality: tuple[MoralityLevel, ...] | None = None
    concept_uncertainty: tuple[ConceptUncertainty, ...] | None = None
    steering: tuple[SteeringEffect, ...] | None = None
    probe_interactions: tuple[InteractionEffect, ...] | None = None
    heads: tuple[HeadEffect, ...] | None = None
    bias_levels: tuple[BiasLevel, ...] | None = None
    selected_heads: tuple[DebiasedHead, ...] | None = None

    @classmethod
    def load(cls, run: Path) -> RunResults:
        """Load the run folder ``run`` (or the folder of ``run`` when it is the run's cache file).

        Raises :class:`RunFolderError` when the folder does not exist or holds neither
        ``results/`` nor ``cache.h5``, and ``TableFormatError`` / :class:`RunFolderError` for a
        malformed table or ``config.toml``.
        """
        folder = RunFolder.at(run)
        if not folder.root.is_dir():
            raise RunFolderError(
                f"{run}: no such run folder; run `workbench run CONFIG` first, "
                "then pass the folder it writes (runs/<name>)"
            )
        if not folder.results.is_dir() and not folder.cache.is_file():
            raise RunFolderError(
                f"{folder.root}: holds neither {folder.results.name}/ nor {folder.cache.name}; run `workbench run "
                "CONFIG` first, then pass the folder it writes (runs/<name>)"
            )
        tables: dict[str, Any] = {
            name: read_table(folder.table(name), table.row_type)
            for name, table in REPORT_TABLES.items()
            if folder.table(name).is_file()
        }
        return cls(run_dir=folder.root, config=folder.read_config(), **tables)

    @property
    def name(self) -> str:
        """The run's name: its folder's name."""
        return self.run_dir.resolve().name

    def absence(self, name: str) -> str | None:
        """Why the table ``name`` of :data:`REPORT_TABLES` cannot be drawn, or ``None`` if it has rows.

        An absent table's reason names the command that writes it.
        """
        table = REPORT_TABLES[name]
        rows = getattr(self, name)
        if rows is None:
            return f"{table.path} not found (run `{table.stage}` on this run first)"
        if not rows:
            return f"{table.path} has no rows"
        return None

    @property
    def conditions(self) -> tuple[str, ...]:
        """The run's condition list: every condition named in any of its tables, in design order.

        Design order (:func:`reports.figures.style.condition_order`): no instruction first, then
        the other instructions in ``workbench.protocols.conditions.INSTRUCTIONS`` order, CoT off
        before on, feedback off before on. Every figure colours the ``i``-th of them alike.
        """
        names: set[str] = set()
        for table in (
            self.behaviour,
            self.convergence,
            self.flips,
            self.calibration,
            self.items,
            self.bbq_categories,
            self.morality,
            self.concept_uncertainty,
        ):
            names.update(row.condition for row in table or ())
        for test in self.paired_tests or ():
            names.update((test.condition_a, test.condition_b))
        return tuple(condition_order(names))


# The tables the report reads: those RunResults has a field for, in the order of RUN_TABLES.
REPORT_TABLES: dict[str, RunTable] = {
    name: table for name, table in RUN_TABLES.items() if name in {field.name for field in fields(RunResults)}
}
