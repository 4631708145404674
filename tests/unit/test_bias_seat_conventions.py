"""SEAT conventions: sent-bias's permutation p-value, first-token pooling, batch-independent vectors.

Source read: W4ngatang/sent-bias@e3559fb669ca4832743b42fee715994c15c7f1af (``sentbias/weat.py`` and
``sentbias/encoders/bert.py`` are unchanged there since 60f1fb1).
- ``weat.py`` ``p_val_permutation_test`` (non-parametric): s = Σ_{x in X} s(x, A, B); over every
  partition X_i of X ∪ Y (``itertools.combinations``, exact) or over ``n_samples - 1`` shuffles
  after one "hallucinated" positive (``total_true = total = 1``), a partition counts when
  s_i > s or s_i == s ("conservative test"); p = total_true / total. The exact test is used when
  binom(2|X|, |X|) <= n_samples.
- ``encoders/bert.py`` ``encode``: ``tokenizer.tokenize(text)`` (no [CLS]/[SEP]), one sentence per
  forward pass, ``enc[:, 0, :]`` of the last layer.
Expected p-values below are counted by hand from those rules.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_bias import masked_word_tokenizer
from transformers import BertConfig, BertForMaskedLM

from workbench.bias.levels import BiasConfig
from workbench.bias.seat import permutation_p_value, pooled_hidden_states, weat
from workbench.config_tables import ConfigTableError
from workbench.models import tiny_model

A, B = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
# float32 forwards whose matmul shapes differ (batch vs one sentence): agreement at float32 precision.
RTOL, ATOL = 1e-5, 1e-6


def test_exact_test_counts_ties_including_the_observed_partition() -> None:
    # s-values: X -> [0, -1] (cos to A and B equal for [1, 1]), Y -> [1, 0]; observed Σ_X = -1.
    # The 6 subsets of size 2 sum to -1, 1, 0, 0, -1, 1: all six are >= -1, so p = 6/6.
    targets_x, targets_y = np.array([[1.0, 1.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 1.0]])
    assert weat(targets_x, targets_y, A, B, p_value="sent-bias").p_value == 1.0
    assert weat(targets_x, targets_y, A, B, p_value="workbench").p_value == pytest.approx(4 / 6)


def test_exact_test_never_gives_zero() -> None:
    # s-values [1, 1 | -1, -1]; observed Σ_X = 2; only {x1, x2} reaches 2: p = 1/6 (ours: 0).
    strong_x, strong_y = np.array([[1.0, 0.0], [2.0, 0.0]]), np.array([[0.0, 1.0], [0.0, 3.0]])
    assert weat(strong_x, strong_y, A, B, p_value="sent-bias").p_value == pytest.approx(1 / 6)
    assert weat(strong_x, strong_y, A, B, p_value="workbench").p_value == 0.0


@pytest.mark.parametrize("n_permutations", [10, 7])
def test_sampling_adds_one_pseudo_observation(n_permutations: int) -> None:
    # 30 targets with s = +1 against 30 with s = -1: only X itself reaches Σ = 30, and C(60, 30) ~ 1.2e17
    # partitions is far above the budget, so n - 1 draws that (but for odds ~1e-16) all fall short: p = 1/n.
    targets_x = np.tile([[1.0, 0.0]], (30, 1)) * np.arange(1, 31)[:, None]
    targets_y = np.tile([[0.0, 1.0]], (30, 1)) * np.arange(1, 31)[:, None]
    result = weat(targets_x, targets_y, A, B, n_permutations=n_permutations, p_value="sent-bias")
    assert result.p_value == pytest.approx(1 / n_permutations)
    assert weat(targets_x, targets_y, A, B, n_permutations=n_permutations).p_value == 0.0


def test_sampling_counts_every_tie() -> None:
    # Every target has s = 0, so every draw ties the observed sum: (1 + 9) / 10. d is undefined.
    targets = np.ones((30, 2))
    result = weat(targets, targets, A, B, n_permutations=10, p_value="sent-bias")
    assert result.p_value == 1.0 and math.isnan(result.effect_size)
    assert permutation_p_value(np.zeros(30), np.zeros(30), 10, convention="workbench") == 0.0


def test_unknown_conventions_are_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'workbench', 'sent-bias'"):
        permutation_p_value(np.zeros(2), np.zeros(2), convention="strict")
    with pytest.raises(ConfigTableError, match=r"seat_p_value.*'workbench', 'sent-bias'"):
        BiasConfig.from_dict({"seat_p_value": "exact"})
    with pytest.raises(ConfigTableError, match=r"seat_pooling.*'mean', 'first'"):
        BiasConfig.from_dict({"seat_pooling": "cls"})
    with pytest.raises(ConfigTableError, match="n_permutations"):
        BiasConfig.from_dict({"n_permutations": 0})


def test_first_token_pooling_is_the_first_word_piece_without_cls() -> None:
    tokenizer = masked_word_tokenizer()
    torch.manual_seed(0)
    model = BertForMaskedLM(
        BertConfig(
            vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
        )
    ).eval()
    vocab = tokenizer.get_vocab()
    texts = ["the nurse is kind", "she was", "a doctor is kind"]
    vectors = pooled_hidden_states(model, tokenizer, texts, batch_size=3, pooling="first")
    for text, vector in zip(texts, vectors):
        ids = torch.tensor([[vocab[word] for word in text.split()]])  # as sent-bias: no [CLS] / [SEP]
        with torch.no_grad():
            expected = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, 0].double()
        np.testing.assert_allclose(vector, expected.numpy(), rtol=RTOL, atol=ATOL)
    with_cls = torch.tensor([[vocab["[CLS]"], vocab["she"], vocab["was"], vocab["[SEP]"]]])
    with torch.no_grad():
        cls_state = model(input_ids=with_cls, output_hidden_states=True).hidden_states[-1][0, 0].double().numpy()
    assert not np.allclose(vectors[1], cls_state, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("pooling", ["mean", "first"])
def test_gpt2_vectors_do_not_depend_on_the_batch(pooling: str) -> None:
    """Absolute positions (GPT-2): with the loader's left padding and no position ids, a short
    sentence batched with a long one would be read at shifted positions."""
    loaded = tiny_model("gpt2", d_model=32)
    assert loaded.tokenizer.padding_side == "left"  # what workbench.models.loading sets for generation
    texts = ["she was", "the man is old and the nurse is young", "the doctor"]
    batched = pooled_hidden_states(loaded.model, loaded.tokenizer, texts, batch_size=3, pooling=pooling)
    alone = np.concatenate(
        [pooled_hidden_states(loaded.model, loaded.tokenizer, [text], pooling=pooling) for text in texts]
    )
    assert batched.shape == (3, 32)
    np.testing.assert_allclose(batched, alone, rtol=RTOL, atol=ATOL)
