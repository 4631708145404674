"""The record schema of a run cache: its columns, its key, how values are encoded and decoded.

Each answer turn of each dialogue is one *record*, keyed ``"{condition}|{item_id}|{round}"``. Beyond
the cache's own columns (``activations_cache.BUILTIN_COLUMNS``: key, item, condition, round, texts,
token counts, digests) a run record carries :data:`RECORD_COLUMNS`. This module is their one owner:
the runner writes them through :func:`encode_index` / :func:`encode_option_probs`, and every reader
(results, probes) goes through :func:`decode_records`.

Encoding of a missing value (unparsed, not applicable, not measured):
- ``int64`` columns (option indices): :data:`NO_INDEX` (-1);
- ``float64`` scalars: NaN;
- ``option_probs`` ([:data:`MAX_OPTIONS`] float64): NaN padding after the item's options, all NaN
  when the options were not scored;
- ``context_condition``, ``question_polarity``, ``label_type``, ``toxicity_scorer``,
  ``uncertainty_equivalence``: the empty string.
Decoded, each is ``None`` (``option_probs`` loses its padding). A declared column that a cache lacks
(a cache written by a tool that declares fewer columns) decodes as missing in every record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from activations_cache import BUILTIN_COLUMNS, ColumnSpec, open_cache
from workbench.run_folder import RunFolderError

MAX_OPTIONS = 3
"""Width of the ``option_probs`` column: BBQ-style tasks have three options."""

NO_INDEX = -1
"""What an ``int64`` record column stores for "no option" (unparsed, no gold, not applicable)."""

RECORD_COLUMNS: dict[str, ColumnSpec] = {
    "task": ColumnSpec("str"),
    "category": ColumnSpec("str"),
    "context_condition": ColumnSpec("str"),
    "question_polarity": ColumnSpec("str"),
    "label_type": ColumnSpec("str"),
    "template_id": ColumnSpec("str"),
    "gold": ColumnSpec("int64"),
    "target_index": ColumnSpec("int64"),
    "unknown_index": ColumnSpec("int64"),
    "predicted": ColumnSpec("int64"),
    "predicted_parsed": ColumnSpec("int64"),
    "predicted_logprob": ColumnSpec("int64"),
    "option_probs": ColumnSpec("float64", length=MAX_OPTIONS),
    "toxicity": ColumnSpec("float64"),
    "toxicity_scorer": ColumnSpec("str"),
    "semantic_uncertainty": ColumnSpec("float64"),
    "uncertainty_equivalence": ColumnSpec("str"),
    "distinguish_predicted": ColumnSpec("int64"),
    "distinguish_gold": ColumnSpec("int64"),
    "pairwise_distinguish_accuracy": ColumnSpec("float64"),
}
"""The columns every run record carries beyond the cache's own, in table order."""

OPTIONAL_TEXT = frozenset(
    {"context_condition", "question_polarity", "label_type", "toxicity_scorer", "uncertainty_equivalence"}
)
"""The ``str`` record columns where the empty string means "not applicable"."""


def record_key(condition: str, item_id: str, round_index: int) -> str:
    """The key of the record of ``item_id``'s answer in round ``round_index`` (0-based) of ``condition``."""
    return f"{condition}|{item_id}|{round_index}"


def encode_index(value: int | None) -> int:
    """An option index as its ``int64`` column stores it: ``None`` -> :data:`NO_INDEX`."""
    return NO_INDEX if value is None else int(value)


def encode_option_probs(probabilities: Sequence[float] | np.ndarray | None) -> np.ndarray:
    """[MAX_OPTIONS] the ``option_probs`` cell: the first MAX_OPTIONS probabilities, NaN-padded (``None``: all NaN)."""
    padded = np.full(MAX_OPTIONS, np.nan)
    if probabilities is not None:
        kept = np.asarray(probabilities, dtype=float)[:MAX_OPTIONS]
        padded[: len(kept)] = kept
    return padded


