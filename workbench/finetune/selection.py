"""Uncertainty- and concept-guided selection of CDA debiasing samples (papers 4 and 5).

Paper 4 (Liu et al. 2024, arXiv 2406.02378) reports that selecting fine-tuning samples by the
model's uncertainty helps task-agnostic debiasing. Its public code
(HaitaoMao/LLM-self-correction@c0c67e8) asks GPT-2 of every sentence of its CDA corpus
:data:`SELECTION_PROMPT` (``analysis/gpt2_generate.py``: 5 samples, ``num_beams=5``, ``do_sample``,
temperature 1, ``top_p`` 1, 10 new tokens), scores them with its semantic uncertainty
(``analysis/uncertainty_estimate_new.py``; docs/protocols.md §2.2) and fine-tunes GPT-2-XL on the
lower-uncertainty sentences (``analysis/debiasingExp.py``, default source
``lessuncertainty.debiasing.txt``). How many sentences it kept is not in the code.

Here every candidate ``x`` (a line of the ``[debias]`` corpus) gets two scores:

- ``uncertainty(x)`` (nats): ``"semantic"``, paper 4's score of the model's answers to
  :data:`SELECTION_PROMPT` (:class:`workbench.experiment.measures.SemanticUncertainty`: the mean over
  semantic clusters of the members' mean token NLL), or ``"nll"``, the mean token NLL of the
  sentence itself (every token after the first; the loss CDA training starts from on it);
- ``concept_activation(x)`` (a cosine): ``cos(h(x), c)``, with ``h(x)`` the final norm's output
  (``ln_final.hook_out`` = Hugging Face ``hidden_states[-1]``) at the last token of the raw
  sentence and ``c`` the concept vector of a concept set (:mod:`probes.concept_sets`): the mean state
  of its concept-side statements (``"statement"``: paper 4's concept state, §2.4) or that minus the
  mean state of its contrast statements (``"difference"``: a direction, ours).

Ranking: each score becomes a fractional rank ``r`` in [0, 1] among the candidates, 1 for the most
preferred (``uncertainty_preference = "low"``: paper 4's choice; ``concept_preference = "high"``:
samples that activate the concept most, ours), 0 for a candidate whose score is not finite (no
sampled answer had a token). ``score = (w_u r_u + w_c r_c) / (w_u + w_c)``; candidates are ranked
by ``score``, ties by corpus order, and the first ``ceil(fraction * n)`` are selected. A weight of
0 leaves that score out (it is not computed). The random baseline draws the same number of
candidates uniformly without replacement with ``seed`` (it may overlap the selection).

The selection is written to ``attribution/selection.csv`` (:class:`workbench.run_tables.SelectionCandidate`);
``[debias] selection_path`` trains on one of its arms (:func:`selected_texts`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.stats import rankdata

from probes.concept_sets import ConceptExample
from workbench.config_tables import check_field_types, dataclass_from_table
from workbench.finetune.bbq_levels import BBQLevelConfig
from workbench.finetune.cda import gendered_words
from workbench.inference.generation import SamplingMethod
from workbench.inference.semantic_equivalence import DEFAULT_NLI_MODEL, EquivalenceRule
from workbench.models.loading import LoadedModel
from workbench.run_folder import RUN_TABLES, RunFolder
from workbench.run_tables import SelectionCandidate, row_cells

SELECTION_PROMPT = "{sentence}\nQuestion: Does the above text contain bias or stereotypes?\nAnswer:"
"""Paper 4's question about a candidate sentence (HaitaoMao/LLM-self-correction@c0c67e8
``analysis/gpt2_generate.py``, ``generate_answer``: the stripped line, then this suffix)."""
PAPER4_SAMPLES = 5
PAPER4_NEW_TOKENS = 10
ARMS = ("selected", "random", "all")
"""The debiasing arms ``workbench select`` compares: the selection, the random baseline of the same
size, and the whole corpus (plain ``workbench debias``)."""
SELECTION_ARMS = ARMS[:2]
"""The arms of ``selection.csv`` that ``[debias] selection_arm`` can name."""
UNCERTAINTY_EQUIVALENCE: dict[str, EquivalenceRule] = {
    "exact": "option",  # free text has no option: equal text only (option_equivalence's fallback)
    "nli-contradiction": "nli-contradiction",
    "nli-bidirectional": "nli-bidirectional",
}
SITE = "ln_final.hook_out"
RUN_CONCEPT_SETS = ("auto", "bbq-items")
"""Concept sets of ``[probe]`` that need a run's items: not available to a selection."""

Preference = Literal["low", "high"]


