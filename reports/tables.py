"""Typed rows of the run folder's tidy CSV tables and the parser that reads them.

The tables and their columns are fixed by ``workbench/RUN_FOLDER.md``. Each row type below is one
observation of one table; :func:`read_table` turns a CSV file into a tuple of such rows, parsing
numbers, turning empty interval cells into ``None`` and naming the file and line of any bad cell.

Undefined is a value, not an error: a row type with an ``undefined_reason`` field
(:class:`BehaviourMetric`) reads an empty (or ``nan``) ``value`` as undefined, ``value`` ``None``
with its reason, and shows it as :func:`undefined_text` (``"undefined (no non-unknown answer)"``).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar


class TableFormatError(ValueError):
    """A tidy CSV table of the run folder does not follow ``workbench/RUN_FOLDER.md``."""


UNDEFINED = "undefined"
# The reason given to an undefined value whose table names none (a behaviour.csv written before
# the undefined_reason column existed, or a `nan` cell).
UNSTATED_REASON = "not computable"


def undefined_text(reason: str | None) -> str:
    """How an undefined value is shown: ``"undefined (no non-unknown answer)"``, or ``"undefined"``."""
    return f"{UNDEFINED} ({reason})" if reason else UNDEFINED


@dataclass(frozen=True)
class BehaviourMetric:
    """One behavioural metric of one condition at one round (``results/behaviour.csv``).

    ``value`` is in the metric's own unit (accuracy and ECE: fractions in [0, 1]; bias score:
    [-1, 1]; toxicity: mean score in [0, 1]; uncertainty: mean token NLL in nats), or ``None``
    when the metric is undefined for the cell; ``undefined_reason`` then says why (e.g. ``"no
    non-unknown answer"``) and is ``None`` otherwise. ``ci_low``/``ci_high`` bound its 95%
    bootstrap interval over ``n`` items, ``None`` when not computable or undefined.
    """

    condition: str
    round: int
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    undefined_reason: str | None = None

    @property
    def defined(self) -> bool:
        """Whether the metric has a value for this cell."""
        return self.value is not None

    def value_text(self, digits: int = 3) -> str:
        """``value`` with ``digits`` significant digits, or ``undefined (<reason>)``."""
        return f"{self.value:.{digits}g}" if self.value is not None else undefined_text(self.undefined_reason)


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
    ``uncertainty`` a mean token NLL in nats, ``None`` (an empty cell) when the record's
    uncertainty was not measured.
    """

    condition: str
    round: int
    item_id: str
    concept_activation: float
    uncertainty: float | None


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
    "str | None": (_optional(str), "text or an empty cell"),
    "int": (int, "an integer"),
    "float": (float, "a number"),
    "int | None": (_optional(int), "an integer or an empty cell"),
    "float | None": (_optional(float), "a number or an empty cell"),
    "bool | None": (_optional(_boolean), "1/0/true/false or an empty cell"),
}

Row = TypeVar("Row")


def _has_default(field: dataclasses.Field[Any]) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def _with_undefined(values: dict[str, Any], path: Path, line: int) -> dict[str, Any]:
    """``values`` of a row type with ``value`` and ``undefined_reason``, made consistent.

    An empty or ``nan`` value is undefined: its bounds become ``None`` and its reason defaults to
    :data:`UNSTATED_REASON`. A number together with a reason is a contradiction the writer never
    produces, so it is reported rather than guessed at.
    """
    value, reason = values["value"], values["undefined_reason"]
    if value is None or math.isnan(value):
        return {**values, "value": None, "ci_low": None, "ci_high": None, "undefined_reason": reason or UNSTATED_REASON}
    if reason is not None:
        raise TableFormatError(
            f"{path}:{line}: column 'undefined_reason' holds {reason!r} but 'value' holds {value!r}; "
            "empty one of the two cells or rerun the stage that wrote it"
        )
    return values


def read_table(path: Path, row_type: type[Row]) -> tuple[Row, ...]:
    """Read one tidy CSV table into rows of ``row_type`` (a dataclass above), in file order.

    Extra columns are ignored, and a column of a field with a default (``undefined_reason``) may
    be absent (its cells then take the default), so that tables written before that column
    existed still read. A missing required column, a short row or a cell that does not parse
    raises :class:`TableFormatError` naming the file, the line and the fix. For a row type with
    ``value`` and ``undefined_reason`` see :func:`_with_undefined`.
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
        missing = [f.name for f in fields if f.name not in header and not _has_default(f)]
        if missing:
            raise TableFormatError(
                f"{path}:1: missing column(s) {', '.join(missing)}; the header must hold "
                f"{','.join(f.name for f in fields)} (see workbench/RUN_FOLDER.md)"
            )
        explains_undefined = {"value", "undefined_reason"} <= {f.name for f in fields}
        rows = []
        for cells in reader:
            values = {}
            for field in fields:
                if field.name not in header:
                    continue  # an optional column the file does not have: the field's default
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
            if explains_undefined:
                values.setdefault("undefined_reason", None)
                values = _with_undefined(values, path, reader.line_num)
            rows.append(row_type(**values))
    return tuple(rows)
