"""The ``workbench bias`` stage: measure intrinsic bias of one checkpoint and write
``attribution/bias_levels.csv`` (RUN_FOLDER.md: checkpoint, measure, value, ci_low, ci_high, n).

Measures written:
- CrowS-Pairs, for each of ``crows_pairs_conventions`` (``workbench/bias/crows_pairs.py``): by
  default ``crows_pairs`` / ``crows_pairs.<direction>`` / ``crows_pairs.<bias_type>``, the share
  of pairs (0..1) whose more-stereotyping sentence scored higher; ``crows-pairs`` adds upstream's
  ``crows_pairs.metric_score`` / ``.stereotype_score`` / ``.antistereotype_score`` / ``.neutral``,
  ``lm-eval`` its ``crows_pairs.pct_stereotype`` / ``.likelihood_diff``; CI = 95 % bootstrap over
  the measure's pairs;
- ``seat.<test>.effect_size`` and ``seat.<test>.p_value``: WEAT d and its permutation p-value
  (no CI; n = number of target + attribute examples).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from transformers import PreTrainedTokenizerBase

from workbench.bias.crows_pairs import (
    check_crows_pairs_conventions,
    crows_pairs_measures,
    read_crows_pairs,
    score_crows_pairs,
)
from workbench.bias.seat import P_VALUE_CONVENTIONS, POOLINGS, read_seat_test, run_seat_test
from workbench.bias.sentence_likelihood import (
    PREFIXES,
    causal_sentence_log_likelihoods,
    masked_pair_pseudo_log_likelihoods,
)
from workbench.config_tables import dataclass_from_table
from workbench.run_folder import RUN_TABLES, RunFolder
from workbench.run_tables import BiasLevel, row_cells

LIKELIHOODS = ("causal", "masked")


@dataclass(frozen=True)
class BiasConfig:
    """What ``workbench bias`` measures.

    Attributes:
        crows_pairs_path: crows_pairs_anonymized.csv, or None to skip CrowS-Pairs.
        seat_paths: SEAT test files (seat/tests/*.jsonl) to run; empty to skip SEAT.
        likelihood: ``causal`` (total sentence log-likelihood) or ``masked`` (Nangia et al. PLL).
        crows_pairs_prefix: what conditions a sentence's first token under ``causal``: ``bos`` (ours: BOS when
            the tokenizer has one, else the first token is not scored) or ``bos-or-eos``
            (lm-evaluation-harness: BOS, else EOS).
        crows_pairs_conventions: which CrowS-Pairs measures to write: ``workbench`` (ours),
            ``crows-pairs`` (nyu-mll/crows-pairs metric.py), ``lm-eval`` (lm-evaluation-harness);
            any non-empty list, their measure names do not collide.
        seat_layer: hidden-state layer to pool for SEAT (-1 = last).
        seat_pooling: ``mean`` (ours: mean over all tokens, specials included) or ``first`` (sent-bias:
            the first token of the sentence tokenized without special tokens).
        seat_p_value: ``workbench`` (ours: strictly larger, no pseudo-count) or ``sent-bias`` (ties
            count, +1 pseudo-count when sampling).
        max_pairs: keep only the first N CrowS pairs (None = all 1,508).
        n_resamples: bootstrap resamples; n_permutations: SEAT permutation budget.
        batch_size: sentences per forward pass; seed: bootstrap and permutation seed.
    """

    crows_pairs_path: str | None = None
    seat_paths: tuple[str, ...] = ()
    likelihood: str = "causal"
    crows_pairs_prefix: str = "bos"
    crows_pairs_conventions: tuple[str, ...] = ("workbench",)
    seat_layer: int = -1
    seat_pooling: str = "mean"
    seat_p_value: str = "workbench"
    max_pairs: int | None = None
    n_resamples: int = 1000
    n_permutations: int = 10_000
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"bias.likelihood is {self.likelihood!r}; use one of {LIKELIHOODS}")
        if self.crows_pairs_prefix not in PREFIXES:
            raise ValueError(f"bias.crows_pairs_prefix is {self.crows_pairs_prefix!r}; use one of {PREFIXES}")
        check_crows_pairs_conventions(self.crows_pairs_conventions, "bias.crows_pairs_conventions")
        if self.seat_pooling not in POOLINGS:
            raise ValueError(f"bias.seat_pooling is {self.seat_pooling!r}; use one of {POOLINGS}")
        if self.seat_p_value not in P_VALUE_CONVENTIONS:
            raise ValueError(f"bias.seat_p_value is {self.seat_p_value!r}; use one of {P_VALUE_CONVENTIONS}")
        if self.n_permutations < 1:
            raise ValueError(f"bias.n_permutations is {self.n_permutations}; it must be at least 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BiasConfig:
        """Build from a TOML ``[bias]`` table; unknown keys are an error naming the valid ones."""
        return dataclass_from_table(cls, data, "bias")


def measure_bias_levels(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, config: BiasConfig, checkpoint: str
) -> list[BiasLevel]:
    """Run every configured measure on ``model``; ``checkpoint`` labels the rows."""
    model.eval()
    levels: list[BiasLevel] = []
    if config.crows_pairs_path is not None:
        pairs = read_crows_pairs(Path(config.crows_pairs_path))[: config.max_pairs]
        if config.likelihood == "causal":
            more, less = score_crows_pairs(
                pairs,
                lambda sentences: causal_sentence_log_likelihoods(
                    model, tokenizer, sentences, config.batch_size, config.crows_pairs_prefix
                ).numpy(),
            )
        else:
            scored = [masked_pair_pseudo_log_likelihoods(model, tokenizer, p.sent_more, p.sent_less) for p in pairs]
            more, less = np.array([s[0] for s in scored]), np.array([s[1] for s in scored])
        measures = crows_pairs_measures(
            pairs, more, less, config.crows_pairs_conventions, config.n_resamples, config.seed
        )
        for measure in measures:
            levels.append(
                BiasLevel(checkpoint, measure.measure, measure.value, measure.ci_low, measure.ci_high, measure.n)
            )
    for seat_path in config.seat_paths:
        test = read_seat_test(Path(seat_path))
        result = run_seat_test(
            model,
            tokenizer,
            test,
            config.seat_layer,
            config.n_permutations,
            config.seed,
            config.batch_size,
            config.seat_pooling,
            config.seat_p_value,
        )
        n = sum(len(s) for s in (test.targets_x, test.targets_y, test.attributes_a, test.attributes_b))
        levels.append(BiasLevel(checkpoint, f"seat.{test.name}.effect_size", result.effect_size, None, None, n))
        levels.append(BiasLevel(checkpoint, f"seat.{test.name}.p_value", result.p_value, None, None, n))
    return levels


def write_bias_levels(run_dir: Path, levels: list[BiasLevel]) -> Path:
    """Write ``run_dir/attribution/bias_levels.csv``: a row of the same (checkpoint, measure) is
    replaced where it stands, other earlier rows are kept (so ``workbench attribute``'s
    winogender rows and ``workbench bias``'s CrowS/SEAT rows of one checkpoint live side by
    side), new rows are appended."""
    path = RunFolder(Path(run_dir)).table("bias_levels")
    columns = RUN_TABLES["bias_levels"].columns
    path.parent.mkdir(parents=True, exist_ok=True)
    rows: dict[tuple[str, str], list[str]] = {}
    if path.exists():
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                rows[(row["checkpoint"], row["measure"])] = [row[column] for column in columns]
    for level in levels:
        rows[(level.checkpoint, level.measure)] = row_cells(level)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows.values())
    return path


def run_bias_stage(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, config: BiasConfig, run_dir: Path, checkpoint: str
) -> Path:
    """``workbench bias``: measure ``model`` and write its rows of attribution/bias_levels.csv."""
    return write_bias_levels(run_dir, measure_bias_levels(model, tokenizer, config, checkpoint))