class SelectionError(ValueError):
    """A selection that cannot be made or read as asked (empty pool, a stale selection.csv, ...)."""


@dataclass(frozen=True)
class SelectionConfig:
    """How ``workbench select`` ranks and selects (the ``[select]`` table).

    Attributes:
        fraction: share of the candidates selected, in (0, 1]; the random baseline has as many.
        candidates: ``"gendered"`` (corpus lines with a word of the CDA word list: the lines CDA
            changes) or ``"all"`` (every line).
        max_tokens: leave out lines of more tokens than this (None = no limit); set it to ``[debias]
            max_length`` so that training sees every candidate whole.
        max_candidates: score at most this many candidates, a sample seeded by ``seed`` (None = all).
        uncertainty: ``"semantic"`` (paper 4) or ``"nll"`` (the sentence's own mean token NLL).
        uncertainty_samples, uncertainty_sampling, uncertainty_tokens: the samples of ``"semantic"``
            (paper 4: 5, ``"beam-sample"``, 10).
        equivalence: when two samples mean the same: ``"exact"`` (same text, no model),
            ``"nli-contradiction"`` (paper 4's rule) or ``"nli-bidirectional"`` (Kuhn et al.), with ``nli_model``.
        uncertainty_preference / concept_preference: which end of each score is preferred.
        uncertainty_weight / concept_weight: weights of the two ranks (>= 0, not both 0).
        concept_set: the concept set (:func:`probes.concept_sets.configured_concept_examples`):
            ``embedded``, ``crows_pairs:<path>``, ``ethics:<path>`` or ``toxicity:<path>``.
        concept_form: BBQ statement form of the ``embedded`` set (``workbench``, ``paper4``, ``paper2``).
        concept_vector: ``"difference"`` (concept minus contrast mean) or ``"statement"`` (concept mean).
        max_concept_statements: at most this many statements, whole groups, seeded (None = all).
        arms: the debiasing arms to run and measure (:data:`ARMS`); empty = select only.
        measure_pretrained: also measure the model before debiasing (label ``pretrained``).
        bbq: BBQ items of the bias levels (``[select.bbq]``); None = no BBQ levels.
        seed: seed of the candidate sample, the samples, the random baseline and the concept sample.
        batch_size: sequences per forward pass.
    """

    fraction: float = 0.25
    candidates: Literal["gendered", "all"] = "gendered"
    max_tokens: int | None = None
    max_candidates: int | None = None
    uncertainty: Literal["semantic", "nll"] = "semantic"
    uncertainty_samples: int = PAPER4_SAMPLES
    uncertainty_sampling: SamplingMethod = "beam-sample"
    uncertainty_tokens: int = PAPER4_NEW_TOKENS
    equivalence: Literal["exact", "nli-contradiction", "nli-bidirectional"] = "nli-contradiction"
    nli_model: str = DEFAULT_NLI_MODEL
    uncertainty_preference: Preference = "low"
    uncertainty_weight: float = 1.0
    concept_set: str = "embedded"
    concept_form: Literal["workbench", "paper4", "paper2"] = "workbench"
    concept_vector: Literal["difference", "statement"] = "difference"
    concept_preference: Preference = "high"
    concept_weight: float = 1.0
    max_concept_statements: int | None = None
    arms: tuple[str, ...] = ARMS
    measure_pretrained: bool = True
    bbq: BBQLevelConfig | None = None
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        check_field_types(self, "select", ValueError)
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction = {self.fraction} must be in (0, 1] (the share of candidates kept)")
        for key in ("max_tokens", "max_candidates", "uncertainty_samples", "uncertainty_tokens", "batch_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} = {value} must be at least 1")
        if self.max_concept_statements is not None and self.max_concept_statements < 2:
            raise ValueError(f"max_concept_statements = {self.max_concept_statements} must be at least 2")
        if min(self.uncertainty_weight, self.concept_weight) < 0 or self.uncertainty_weight + self.concept_weight == 0:
            raise ValueError(
                f"uncertainty_weight = {self.uncertainty_weight}, concept_weight = {self.concept_weight}: "
                "weights must be >= 0 and not both 0"
            )
        unknown = [arm for arm in self.arms if arm not in ARMS]
        if unknown or len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms = {list(self.arms)}: use distinct values of {', '.join(ARMS)}")
        if self.concept_set in RUN_CONCEPT_SETS:
            raise ValueError(
                f"concept_set = {self.concept_set!r} is built from a run's items, which a selection has not; use "
                "embedded, crows_pairs:<path>, ethics:<path> or toxicity:<path>"
            )
        if self.equivalence != "exact" and self.uncertainty == "semantic" and not self.nli_model.strip():
            raise ValueError(f'nli_model is empty; equivalence = "{self.equivalence}" needs an NLI classifier')

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SelectionConfig:
        """Build from a TOML ``[select]`` table (``bbq`` as the nested ``[select.bbq]``); unknown keys are an error."""
        values = dict(data)
        if isinstance(values.get("bbq"), dict):
            values["bbq"] = BBQLevelConfig.from_dict(values["bbq"])
        return dataclass_from_table(cls, values, "select")

    @property
    def uncertainty_measure(self) -> str:
        """The ``uncertainty_measure`` cell of selection.csv: ``semantic:<equivalence>[:<nli model>]`` or ``nll``."""
        if self.uncertainty == "nll":
            return "nll"
        rule = f"semantic:{self.equivalence}"
        return rule if self.equivalence == "exact" else f"{rule}:{self.nli_model}"


