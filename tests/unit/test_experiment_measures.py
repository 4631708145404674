"""The runner's per-record measures, called on their own (no runner, no cache)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from workbench.config import ProtocolSettings
from workbench.experiment.measures import (
    PAIRWISE_PAIRS,
    MeasureContext,
    SemanticUncertainty,
    answer_toxicity,
    choose_options,
    pairwise_distinguish,
    self_distinguish,
)
from workbench.inference.option_scoring import option_mean_nll
from workbench.models import tiny_model
from workbench.protocols import Condition, Dialogue
from workbench.protocols.dialogue import Turn
from workbench.tasks.items import Item
from workbench.tasks.registry import load_task
from workbench.toxicity.lexicon import LexiconScorer


@pytest.fixture(scope="module")
def context() -> MeasureContext:
    return MeasureContext(tiny_model("llama", n_layers=2), ProtocolSettings(self_distinguish=True), 0, 2)


def _answers(item_id: str, *texts: str) -> Dialogue:
    dialogue = Dialogue(item_id)
    for round_index, text in enumerate(texts):
        dialogue = dialogue.append(Turn("answer", "answer", round_index, "q", "", text, ""))
    return dialogue


def _generation_item(item_id: str) -> Item:
    return Item(item_id=item_id, task="realtoxicity", category="toxic", context="", question="Continue: the")


def test_choose_options_is_the_least_mean_nll_option(context: MeasureContext) -> None:
    texts = ["Question one? Answer:", "Another question? Answer:"]
    labels = [("(a)", "(b)", "(c)")] * 2
    nll = option_mean_nll(context.model, texts, labels, add_special_tokens=False, batch_size=2)
    assert choose_options(context, texts, labels, faithful=False) == [int(np.argmin(row)) for row in nll]


def test_answer_toxicity_scores_generation_items_only_and_keeps_their_history(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("fool\n")
    items = [_generation_item("g0"), load_task("bbq-sample", limit_per_category=1)[0], _generation_item("g1")]
    history: dict[str, list[float]] = {"g0": [0.0]}
    scored = answer_toxicity(LexiconScorer(words), items, ["you fool", "(a)", "a nice day"], history)
    assert scored.values[0] == 1.0 and math.isnan(scored.values[1]) and scored.values[2] == 0.0
    assert scored.scored == {0, 2} and scored.scorer.startswith("lexicon:words.txt@")
    assert history == {"g0": [0.0, 1.0], "g1": [0.0]}
    nothing = answer_toxicity(None, items, ["a", "b", "c"], {})
    assert nothing.scorer == "" and not nothing.scored and np.isnan(nothing.values).all()


def test_pairwise_distinguish_asks_only_at_the_last_round(context: MeasureContext) -> None:
    condition = Condition("intrinsic", rounds=3)
    items = [_generation_item("g0"), _generation_item("g1")]
    dialogues = [_answers("g0", "one", "two", "three"), _answers("g1", "one", "two", "three")]
    history = {"g0": [0.9, 0.1, 0.5], "g1": [0.2, 0.8, 0.3]}
    asked = pairwise_distinguish(context, condition, items, dialogues, [2, 1], history)
    assert asked[0] in {share / PAIRWISE_PAIRS for share in range(PAIRWISE_PAIRS + 1)}
    assert math.isnan(asked[1])  # round 1 of 3 is not the last
    off = MeasureContext(context.model, ProtocolSettings(self_distinguish=False), 0, 2)
    assert all(math.isnan(value) for value in pairwise_distinguish(off, condition, items, dialogues, [2, 2], history))


def test_self_distinguish_asks_bbq_items_with_a_target_and_gives_the_gold(context: MeasureContext) -> None:
    bbq = load_task("bbq-sample", limit_per_category=1)[:2]
    items = [*bbq, _generation_item("g0")]
    dialogues = [_answers(item.item_id, "(a)") for item in items]
    result = self_distinguish(context, Condition("intrinsic", rounds=1), items, dialogues)
    assert result[2] == (-1, -1)
    for (predicted, gold), item in zip(result[:2], bbq):
        assert predicted in range(len(item.option_labels))
        assert gold == item.metadata["target_index"]


def test_semantic_uncertainty_is_nan_when_sampling_is_off(context: MeasureContext) -> None:
    items = load_task("bbq-sample", limit_per_category=1)[:2]
    values, names = SemanticUncertainty(context)(
        items, ["a", "b"], [[1, 2], [3, 4]], ["k0", "k1"], add_special_tokens=False
    )
    assert context.settings.uncertainty_samples == 0
    assert np.isnan(values).all() and names == ["", ""]
