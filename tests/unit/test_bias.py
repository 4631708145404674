"""Intrinsic bias measures: CrowS-Pairs, SEAT/WEAT, sentence likelihoods (hand-computed values)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForMaskedLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from workbench.bias.bootstrap import bootstrap_mean_interval
from workbench.bias.crows_pairs import CrowsPair, crows_pairs_measures, pair_preferences, read_crows_pairs
from workbench.bias.levels import BiasConfig, measure_bias_levels, run_bias_stage, write_bias_levels
from workbench.bias.seat import pooled_hidden_states, read_seat_test, weat
from workbench.bias.sentence_likelihood import (
    causal_sentence_log_likelihoods,
    masked_pair_pseudo_log_likelihoods,
    shared_token_positions,
)
from workbench.models import tiny_model

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
MASKED_WORDS = ["the", "a", "man", "woman", "he", "she", "doctor", "nurse", "is", "was", "kind"]


def masked_word_tokenizer() -> PreTrainedTokenizerFast:
    """A BERT-style word-level tokenizer: [CLS] words [SEP], with a [MASK] token."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate([*specials, *MASKED_WORDS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )


@pytest.fixture(scope="module")
def causal_tokenizer() -> PreTrainedTokenizerBase:
    return tiny_model().tokenizer


def tiny_llama(vocab_size: int, seed: int = 0) -> PreTrainedModel:
    return tiny_model(d_model=32, vocab_size=vocab_size, seed=seed).model


def test_uniform_causal_lm_scores_minus_k_log_vocab(causal_tokenizer: PreTrainedTokenizerBase) -> None:
    model = tiny_llama(len(causal_tokenizer))
    with torch.no_grad():
        model.lm_head.weight.zero_()
    scores = causal_sentence_log_likelihoods(model, causal_tokenizer, ["the man", "the doctor is old"])
    vocab = len(causal_tokenizer)
    assert scores.tolist() == pytest.approx([-2 * math.log(vocab), -4 * math.log(vocab)])