@dataclass(frozen=True)
class Candidate:
    """One candidate sample: its index among the corpus texts (0-based, :func:`workbench.finetune.cda.read_corpus`
    order) and its text."""

    line: int
    text: str


def candidate_pool(texts: Sequence[str], config: SelectionConfig) -> list[Candidate]:
    """The corpus lines ``config.candidates`` admits, in corpus order (before the token limit and sample).

    Raises:
        SelectionError: no line is admitted.
    """
    pool = [
        Candidate(line, text) for line, text in enumerate(texts) if config.candidates == "all" or gendered_words(text)
    ]
    if not pool:
        raise SelectionError(
            f"none of the {len(texts)} corpus lines has a gendered word, so [select] candidates = "
            '"gendered" admits nothing: pick a corpus that mentions people, or set candidates = "all"'
        )
    return pool


def limit_candidates(model: LoadedModel, pool: Sequence[Candidate], config: SelectionConfig) -> list[Candidate]:
    """``pool`` without lines longer than ``max_tokens``, then at most ``max_candidates`` (seeded, corpus order).

    Raises:
        SelectionError: every line is longer than ``max_tokens``.
    """
    kept = list(pool)
    if config.max_tokens is not None:
        lengths = [len(model.tokenizer(c.text, add_special_tokens=True)["input_ids"]) for c in kept]
        kept = [candidate for candidate, length in zip(kept, lengths) if length <= config.max_tokens]
        if not kept:
            raise SelectionError(
                f"all {len(pool)} candidates have more than [select] max_tokens = {config.max_tokens} tokens; "
                "raise max_tokens or leave it out"
            )
    if config.max_candidates is not None and len(kept) > config.max_candidates:
        chosen = np.random.default_rng(config.seed).choice(len(kept), config.max_candidates, replace=False)
        kept = [kept[index] for index in sorted(chosen.tolist())]
    return kept


def semantic_uncertainty(model: LoadedModel, texts: Sequence[str], config: SelectionConfig) -> np.ndarray:
    """[n] paper 4's semantic uncertainty (nats) of the model's answers to :data:`SELECTION_PROMPT` about each text.

    The measure of ``workbench run`` (:class:`workbench.experiment.measures.SemanticUncertainty`) on
    one free-text item per text; NaN where no sampled answer has a token.
    """
    from workbench.config import ProtocolSettings
    from workbench.experiment.measures import MeasureContext, SemanticUncertainty
    from workbench.tasks.items import Item

    settings = ProtocolSettings(
        uncertainty_samples=config.uncertainty_samples,
        uncertainty_sampling=config.uncertainty_sampling,
        uncertainty_equivalence=UNCERTAINTY_EQUIVALENCE[config.equivalence],
        nli_model=config.nli_model,
        uncertainty_tokens=config.uncertainty_tokens,
    )
    items = [Item(f"candidate/{index}", "debias-candidate", "", "", text) for index, text in enumerate(texts)]
    prompts = [SELECTION_PROMPT.format(sentence=text.strip()) for text in texts]
    prompt_ids = [list(model.tokenizer(prompt, add_special_tokens=True)["input_ids"]) for prompt in prompts]
    measure = SemanticUncertainty(MeasureContext(model, settings, config.seed, config.batch_size))
    values, _ = measure(items, prompts, prompt_ids, [item.item_id for item in items], add_special_tokens=True)
    return values


def sentence_nll(model: LoadedModel, texts: Sequence[str], batch_size: int = 8) -> np.ndarray:
    """[n] mean token NLL (nats) of each text given its first token (the BOS when the tokenizer adds one);
    NaN for a one-token text."""
    from workbench.inference.option_scoring import continuation_mean_nll

    pairs = []
    for text in texts:
        ids = list(model.tokenizer(text, add_special_tokens=True)["input_ids"])
        pairs.append((ids[:1], ids[1:]))
    return continuation_mean_nll(model, pairs, batch_size)


