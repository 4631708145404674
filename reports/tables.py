"""Typed rows of the run folder's tidy CSV tables and the parser that reads them.

The tables and their columns are fixed by ``workbench/RUN_FOLDER.md``. Each row type below is one
observation of one table; :func:`read_table` turns a CSV file into a tuple of such rows, parsing
numbers, turning empty interval cells into ``None`` and naming the file and line of any bad cell.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar


class TableFormatError(ValueError):
    """A tidy CSV table of the run folder does not follow ``workbench/RUN_FOLDER.md``."""


@dataclass(frozen=True)
class BehaviourMetric:
    """One behavioural metric of one condition at one round (``results/behaviour.csv``).

    ``value`` is in the metric's own unit (accuracy and ECE: fractions in [0, 1]; bias score:
    [-1, 1]; toxicity: mean score in [0, 1]; uncertainty: mean token NLL in nats).
    ``ci_low``/``ci_high`` bound its 95% bootstrap interval over ``n`` items, ``None`` when
    not computable.
    """

    condition: str
    round: int
    metric: str
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass(frozen=True)
class ConvergenceRound:
    """The round from which a metric of one condition stops changing (``results/convergence.csv``).

    ``convergence_round`` is 0-based, ``None`` when the metric never converged within the run.
    """

    condition: str
    metric: str
    convergence_round: int | None


@dataclass(frozen=True)
class AnswerFlip:
    """How many items moved from one answer to another between two rounds (``results/flips.csv``).

    Answers are option letters ``a``, ``b``, ... or ``unparsed``.
    """

    condition: str
    round_from: int
    round_to: int
    answer_from: str
    answer_to: str
    count: int


@dataclass(frozen=True)
class CalibrationBin:
    """One confidence bin of a reliability diagram (``results/calibration.csv``).

    ``bin_low``/``bin_high`` and ``mean_confidence`` are probabilities in [0, 1]; ``accuracy`` is
    the fraction correct of the ``count`` items in the bin.
    """

    condition: str
    round: int
    bin_low: float
    bin_high: float
    mean_confidence: float
    accuracy: float
    count: int


@dataclass(frozen=True)
class InteractionEffect:
    """One main effect or interaction contrast of the instruction x CoT x feedback design.

    Read from ``results/interactions.csv`` (behaviour) or ``probes/interactions.csv``
    (hidden-state morality). ``estimate`` is in the unit of ``outcome``; ``ci_low``/``ci_high``
    bound its 95% interval, ``None`` when not computable.
    """

    outcome: str
    effect: str
    estimate: float
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class ItemAnswer:
    """The answer one item received in one condition at one round (``results/items.csv``).

    ``prompt_excerpt`` and ``answer`` are raw dataset/model text: escape before any HTML use.
    ``predicted`` is an option letter or ``unparsed``; ``correct`` is ``None`` for tasks without
    a gold answer.
    """

    item_id: str
    condition: str
    round: int
    prompt_excerpt: str
    answer: str
    predicted: str
    correct: bool | None


@dataclass(frozen=True)
class LayerScore:
    """A per-layer probe score of one arm (``probes/layer_scores.csv``).

    ``arm`` is ``probe``, ``shuffled_labels`` or ``random_direction``; ``metric`` is ``accuracy``,
    ``auc`` or ``ece`` (all in [0, 1]).
    """

    site: str
    position: str
    layer: int
    arm: str
    metric: str
    value: float
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class MoralityLevel:
    """Hidden-state morality of one condition, round, site and layer (``probes/morality.csv``).

    ``measure`` is ``probe_probability`` (in [0, 1]) or ``cosine`` (in [-1, 1]), averaged over
    ``n`` items.
    """

    condition: str
    round: int
    site: str
    layer: int
    measure: str
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int


@dataclass(frozen=True)
class ConceptUncertainty:
    """Latent-concept activation and uncertainty of one item at one round.

    Read from ``probes/concept_uncertainty.csv``; ``concept_activation`` is a cosine in [-1, 1],
    ``uncertainty`` a mean token NLL in nats.
    """

    condition: str
    round: int
    item_id: str
    concept_activation: float
    uncertainty: float


@dataclass(frozen=True)
class HeadEffect:
    """Attribution effect of one attention head in one checkpoint (``attribution/heads.csv``)."""

    checkpoint: str
    method: str
    layer: int
    head: int
    effect: float


@dataclass(frozen=True)
class BiasLevel:
    """A bias measure of one checkpoint over ``n`` items (``attribution/bias_levels.csv``)."""

    checkpoint: str
    measure: str
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda cell: None if cell.strip() == "" else parse(cell)


def _boolean(cell: str) -> bool:
    text = cell.strip().lower()
    if text in ("1", "true"):
        return True
    if text in ("0", "false"):
        return False
    raise ValueError(cell)


# Field annotations (strings under `from __future__ import annotations`) -> cell parser and
# the words used in error messages.
_CELL_PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "str": (str, "text"),
    "int": (int, "an integer"),
    "float": (float, "a number"),
    "int | None": (_optional(int), "an integer or an empty cell"),
    "float | None": (_optional(float), "a number or an empty cell"),
    "bool | None": (_optional(_boolean), "1/0/true/false or an empty cell"),
}

Row = TypeVar("Row")


def read_table(path: Path, row_type: type[Row]) -> tuple[Row, ...]:
    """Read one tidy CSV table into rows of ``row_type`` (a dataclass above), in file order.

    Extra columns are ignored; a missing column, a short row or a cell that does not parse
    raises :class:`TableFormatError` naming the file, the line and the fix.
    """
    fields = dataclasses.fields(row_type)  # type: ignore[arg-type]
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames
        if header is None:
            raise TableFormatError(
                f"{path}: the file is empty; expected the header "
                f"{','.join(f.name for f in fields)} (rerun the stage that writes it)"
            )
        missing = [f.name for f in fields if f.name not in header]
        if missing:
            raise TableFormatError(
                f"{path}:1: missing column(s) {', '.join(missing)}; the header must hold "
                f"{','.join(f.name for f in fields)} (see workbench/RUN_FOLDER.md)"
            )
        rows = []
        for cells in reader:
            values = {}
            for field in fields:
                parse, expected = _CELL_PARSERS[str(field.type)]
                cell = cells[field.name]
                if cell is None:
                    raise TableFormatError(
                        f"{path}:{reader.line_num}: the row has fewer cells than the header; "
                        "fix the row or rerun the stage that wrote it"
                    )
                try:
                    values[field.name] = parse(cell)
                except ValueError:
                    raise TableFormatError(
                        f"{path}:{reader.line_num}: column {field.name!r} holds {cell!r}, "
                        f"expected {expected}; fix the row or rerun the stage that wrote it"
                    ) from None
            rows.append(row_type(**values))
    return tuple(rows)
