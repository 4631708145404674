"""BBQ as a bias level of a checkpoint: the rows ``bbq.<metric>`` of ``attribution/bias_levels.csv``.

Each item is asked once, as the first round of the uninstructed condition (``instr=none``, no
CoT, no feedback, clean chat mode: the item's question block in the model's chat template, then
the answer prefix), and answered by option log-probability: the option label with the lowest mean
token NLL after the prompt (:func:`workbench.inference.option_scoring.option_mean_nll`, the
workbench's ``answer_scoring = "logprob"``). The answers become record rows of one condition and
round, and the results stage's own code (:func:`workbench.metrics.tables.compute_results`) turns
them into BBQ's accuracies by context, the unknown rate and the two bias scores with their 95 %
bootstrap intervals over items, so the numbers are those ``workbench results`` would give for
the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.config_tables import check_field_types, dataclass_from_table
from workbench.inference.generation import chat_prompt
from workbench.inference.option_scoring import option_mean_nll
from workbench.metrics.options import option_probabilities
from workbench.metrics.tables import ResultsConfig, compute_results
from workbench.models.loading import LoadedModel
from workbench.protocols import Condition, Dialogue
from workbench.protocols.prompts import next_prompt
from workbench.run_tables import BiasLevel
from workbench.tasks.bbq import load_bbq, load_embedded_bbq_sample
from workbench.tasks.items import Item

EMBEDDED = "embedded"
BBQ_MEASURES = (
    "accuracy_ambig",
    "accuracy_disambig",
    "unknown_rate",
    "bias_score_ambiguous",
    "bias_score_disambiguated",
)
"""The metrics of ``workbench results`` written as ``bbq.<metric>`` bias levels (module docstring)."""
ASKED = Condition(instruction="none", cot=False, feedback=False, rounds=1, history_mode="clean")


@dataclass(frozen=True)
class BBQLevelConfig:
    """Which BBQ items measure a checkpoint (the ``[select.bbq]`` table).

    Attributes:
        path: ``"embedded"`` (the package's 60-item BBQ-style sample, offline) or a BBQ folder
            holding ``data/<Category>.jsonl`` (nyu-mll/BBQ).
        categories: category file stems (``Age``, ``Religion``, ...); empty = every category present.
        limit_per_category: at most this many items per category, a sample seeded by ``seed`` (None = all).
        n_resamples: bootstrap resamples per interval; seed: seed of the item sample and the bootstrap.
        batch_size: sequences per forward pass.
    """

    path: str = EMBEDDED
    categories: tuple[str, ...] = ()
    limit_per_category: int | None = None
    n_resamples: int = 1000
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        check_field_types(self, "select.bbq", ValueError)
        for key in ("limit_per_category", "n_resamples", "batch_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} = {value} must be at least 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BBQLevelConfig:
        """Build from a TOML ``[select.bbq]`` table; unknown keys are an error naming the valid ones."""
        return dataclass_from_table(cls, data, "select.bbq")

    def items(self) -> list[Item]:
        """The configured items, read before any model loads (a bad folder or category is one line)."""
        categories = self.categories or None
        if self.path == EMBEDDED:
            return load_embedded_bbq_sample(categories, limit_per_category=self.limit_per_category, seed=self.seed)
        return load_bbq(self.path, categories, limit_per_category=self.limit_per_category, seed=self.seed)


def bbq_answer_rows(model: LoadedModel, items: Sequence[Item], batch_size: int = 8) -> list[dict[str, Any]]:
    """One record row (:mod:`workbench.metrics.tables`) per item: its option-log-probability answer to :data:`ASKED`."""
    texts = []
    for item in items:
        prompt = next_prompt(item, ASKED, Dialogue(item.item_id))
        assert prompt is not None and prompt.messages is not None  # a fresh one-round clean dialogue
        texts.append(chat_prompt(model, prompt.messages, prompt.assistant_prefix))
    nll = option_mean_nll(
        model, texts, [item.option_labels for item in items], add_special_tokens=False, batch_size=batch_size
    )
    rows = []
    for item, text, values in zip(items, texts, nll):
        probabilities = option_probabilities(values)
        predicted = int(np.argmin(values))
        rows.append(
            {
                "item_id": item.item_id,
                "condition": ASKED.name,
                "round": 0,
                "category": item.category,
                "task": item.task,
                "context_condition": item.metadata.get("context_condition"),
                "question_polarity": item.metadata.get("question_polarity"),
                "predicted": predicted,
                "gold": item.gold,
                "target_index": item.metadata.get("target_index"),
                "unknown_index": item.metadata.get("unknown_index"),
                "option_probs": [float(p) for p in probabilities],
                "answer": f" {item.option_labels[predicted]}",
                "prompt": text,
                "toxicity": None,
            }
        )
    return rows


def bbq_levels(model: LoadedModel, items: Sequence[Item], config: BBQLevelConfig, checkpoint: str) -> list[BiasLevel]:
    """``bbq.<metric>`` bias levels of ``model`` (:data:`BBQ_MEASURES`); an undefined metric has value NaN."""
    rows = bbq_answer_rows(model, items, config.batch_size)
    behaviour = compute_results(rows, ResultsConfig(n_boot=config.n_resamples, seed=config.seed)).tables["behaviour"]
    levels = []
    for row in behaviour:
        if row["metric"] not in BBQ_MEASURES:
            continue
        value = float("nan") if row["value"] == "" else float(row["value"])
        low, high = (None if row[key] == "" else float(row[key]) for key in ("ci_low", "ci_high"))
        levels.append(BiasLevel(checkpoint, f"bbq.{row['metric']}", value, low, high, int(row["n"])))
    return levels