def final_states(model: LoadedModel, texts: Sequence[str], batch_size: int = 8) -> np.ndarray:
    """[n, d_model] float64: the final norm's output (``ln_final.hook_out``) at each raw text's last token."""
    from workbench.hooks import SiteKind, capture

    captured = capture(model, list(texts), sites=[SITE], positions=("last_prompt",), batch_size=batch_size)
    return captured.get(SiteKind.FINAL_OUT, "last_prompt")[:, 0].double().numpy()


def concept_statements(config: SelectionConfig) -> list[ConceptExample]:
    """The statements of ``config.concept_set`` (at most ``max_concept_statements``), read without a model.

    Raises:
        ConceptSetError: an unknown set or an unreadable file; SelectionError: a side the vector needs is missing.
    """
    from probes.concept_sets import configured_concept_examples, limit_concept_examples

    examples = limit_concept_examples(
        configured_concept_examples(config.concept_set, form=config.concept_form),
        config.max_concept_statements,
        config.seed,
    )
    labels = {example.label for example in examples}
    if 1 not in labels or (config.concept_vector == "difference" and 0 not in labels):
        raise SelectionError(
            f"[select] concept_set = {config.concept_set!r} has no statement of a needed side (concept = 1"
            + (", contrast = 0" if config.concept_vector == "difference" else "")
            + "); raise max_concept_statements or choose another set"
        )
    return examples


def concept_vector(model: LoadedModel, statements: Sequence[ConceptExample], config: SelectionConfig) -> np.ndarray:
    """[d_model] the concept vector of ``statements`` (:func:`concept_statements`; module docstring)."""
    labels = np.array([statement.label for statement in statements])
    states = final_states(model, [statement.text for statement in statements], config.batch_size)
    vector = states[labels == 1].mean(axis=0)
    return vector - states[labels == 0].mean(axis=0) if config.concept_vector == "difference" else vector


