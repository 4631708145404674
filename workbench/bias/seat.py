"""SEAT / WEAT (Caliskan et al. 2017; May et al. 2019): association between two target sets
(X, Y) and two attribute sets (A, B) in a model's sentence representations.

s(w, A, B) = mean_a cos(w, a) - mean_b cos(w, b)
d = (mean_x s(x) - mean_y s(y)) / std_{w in X ∪ Y} s(w)      (sample std, ddof=1, as sent-bias)

The one-sided permutation p-value compares the observed partition with equal-size
re-partitions (X_i, Y_i) of X ∪ Y; exact enumeration when there are at most ``n_permutations``
partitions, else random partitions. Two conventions (``docs/protocols.md`` §2.8):

- ``workbench`` (ours, the default): the share of partitions whose Σ_x s(x) - Σ_y s(y) is
  strictly larger than the observed one; ``n_permutations`` random partitions when sampling.
- ``sent-bias`` (W4ngatang/sent-bias@e3559fb ``sentbias/weat.py`` ``p_val_permutation_test``):
  the share of partitions whose Σ_{x in X_i} s(x) is larger than **or equal to** the observed
  Σ_{x in X} s(x) (ties count, the observed partition among them); when sampling, one
  pseudo-observation is counted and ``n_permutations - 1`` random partitions are drawn, so
  p = (1 + k) / n_permutations.

Sentence vectors pool one hidden layer (``pooling``): ``mean`` (ours, the default) averages the
states of every token of the tokenizer's encoding, special tokens included; ``first`` takes the
state of the first token of the sentence tokenized **without** special tokens (its first word
piece, not [CLS]), as sent-bias ``sentbias/encoders/bert.py`` ``encode`` does. Batches are
right-padded, so a sentence's vector does not depend on the other sentences of its batch.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

SEAT_KEYS = ("targ1", "targ2", "attr1", "attr2")
P_VALUE_CONVENTIONS = ("workbench", "sent-bias")
POOLINGS = ("mean", "first")


class SeatFormatError(ValueError):
    """A SEAT test file is not a single JSON object with targ1/targ2/attr1/attr2."""


@dataclass(frozen=True)
class SeatTest:
    """One SEAT test: the name (file stem) and the four example lists."""

    name: str
    targets_x: tuple[str, ...]
    targets_y: tuple[str, ...]
    attributes_a: tuple[str, ...]
    attributes_b: tuple[str, ...]


@dataclass(frozen=True)
class WeatResult:
    """Effect size d (dimensionless) and one-sided permutation p-value."""

    effect_size: float
    p_value: float


def read_seat_test(path: Path) -> SeatTest:
    """Read one ``seat/tests/*.jsonl`` file (despite the name, a single JSON object)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SeatFormatError(
            f"{path}:{error.lineno}: not one JSON object ({error.msg}); SEAT files are json.load-able"
        ) from error
    missing = [k for k in SEAT_KEYS if k not in obj or "examples" not in obj[k]]
    if missing:
        raise SeatFormatError(f"{path}: missing {missing}; each of {SEAT_KEYS} needs an 'examples' list")
    lists = [tuple(obj[k]["examples"]) for k in SEAT_KEYS]
    return SeatTest(path.stem, *lists)


def _check_choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ValueError(f"{key} is {value!r}; use one of {choices}")


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    unit: np.ndarray = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return unit


def association(words: np.ndarray, attributes_a: np.ndarray, attributes_b: np.ndarray) -> np.ndarray:
    """s(w, A, B) for each row of ``words`` (n, d) given A (n_a, d) and B (n_b, d); returns (n,)."""
    words, attributes_a, attributes_b = map(_unit_rows, (words, attributes_a, attributes_b))
    scores: np.ndarray = (words @ attributes_a.T).mean(axis=1) - (words @ attributes_b.T).mean(axis=1)
    return scores


def _partitions(total: int, size_x: int, n_draws: int | None, seed: int) -> Iterator[list[int]]:
    """Positions in X ∪ Y of each X_i: every ``size_x``-subset in itertools order when ``n_draws``
    is None (the exact test), else ``n_draws`` random ones (the first ``size_x`` positions of a
    random permutation, numpy ``default_rng(seed)``)."""
    if n_draws is None:
        return (list(subset) for subset in itertools.combinations(range(total), size_x))
    rng = np.random.default_rng(seed)
    return (list(rng.permutation(total)[:size_x]) for _ in range(n_draws))


def permutation_p_value(
    assoc_x: np.ndarray, assoc_y: np.ndarray, n_permutations: int = 10_000, seed: int = 0, convention: str = "workbench"
) -> float:
    """One-sided permutation p-value of the WEAT statistic (module docstring) from s-values.

    Args:
        assoc_x, assoc_y: s(w, A, B) of the targets, shapes (n_x,) and (n_y,).
        n_permutations: exact test when C(n_x + n_y, n_x) <= this, else the sampling budget.
        convention: ``"workbench"`` or ``"sent-bias"``.
    """
    _check_choice(convention, P_VALUE_CONVENTIONS, "p-value convention")
    if n_permutations < 1:
        raise ValueError(f"n_permutations is {n_permutations}; it must be at least 1")
    joined = np.concatenate([assoc_x, assoc_y])
    size_x, total = assoc_x.size, joined.size
    exact = math.comb(total, size_x) <= n_permutations
    if convention == "workbench":
        total_sum = joined.sum()
        partitions = _partitions(total, size_x, None if exact else n_permutations, seed)
        statistics = np.array([2 * joined[idx].sum() - total_sum for idx in partitions])
        return float((statistics > assoc_x.sum() - assoc_y.sum()).mean())
    # sent-bias compares Σ over X_i alone (the full statistic is monotone in it); ties count.
    observed = joined[:size_x].sum()
    partitions = _partitions(total, size_x, None if exact else n_permutations - 1, seed)
    at_least = int(np.count_nonzero(np.array([joined[idx].sum() for idx in partitions]) >= observed))
    return at_least / math.comb(total, size_x) if exact else (1 + at_least) / n_permutations


def weat(
    targets_x: np.ndarray,
    targets_y: np.ndarray,
    attributes_a: np.ndarray,
    attributes_b: np.ndarray,
    n_permutations: int = 10_000,
    seed: int = 0,
    p_value: str = "workbench",
) -> WeatResult:
    """WEAT effect size and permutation p-value (convention ``p_value``) from embeddings, each array (n_set, d).

    d is NaN when every target has the same association (e.g. all examples map to one token).
    """
    assoc_x = association(targets_x, attributes_a, attributes_b)
    assoc_y = association(targets_y, attributes_a, attributes_b)
    spread = np.concatenate([assoc_x, assoc_y]).std(ddof=1)
    effect = (assoc_x.mean() - assoc_y.mean()) / spread if spread > 0 else float("nan")
    return WeatResult(float(effect), permutation_p_value(assoc_x, assoc_y, n_permutations, seed, p_value))


@torch.no_grad()
def pooled_hidden_states(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    layer: int = -1,
    batch_size: int = 16,
    pooling: str = "mean",
) -> np.ndarray:
    """Sentence vectors from ``hidden_states[layer]`` (-1 = last layer), pooled by ``pooling``
    (module docstring); returns float64 (n, d_model).

    Each batch is right-padded by hand (whatever the tokenizer's ``padding_side``): every sentence
    keeps positions 0..len-1 and its tokens attend to no padding, so the vector is the same alone
    or in any batch (left padding without position ids would shift absolute positions, GPT-2).
    """
    _check_choice(pooling, POOLINGS, "pooling")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pooled: list[np.ndarray] = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        encoded = [tokenizer(text, add_special_tokens=pooling == "mean")["input_ids"] for text in chunk]
        empty = [text for text, ids in zip(chunk, encoded) if not ids]
        if empty:
            raise ValueError(f"SEAT example {empty[0]!r} has no tokens; drop it from the test file")
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        hidden = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        states = hidden.hidden_states[layer].double()
        if pooling == "first":
            pooled.append(states[:, 0].cpu().numpy())
        else:
            mask = attention_mask.unsqueeze(-1).double()
            pooled.append(((states * mask).sum(dim=1) / mask.sum(dim=1)).cpu().numpy())
    return np.concatenate(pooled) if pooled else np.zeros((0, 0))


def run_seat_test(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    test: SeatTest,
    layer: int = -1,
    n_permutations: int = 10_000,
    seed: int = 0,
    batch_size: int = 16,
    pooling: str = "mean",
    p_value: str = "workbench",
) -> WeatResult:
    """WEAT on the ``pooling``-pooled hidden states of ``layer`` for every example of ``test``
    (``batch_size`` sentences per forward pass), p-value under convention ``p_value``."""
    _check_choice(p_value, P_VALUE_CONVENTIONS, "p_value")
    targets_x, targets_y, attributes_a, attributes_b = (
        pooled_hidden_states(model, tokenizer, examples, layer, batch_size, pooling)
        for examples in (test.targets_x, test.targets_y, test.attributes_a, test.attributes_b)
    )
    return weat(targets_x, targets_y, attributes_a, attributes_b, n_permutations, seed, p_value)