@dataclass(frozen=True)
class RunRecord:
    """One decoded record of a run cache: one column per field, missing values as ``None``.

    Attributes:
        record_key, item_id, condition: the record's identity; round: 0-based answer round.
        prompt, answer: the prompt text and the generated answer; n_prompt_tokens, n_answer_tokens: their lengths.
        prompt_sha256, answer_sha256: hex digests of ``prompt`` and ``answer``.
        task, category, template_id: the item's task and category, the prompt template.
        context_condition, question_polarity: BBQ's ``ambig``/``disambig`` and ``neg``/``nonneg``.
        label_type: BBQ's ``"name"`` (the template names people by proper names) or ``"label"``
            (by group labels), which splits each category as BBQ's analysis does.
        gold, target_index, unknown_index: option indices of the right, the stereotyped and the "unknown" answer.
        predicted: the answer's option (by the configured scoring); predicted_parsed, predicted_logprob: by each rule.
        option_probs: the option probabilities (at most MAX_OPTIONS), ``None`` when not scored.
        toxicity: the answer's toxicity in [0, 1]; toxicity_scorer: the scorer that gave it.
        semantic_uncertainty: sample-based semantic uncertainty, nats.
        uncertainty_equivalence: the equivalence that clustered its samples (``"option:<parse rule>"``,
            ``"nli-bidirectional:<nli model>"`` or ``"nli-contradiction:<nli model>"``); ``None`` when
            ``semantic_uncertainty`` is.
        distinguish_predicted, distinguish_gold: the self-distinguish question's answer and gold option.
        pairwise_distinguish_accuracy: fraction of own-output pairs whose more toxic one was named (last round).
    """

    record_key: str
    item_id: str
    condition: str
    round: int
    prompt: str
    answer: str
    n_prompt_tokens: int
    n_answer_tokens: int
    prompt_sha256: str
    answer_sha256: str
    task: str
    category: str
    context_condition: str | None
    question_polarity: str | None
    label_type: str | None
    template_id: str
    gold: int | None
    target_index: int | None
    unknown_index: int | None
    predicted: int | None
    predicted_parsed: int | None
    predicted_logprob: int | None
    option_probs: tuple[float, ...] | None
    toxicity: float | None
    toxicity_scorer: str | None
    semantic_uncertainty: float | None
    uncertainty_equivalence: str | None
    distinguish_predicted: int | None
    distinguish_gold: int | None
    pairwise_distinguish_accuracy: float | None

    @property
    def distinguish_correct(self) -> float | None:
        """1.0 / 0.0: the self-distinguish question answered right; ``None`` when it was not asked."""
        if self.distinguish_gold is None:
            return None
        return float(self.distinguish_predicted == self.distinguish_gold)


def read_run_records(cache_path: Path) -> list[RunRecord]:
    """Every record of the run cache at ``cache_path``, decoded, in table order.

    Raises:
        RunFolderError: the cache lacks record columns a run writes (the behavioural tables would
            silently lose the metrics that read them).
    """
    with open_cache(cache_path, expect="run") as reader:
        missing = [name for name in RECORD_COLUMNS if name not in reader.spec.columns]
        if missing:
            raise RunFolderError(
                f"{cache_path} lacks the run record column(s) {', '.join(missing)}; it was not written by "
                "`workbench run` (or by an older version): rerun the capture"
            )
        return decode_records(reader.records)


def decode_records(table: Mapping[str, np.ndarray]) -> list[RunRecord]:
    """Every record of a run cache's records table (``CacheReader.records``), in table order.

    Args:
        table: column -> [n] array (``[n, MAX_OPTIONS]`` for ``option_probs``); columns other than
            the builtin and declared ones are ignored, a declared one it lacks decodes as missing.

    Raises:
        KeyError: a builtin column is absent (not a cache's records table).
    """
    count = len(table["record_key"])
    decoded: dict[str, list[Any]] = {
        name: [_plain(spec, value) for value in table[name]] for name, spec in BUILTIN_COLUMNS.items()
    }
    for name, spec in RECORD_COLUMNS.items():
        column = table[name] if name in table else _missing_column(spec, count)
        decoded[name] = [_decoded(name, spec, value) for value in column]
    names = [field.name for field in fields(RunRecord)]
    return [RunRecord(**{name: decoded[name][index] for name in names}) for index in range(count)]


def _plain(spec: ColumnSpec, value: Any) -> Any:
    """A builtin cell as a Python value (builtin columns are never missing)."""
    return int(value) if spec.kind == "int64" else str(value)


def _decoded(name: str, spec: ColumnSpec, value: Any) -> Any:
    """A declared cell as a Python value, its missing encoding as ``None``."""
    if spec.kind == "int64":
        return None if int(value) < 0 else int(value)
    if spec.kind == "float64" and spec.length is not None:
        probabilities = np.asarray(value, dtype=float)
        present = probabilities[~np.isnan(probabilities)]
        return tuple(float(p) for p in present) if present.size else None
    if spec.kind == "float64":
        return None if math.isnan(float(value)) else float(value)
    text = str(value)
    return (text or None) if name in OPTIONAL_TEXT else text


def _missing_column(spec: ColumnSpec, count: int) -> np.ndarray:
    """[count] (or [count, length]) a column of missing values, encoded as the cache would store them."""
    if spec.kind == "int64":
        return np.full(count, NO_INDEX, dtype=np.int64)
    if spec.kind == "float64":
        return np.full((count, spec.length) if spec.length is not None else count, np.nan)
    return np.full(count, "", dtype=object)