def concept_activation(states: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """[n] cosine of each state [n, d] with ``vector`` [d] (:func:`probes.apply.cosine`: 0 for a zero vector)."""
    from probes.apply import cosine

    return cosine(states, vector)


def preference_rank(values: np.ndarray, preference: Preference) -> np.ndarray:
    """[n] fractional rank in [0, 1]: 1 for the most preferred value, 0 for the least and for non-finite ones.

    Ties share their average rank; a single finite value ranks 1.
    """
    values = np.asarray(values, dtype=np.float64)
    ranks = np.zeros(values.shape)
    finite = np.isfinite(values)
    if not finite.any():
        return ranks
    key = -values[finite] if preference == "low" else values[finite]
    order = rankdata(key, method="average")  # 1 = least preferred
    ranks[finite] = (order - 1) / (finite.sum() - 1) if finite.sum() > 1 else 1.0
    return ranks


def selection_size(n_candidates: int, fraction: float) -> int:
    """``ceil(fraction * n)`` (at least 1): how many candidates the selection and the random baseline keep."""
    return max(1, math.ceil(fraction * n_candidates - 1e-9))


@dataclass(frozen=True)
class CandidateScores:
    """The scores of the candidates, aligned with them; a score whose weight is 0 is None."""

    candidates: tuple[Candidate, ...]
    uncertainty: np.ndarray | None
    concept_activation: np.ndarray | None


def score_candidates(
    model: LoadedModel,
    candidates: Sequence[Candidate],
    config: SelectionConfig,
    statements: Sequence[ConceptExample] | None = None,
) -> CandidateScores:
    """Both scores of every candidate (module docstring), each only when its weight is above 0.

    ``statements``: the concept set, when read already (:func:`concept_statements`).
    """
    texts = [candidate.text for candidate in candidates]
    uncertainty = None
    if config.uncertainty_weight > 0:
        uncertainty = (
            semantic_uncertainty(model, texts, config)
            if config.uncertainty == "semantic"
            else sentence_nll(model, texts, config.batch_size)
        )
    concept = None
    if config.concept_weight > 0:
        vector = concept_vector(model, statements or concept_statements(config), config)
        concept = concept_activation(final_states(model, texts, config.batch_size), vector)
    return CandidateScores(tuple(candidates), uncertainty, concept)


def random_baseline(n_candidates: int, size: int, seed: int) -> np.ndarray:
    """[size] sorted candidate indices drawn uniformly without replacement with ``seed``."""
    return np.sort(np.random.default_rng(seed).choice(n_candidates, size, replace=False))


def rank_candidates(scores: CandidateScores, config: SelectionConfig) -> list[SelectionCandidate]:
    """The rows of selection.csv, best first: score, rank, and membership of the selection and the random baseline."""
    n = len(scores.candidates)
    combined = np.zeros(n)
    weights = 0.0
    for values, preference, weight in (
        (scores.uncertainty, config.uncertainty_preference, config.uncertainty_weight),
        (scores.concept_activation, config.concept_preference, config.concept_weight),
    ):
        if values is not None:
            combined += weight * preference_rank(values, preference)
            weights += weight
    combined /= weights
    order = np.lexsort((np.arange(n), -combined))  # score descending, corpus order within ties
    size = selection_size(n, config.fraction)
    drawn = set(random_baseline(n, size, config.seed).tolist())

    def cell(values: np.ndarray | None, index: int) -> float | None:
        return None if values is None else float(values[index])

    return [
        SelectionCandidate(
            line=scores.candidates[index].line,
            text=scores.candidates[index].text,
            uncertainty=cell(scores.uncertainty, index),
            uncertainty_measure=config.uncertainty_measure if scores.uncertainty is not None else "",
            concept_activation=cell(scores.concept_activation, index),
            score=float(combined[index]),
            rank=rank,
            selected=int(rank <= size),
            random=int(index in drawn),
        )
        for rank, index in enumerate(order.tolist(), start=1)
    ]


def write_selection(run_dir: Path, rows: Sequence[SelectionCandidate]) -> Path:
    """Write ``attribution/selection.csv`` (replacing an earlier one once the new one is whole); returns its path."""
    path = RunFolder(Path(run_dir)).table("selection")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # an interrupted write leaves the earlier file whole
    try:
        with partial.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(RUN_TABLES["selection"].columns)
            writer.writerows(row_cells(row) for row in rows)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return path


def read_selection_lines(path: Path, arm: str) -> list[tuple[int, int, str]]:
    """``(file line, corpus line, text)`` of the rows of ``arm`` (``selected`` or ``random``) in ``path``.

    Raises:
        FileNotFoundError: no such file.
        SelectionError: an unknown arm, a missing column, a cell that is not an integer, or no row in the arm.
    """
    if arm not in SELECTION_ARMS:
        raise SelectionError(f"selection arm {arm!r} is unknown; use one of {', '.join(SELECTION_ARMS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run `workbench select` first or fix [debias] selection_path")
    needed = ("line", "text", arm)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in needed if column not in (reader.fieldnames or [])]
        if missing:
            raise SelectionError(f"{path}:1: missing column(s) {', '.join(missing)}; rerun `workbench select`")
        chosen = []
        for file_line, row in enumerate(reader, start=2):
            try:
                line, member = int(row["line"]), int(row[arm])
            except ValueError:
                raise SelectionError(f"{path}:{file_line}: line and {arm} must be integers") from None
            if member:
                chosen.append((file_line, line, row["text"]))
    if not chosen:
        raise SelectionError(f"{path}: no row has {arm} = 1; rerun `workbench select`")
    return chosen


def selected_texts(texts: Sequence[str], path: Path, arm: str) -> list[str]:
    """The corpus texts of one arm of a selection.csv, in corpus order.

    Raises:
        SelectionError: a row names a corpus line that does not exist or holds other text (the
            selection was made on another corpus or column).
    """
    chosen = read_selection_lines(path, arm)
    for file_line, line, text in chosen:
        if not 0 <= line < len(texts) or texts[line] != text:
            raise SelectionError(
                f"{path}:{file_line}: corpus line {line} is not the text this selection scored (the corpus has "
                f"{len(texts)} lines); rerun `workbench select` on this [debias] corpus_path and column"
            )
    return [texts[line] for line in sorted(line for _, line, _ in chosen)]


def require_gendered_arms(texts: Sequence[str], path: Path, arms: Sequence[str]) -> None:
    """Refuse, before any training, an arm of ``arms`` whose lines have no gendered word (CDA would change nothing).

    ``all`` is the whole corpus (``texts``); ``selected`` / ``random`` are read from ``path``.

    Raises:
        SelectionError: naming the arm and the fixes.
    """
    for arm in arms:
        lines = list(texts) if arm == "all" else selected_texts(texts, path, arm)
        if not any(gendered_words(text) for text in lines):
            raise SelectionError(
                f"none of the {len(lines)} lines of the {arm} arm has a gendered word, so CDA would not change "
                'them: set [select] candidates = "gendered", or [debias] on_no_gendered_words = "warn" to train on '
                "them as they are"
            )