def test_batched_scores_equal_single_scores(causal_tokenizer: PreTrainedTokenizerBase) -> None:
    model = tiny_llama(len(causal_tokenizer))
    sentences = ["the man is old", "she was", "the nurse is young and old"]
    batched = causal_sentence_log_likelihoods(model, causal_tokenizer, sentences, batch_size=3)
    ids = [causal_tokenizer.bos_token_id, *causal_tokenizer("she was", add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    by_hand = log_probs[0, ids[1]] + log_probs[1, ids[2]]
    # The forward runs in float32 and a padded batch changes the matmul shapes, so the reduction
    # order (and the CPU's kernel choice) differs between batched and single runs: agreement is at
    # float32 precision (eps 1.2e-7 per operation, accumulated over the layers), not at 1e-9.
    assert float(batched[1]) == pytest.approx(float(by_hand), rel=1e-5, abs=1e-6)
    singles = [float(causal_sentence_log_likelihoods(model, causal_tokenizer, [s])[0]) for s in sentences]
    assert batched.tolist() == pytest.approx(singles, rel=1e-5, abs=1e-6)


def test_shared_tokens_skip_the_edit() -> None:
    assert shared_token_positions([1, 2, 3, 4], [1, 5, 6, 3, 4]) == ([0, 2, 3], [0, 3, 4])


def test_masked_pll_of_uniform_masked_lm() -> None:
    tokenizer = masked_word_tokenizer()
    torch.manual_seed(0)
    model = BertForMaskedLM(
        BertConfig(
            vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    ).eval()
    with torch.no_grad():
        model.cls.predictions.decoder.weight.zero_()
        model.cls.predictions.bias.zero_()
        model.cls.predictions.decoder.bias.zero_()
    more, less = masked_pair_pseudo_log_likelihoods(model, tokenizer, "the nurse is kind", "the doctor is kind")
    assert (more, less) == pytest.approx((-3 * math.log(len(tokenizer)), -3 * math.log(len(tokenizer))))


def test_preferences_count_ties_as_not_biased() -> None:
    assert pair_preferences(np.array([-1.0, -2.0, -3.0]), np.array([-2.0, -2.0, -1.0])).tolist() == [1.0, 0.0, 0.0]


def test_shares_per_direction_and_bias_type() -> None:
    pairs = [
        CrowsPair(0, "m", "l", "stereo", "gender"),
        CrowsPair(1, "m", "l", "antistereo", "gender"),
        CrowsPair(2, "m", "l", "stereo", "age"),
        CrowsPair(3, "m", "l", "stereo", "age"),
    ]
    shares = {s.measure: s for s in crows_pairs_measures(pairs, np.array([1, 1, 0, 1.0]), np.array([0, 2, 1, 0.0]))}
    assert shares["crows_pairs"].value == 0.5 and shares["crows_pairs"].n == 4
    assert shares["crows_pairs.antistereo"].value == 0.0
    assert shares["crows_pairs.stereo"].value == pytest.approx(2 / 3)
    assert shares["crows_pairs.gender"].value == 0.5 and shares["crows_pairs.age"].value == 0.5


def test_bootstrap_interval_brackets_mean_and_is_empty_for_one_item() -> None:
    low, high = bootstrap_mean_interval(np.array([0.0, 1.0] * 50), n_resamples=500)
    assert low is not None and high is not None
    assert low < 0.5 < high and high - low < 0.3
    assert bootstrap_mean_interval(np.array([1.0])) == (None, None)


def test_weat_effect_size_and_exact_p_value() -> None:
    a, b = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    # s-values: X -> [0, -1], Y -> [1, 0]; d = -1 / sqrt(2/3); 4 of 6 partitions exceed -2.
    result = weat(np.array([[1.0, 1.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 1.0]]), a, b)
    assert result.effect_size == pytest.approx(-math.sqrt(1.5))
    assert result.p_value == pytest.approx(4 / 6)
    strong = weat(np.array([[1.0, 0.0], [2.0, 0.0]]), np.array([[0.0, 1.0], [0.0, 3.0]]), a, b)
    assert strong.effect_size == pytest.approx(math.sqrt(3)) and strong.p_value == 0.0


def test_pooling_ignores_padding(causal_tokenizer: PreTrainedTokenizerBase) -> None:
    model = tiny_llama(len(causal_tokenizer))
    batched = pooled_hidden_states(model, causal_tokenizer, ["she was", "the man is old and young"])
    alone = pooled_hidden_states(model, causal_tokenizer, ["she was"])
    assert batched.shape == (2, 32)
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-6)


@pytest.mark.skipif(not (DATA / "crows_pairs").exists(), reason="shared benchmark data not present")
def test_real_files_and_bias_levels_csv(causal_tokenizer: PreTrainedTokenizerBase, tmp_path: Path) -> None:
    pairs = read_crows_pairs(DATA / "crows_pairs" / "crows_pairs_anonymized.csv")
    assert len(pairs) == 1508 and pairs[2].direction == "antistereo" and pairs[2].sent_more.startswith("His mind")
    seat = read_seat_test(DATA / "seat" / "tests" / "weat6.jsonl")
    assert seat.targets_x[0] == "John" and len(seat.targets_y) == 8
    config = BiasConfig.from_dict(
        {
            "crows_pairs_path": str(DATA / "crows_pairs" / "crows_pairs_anonymized.csv"),
            "seat_paths": [str(DATA / "seat" / "tests" / "weat6.jsonl")],
            "max_pairs": 12,
            "n_resamples": 50,
            "n_permutations": 200,
        }
    )
    levels = measure_bias_levels(tiny_llama(len(causal_tokenizer)), causal_tokenizer, config, "base")
    path = write_bias_levels(tmp_path, levels)
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert list(rows[0]) == ["checkpoint", "measure", "value", "ci_low", "ci_high", "n"]
    overall = next(r for r in rows if r["measure"] == "crows_pairs")
    assert overall["n"] == "12" and 0.0 <= float(overall["value"]) <= 1.0
    assert {r["measure"] for r in rows} >= {"seat.weat6.effect_size", "seat.weat6.p_value"}
    write_bias_levels(tmp_path, levels)
    assert len(list(csv.DictReader(path.open(encoding="utf-8")))) == len(rows)
    short = BiasConfig(crows_pairs_path=config.crows_pairs_path, max_pairs=3, n_resamples=10)
    run_bias_stage(tiny_llama(len(causal_tokenizer)), causal_tokenizer, short, tmp_path, "debiased")
    checkpoints = [r["checkpoint"] for r in csv.DictReader(path.open(encoding="utf-8"))]
    assert checkpoints.count("base") == len(rows) and "debiased" in checkpoints


def test_unknown_config_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="crows_path"):
        BiasConfig.from_dict({"crows_path": "x"})
