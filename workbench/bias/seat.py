"""SEAT / WEAT (Caliskan et al. 2017; May et al. 2019): association between two target sets
(X, Y) and two attribute sets (A, B) in a model's sentence representations.

s(w, A, B) = mean_a cos(w, a) - mean_b cos(w, b)
d = (mean_x s(x) - mean_y s(y)) / std_{w in X ∪ Y} s(w)      (sample std, ddof=1, as sent-bias)
p = share of equal-size re-partitions (X_i, Y_i) of X ∪ Y whose statistic
    Σ_x s(x) - Σ_y s(y) is strictly larger than the observed one (one-sided, as sent-bias);
    exact enumeration when the number of partitions is at most ``n_permutations``, else
    ``n_permutations`` random partitions.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

SEAT_KEYS = ("targ1", "targ2", "attr1", "attr2")


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


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    unit: np.ndarray = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return unit


def association(words: np.ndarray, attributes_a: np.ndarray, attributes_b: np.ndarray) -> np.ndarray:
    """s(w, A, B) for each row of ``words`` (n, d) given A (n_a, d) and B (n_b, d); returns (n,)."""
    words, attributes_a, attributes_b = map(_unit_rows, (words, attributes_a, attributes_b))
    scores: np.ndarray = (words @ attributes_a.T).mean(axis=1) - (words @ attributes_b.T).mean(axis=1)
    return scores


def weat(
    targets_x: np.ndarray,
    targets_y: np.ndarray,
    attributes_a: np.ndarray,
    attributes_b: np.ndarray,
    n_permutations: int = 10_000,
    seed: int = 0,
) -> WeatResult:
    """WEAT effect size and permutation p-value from embeddings, each array (n_set, d).

    d is NaN when every target has the same association (e.g. all examples map to one token).
    """
    assoc_x = association(targets_x, attributes_a, attributes_b)
    assoc_y = association(targets_y, attributes_a, attributes_b)
    joined = np.concatenate([assoc_x, assoc_y])
    spread = joined.std(ddof=1)
    effect = (assoc_x.mean() - assoc_y.mean()) / spread if spread > 0 else float("nan")
    observed = assoc_x.sum() - assoc_y.sum()
    size_x, total = assoc_x.size, joined.size
    if math.comb(total, size_x) <= n_permutations:
        partitions = (list(c) for c in itertools.combinations(range(total), size_x))
    else:
        rng = np.random.default_rng(seed)
        partitions = (list(rng.permutation(total)[:size_x]) for _ in range(n_permutations))
    total_sum = joined.sum()
    statistics = np.array([2 * joined[idx].sum() - total_sum for idx in partitions])
    p_value = float((statistics > observed).mean())
    return WeatResult(float(effect), p_value)


@torch.no_grad()
def mean_pooled_hidden_states(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    layer: int = -1,
    batch_size: int = 16,
) -> np.ndarray:
    """Mean over non-pad tokens of ``hidden_states[layer]`` (-1 = last layer); returns (n, d_model)."""
    device = next(model.parameters()).device
    pooled: list[np.ndarray] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start : start + batch_size]), return_tensors="pt", padding=True)
        batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        hidden = model(**batch, output_hidden_states=True).hidden_states[layer].double()
        mask = batch["attention_mask"].unsqueeze(-1).double()
        pooled.append(((hidden * mask).sum(dim=1) / mask.sum(dim=1)).cpu().numpy())
    return np.concatenate(pooled) if pooled else np.zeros((0, 0))


def run_seat_test(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    test: SeatTest,
    layer: int = -1,
    n_permutations: int = 10_000,
    seed: int = 0,
    batch_size: int = 16,
) -> WeatResult:
    """WEAT on mean-pooled hidden states of ``layer`` for every example of ``test``
    (``batch_size`` sentences per forward pass)."""
    targets_x, targets_y, attributes_a, attributes_b = (
        mean_pooled_hidden_states(model, tokenizer, examples, layer, batch_size)
        for examples in (test.targets_x, test.targets_y, test.attributes_a, test.attributes_b)
    )
    return weat(targets_x, targets_y, attributes_a, attributes_b, n_permutations=n_permutations, seed=seed)
