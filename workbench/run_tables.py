"""The row types of the run folder's tidy CSV tables: the one definition their writers and readers share.

Each dataclass below is one observation of one table of ``workbench/RUN_FOLDER.md``; its fields,
in order, are the table's columns (:func:`columns_of`). A stage writes its table under that header
(:func:`row_cells` turns a row into its cells) and ``reports.tables.read_table`` reads it back into
the same type, so a column added to a row type is written and read by construction. Where each
table lives and which command writes it: :data:`workbench.run_folder.RUN_TABLES`.

Field annotations are kept as the strings the reader parses cells by (``from __future__ import
annotations``): ``str``, ``int``, ``float``, and their ``| None`` forms (an empty cell), and
``bool | None``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench.metrics.undefined import undefined_text

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def columns_of(row_type: type[DataclassInstance]) -> tuple[str, ...]:
    """The CSV header of a row type: its field names, in order."""
    return tuple(field.name for field in dataclasses.fields(row_type))


def row_cells(row: DataclassInstance) -> list[str]:
    """The cells of one row, in the order of :func:`columns_of`: ``None`` is an empty cell, others ``str()``."""
    values = (getattr(row, column) for column in columns_of(type(row)))
    return ["" if value is None else str(value) for value in values]


@dataclass(frozen=True)
class BehaviourMetric:
    """One behavioural metric of one condition at one round (``results/behaviour.csv``).

    ``value`` is in the metric's own unit (accuracy and ECE: fractions in [0, 1]; bias score:
    [-1, 1]; toxicity: mean score in [0, 1]; uncertainty: mean token NLL in nats), or ``None``
    when the metric is undefined for the cell; ``undefined_reason`` then says why (e.g. ``"no
    non-unknown answer"``) and is ``None`` otherwise. ``ci_low``/``ci_high`` bound its 95%
    bootstrap interval over ``n`` items, ``None`` when not computable or undefined.
    ``n_unparsed``: for metrics of option answers (accuracies, unknown rate, unparsed rate, bias
    scores) and Winogender rates, how many of the cell's answers did not parse (no pronoun): left
    out of ``n`` or counted as wrong, by ``[results] unparsed``; ``None`` for other metrics and in
    files written before the column existed.
    """

    condition: str
    round: int
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    undefined_reason: str | None = None
    n_unparsed: int | None = None

    @property
    def defined(self) -> bool:
        """Whether the metric has a value for this cell."""
        return self.value is not None

    def value_text(self, digits: int = 3) -> str:
        """``value`` with ``digits`` significant digits, or ``undefined (<reason>)``."""
        return f"{self.value:.{digits}g}" if self.value is not None else undefined_text(self.undefined_reason)


@dataclass(frozen=True)
class BBQCategoryMetric:
    """One BBQ metric of one category, or of all categories, in one condition at one round.

    Read from ``results/bbq_categories.csv``: BBQ as its authors' R script reports it
    (``analysis_scripts/BBQ_calculate_bias_score.R``). ``category`` is a BBQ category, the same
    category's proper-name templates as ``"<category> (names)"`` (``label_type`` ``"name"``), or
    ``"all"`` for every BBQ item of the cell pooled. ``metric`` is ``accuracy_ambig``,
    ``accuracy_disambig``, ``unknown_rate`` (fractions in [0, 1]), ``bias_score_ambiguous`` or
    ``bias_score_disambiguated`` ([-1, 1]). ``unparsed`` (``excluded`` / ``wrong``) is the rule the
    accuracies used, ``convention`` (``r_script`` / ``lm_eval`` / ``helm``) the one the bias scores
    used. ``value``, ``ci_low``, ``ci_high``, ``n``, ``undefined_reason`` and ``n_unparsed`` as in
    :class:`BehaviourMetric`.
    """

    condition: str
    round: int
    category: str
    metric: str
    unparsed: str
    convention: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    undefined_reason: str | None
    n_unparsed: int


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
class PairedTest:
    """Two conditions compared on the same items at one round (``results/paired_tests.csv``).

    ``metric`` is the per-item outcome (``accuracy``: correct 1/0; ``toxicity``: score in [0, 1]);
    ``difference`` is the mean of ``condition_a`` minus ``condition_b`` over the ``n`` items both
    answered, ``ci_low``/``ci_high`` its 95% bootstrap interval (``None`` when not computable) and
    ``p_value`` the two-sided sign-flip permutation p-value. ``n_unparsed`` (``accuracy`` only):
    items of both conditions with an unparsed answer in either, left out of ``n`` or counted as
    wrong by ``[results] unparsed``; ``None`` otherwise.
    """

    metric: str
    round: int
    condition_a: str
    condition_b: str
    difference: float
    ci_low: float | None
    ci_high: float | None
    p_value: float
    n: int
    n_unparsed: int | None = None


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
    a gold answer, and for an unparsed answer under ``[results] unparsed = "excluded"`` (``False``
    under ``"wrong"``).
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
    ``auc`` or ``ece`` (all in [0, 1]), or ``selectivity`` (probe accuracy minus the arm's).
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

    ``measure`` is ``probe_probability`` (in [0, 1]) or a cosine (in [-1, 1]: ``cosine``,
    ``concept_activation``, ``band_cosine_<site>``), averaged over ``n`` items.
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
    uncertainty was not measured; ``uncertainty_measure`` says which uncertainty it is (the
    recorded semantic uncertainty, or the option entropy when the run recorded none; empty in
    files written before the column existed).
    """

    condition: str
    round: int
    item_id: str
    concept_activation: float
    uncertainty: float | None
    uncertainty_measure: str | None = None


@dataclass(frozen=True)
class SteeringEffect:
    """One option-distribution metric after steering one layer (``probes/steering.csv``).

    ``direction`` is ``probe`` (the probe's unit direction) or ``random`` (a seeded unit
    direction); ``alpha`` is the multiple of it added to the site's output (0: unsteered);
    ``metric`` is ``unknown_rate``, ``mean_prob_target``, ``mean_prob_unknown`` or ``accuracy``
    (all in [0, 1]).
    """

    site: str
    layer: int
    direction: str
    alpha: float
    metric: str
    value: float


@dataclass(frozen=True)
class HeadEffect:
    """Attribution effect of one attention head in one checkpoint (``attribution/heads.csv``, logits)."""

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


@dataclass(frozen=True)
class DebiasedHead:
    """A head whose |effect| fell from the base to the debiased checkpoint (``attribution/selected_heads.csv``).

    ``effect_before`` / ``effect_after`` are its effects (logits) in the two checkpoints and
    ``drop`` = ``|effect_before| - |effect_after|`` (> 0), the weight of its ProSocialTuning penalty.
    """

    layer: int
    head: int
    effect_before: float
    effect_after: float
    drop: float


@dataclass(frozen=True)
class SelectionCandidate:
    """One candidate debiasing sample of ``workbench select`` (``attribution/selection.csv``), best first.

    ``line`` is the sample's 0-based index among the ``[debias]`` corpus texts and ``text`` the text;
    ``uncertainty`` is in nats (``uncertainty_measure``: ``semantic:<equivalence>[:<nli model>]``
    or ``nll``) and ``concept_activation`` a cosine in [-1, 1], each ``None`` when its weight was 0;
    ``score`` in [0, 1] is the weighted mean of their preference ranks; ``rank`` 1 is chosen first;
    ``selected`` / ``random`` are 1 for the members of the selection / of the random baseline of the
    same size, else 0 (workbench/finetune/selection.py).
    """

    line: int
    text: str
    uncertainty: float | None
    uncertainty_measure: str
    concept_activation: float | None
    score: float
    rank: int
    selected: int
    random: int
