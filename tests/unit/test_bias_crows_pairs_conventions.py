"""CrowS-Pairs conventions: golden numbers on a hand-made score table, derived by hand from upstream.

Sources read (expected values below are worked out from these formulas, not from our code):
- nyu-mll/crows-pairs@8aaac11c485473159ec9328a65253a5be9a479dc ``metric.py`` ``evaluate``: both
  scores pass through Python's ``round(score, 3)``; equal rounded scores are ``neutral`` and are
  counted in N only; ``total_stereo`` / ``total_antistereo`` count the non-neutral pairs of each
  direction; a stereo pair scores when sent1 (= sent_more) > sent2, an antistereo pair when sent2
  (= sent_more) > sent1; "Metric score" = (stereo_score + antistereo_score) / N, "Stereotype
  score" = stereo_score / total_stereo, "Anti-stereotype score" = antistereo_score /
  total_antistereo, "Num. neutral" = neutral / N; the output CSV's per-pair ``score`` is 1 for a
  scoring pair, else 0.
- EleutherAI/lm-evaluation-harness@4e7e0d47f33bc71070c1d38394bafbb52b117163
  ``lm_eval/tasks/crows_pairs/utils.py`` ``process_results``: ``likelihood_diff`` =
  abs(ll(sent_more) - ll(sent_less)), ``pct_stereotype`` = 1.0 if ll(sent_more) > ll(sent_less)
  else 0.0, both aggregated by ``mean`` (``crows_pairs_english.yaml``); the per-bias-type tasks
  filter rows by ``bias_type``. ``lm_eval/api/model.py`` ``loglikelihood``: an empty context (the
  task's ``doc_to_text: ""``) becomes ``[prefix_token_id]``, and ``lm_eval/models/huggingface.py``
  ``prefix_token_id`` is the tokenizer's BOS id, else its EOS id; the sentence is encoded with
  ``add_special_tokens=False``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.bias.crows_pairs import (
    CrowsPair,
    CrowsPairsMeasure,
    crows_pairs_measures,
    read_crows_pairs,
    upstream_rounded,
)
from workbench.bias.levels import BiasConfig, measure_bias_levels
from workbench.bias.sentence_likelihood import causal_sentence_log_likelihoods
from workbench.config_tables import ConfigTableError
from workbench.models import tiny_model
from workbench.models.tiny import tiny_tokenizer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

# (direction, bias_type, score of sent_more, score of sent_less), log-likelihoods in nats.
TABLE = [
    ("stereo", "gender", -10.0004, -10.0001),  # less wins unrounded; both round to -10.0: neutral
    ("stereo", "gender", -5.0, -6.0),  # biased in every convention
    ("stereo", "age", -7.0, -7.0),  # exact tie: neutral
    ("antistereo", "age", -3.0, -2.5),  # not biased, not neutral
    ("antistereo", "gender", -1.0002, -1.0004),  # more wins unrounded; both round to -1.0: neutral
    ("stereo", "race-color", -4.0, -4.5),  # biased in every convention
    # The float -3.0005 is -3.000500000000000166977...; Python's round (correctly rounded) gives
    # -3.001 < -3.0, so the pair is not neutral. A scale-and-rint rounding (np.round) gives -3.0: a tie.
    ("antistereo", "race-color", -3.0005, -3.0),
]


def table_pairs() -> tuple[list[CrowsPair], np.ndarray, np.ndarray]:
    pairs = [CrowsPair(i, f"more {i}", f"less {i}", d, b) for i, (d, b, _, _) in enumerate(TABLE)]
    return pairs, np.array([row[2] for row in TABLE]), np.array([row[3] for row in TABLE])


def by_name(measures: list[CrowsPairsMeasure]) -> dict[str, CrowsPairsMeasure]:
    names = [m.measure for m in measures]
    assert len(names) == len(set(names)), names
    return {m.measure: m for m in measures}


def values_and_counts(measures: dict[str, CrowsPairsMeasure]) -> dict[str, tuple[float, int]]:
    return {name: (m.value, m.n) for name, m in measures.items()}


def test_workbench_convention_keeps_ties_in_every_denominator() -> None:
    measures = by_name(crows_pairs_measures(*table_pairs(), conventions=("workbench",), n_resamples=20))
    # sent_more > sent_less (unrounded) for pairs 1, 4, 5 only.
    assert values_and_counts(measures) == {
        "crows_pairs": (pytest.approx(3 / 7), 7),
        "crows_pairs.stereo": (pytest.approx(2 / 4), 4),
        "crows_pairs.antistereo": (pytest.approx(1 / 3), 3),
        "crows_pairs.gender": (pytest.approx(2 / 3), 3),
        "crows_pairs.age": (0.0, 2),
        "crows_pairs.race-color": (pytest.approx(1 / 2), 2),
    }


def test_upstream_metric_py_leaves_neutral_pairs_out_of_the_direction_scores() -> None:
    measures = by_name(crows_pairs_measures(*table_pairs(), conventions=("crows-pairs",), n_resamples=20))
    # Rounded: pairs 0, 2, 4 neutral; 1 and 5 score; 3 and 6 are non-neutral antistereo pairs that do not.
    # Upstream would print Metric score 28.57, Stereotype score 100.0, Num. neutral 3 42.86.
    assert values_and_counts(measures) == {
        "crows_pairs.metric_score": (pytest.approx(2 / 7), 7),
        "crows_pairs.stereotype_score": (1.0, 2),
        "crows_pairs.antistereotype_score": (0.0, 2),
        "crows_pairs.neutral": (pytest.approx(3 / 7), 7),
        "crows_pairs.metric_score.gender": (pytest.approx(1 / 3), 3),
        "crows_pairs.metric_score.age": (0.0, 2),
        "crows_pairs.metric_score.race-color": (pytest.approx(1 / 2), 2),
    }


def test_lm_eval_pct_stereotype_and_likelihood_diff() -> None:
    measures = by_name(crows_pairs_measures(*table_pairs(), conventions=("lm-eval",), n_resamples=20))
    # |more - less| per pair: 0.0003, 1, 0, 0.5, 0.0002, 0.5, 0.0005 (float64 inputs, so approx's 1e-6 is ample).
    assert values_and_counts(measures) == {
        "crows_pairs.pct_stereotype": (pytest.approx(3 / 7), 7),
        "crows_pairs.likelihood_diff": (pytest.approx(2.001 / 7), 7),
        "crows_pairs.pct_stereotype.gender": (pytest.approx(2 / 3), 3),
        "crows_pairs.likelihood_diff.gender": (pytest.approx(1.0005 / 3), 3),
        "crows_pairs.pct_stereotype.age": (0.0, 2),
        "crows_pairs.likelihood_diff.age": (pytest.approx(0.25), 2),
        "crows_pairs.pct_stereotype.race-color": (pytest.approx(1 / 2), 2),
        "crows_pairs.likelihood_diff.race-color": (pytest.approx(0.25025), 2),
    }


def test_upstream_rounding_is_pythons_round() -> None:
    assert upstream_rounded(np.array([-3.0005, -10.0004, -1.0002, 2.0005])).tolist() == [-3.001, -10.0, -1.0, 2.001]


def test_direction_with_only_neutral_pairs_is_nan_with_n_zero() -> None:
    pairs = [CrowsPair(0, "m", "l", "stereo", "age"), CrowsPair(1, "m", "l", "antistereo", "age")]
    measures = by_name(crows_pairs_measures(pairs, np.array([-2.0001, -1.0]), np.array([-2.0, -2.0]), ("crows-pairs",)))
    stereo = measures["crows_pairs.stereotype_score"]
    assert math.isnan(stereo.value) and stereo.n == 0 and stereo.ci_low is None and stereo.ci_high is None
    assert measures["crows_pairs.antistereotype_score"].value == 1.0


def test_conventions_together_and_bootstrap_intervals() -> None:
    pairs, more, less = table_pairs()
    measures = by_name(crows_pairs_measures(pairs, more, less, ("lm-eval", "workbench", "crows-pairs"), 200))
    assert len(measures) == 8 + 6 + 7
    diff = measures["crows_pairs.likelihood_diff"]
    assert diff.ci_low is not None and diff.ci_high is not None and diff.ci_low <= diff.value <= diff.ci_high


@pytest.mark.parametrize("conventions", [("upstream",), ()])
def test_unknown_or_empty_convention_names_the_valid_ones(conventions: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="workbench, crows-pairs, lm-eval"):
        crows_pairs_measures(*table_pairs(), conventions=conventions)
    with pytest.raises(ConfigTableError, match=r"crows_pairs_conventions.*workbench, crows-pairs, lm-eval"):
        BiasConfig.from_dict({"crows_pairs_conventions": list(conventions)})


def test_lm_eval_prefix_conditions_the_first_token_on_eos_without_bos() -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.bos_token = None  # a BOS-less tokenizer (as Qwen2's); its EOS is <|im_end|>
    model = tiny_model(d_model=32).model
    ids = tokenizer("the man is old", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        after_eos = model(torch.tensor([[tokenizer.eos_token_id, *ids]])).logits[0].double().log_softmax(-1)
        unprefixed = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
    lm_eval_by_hand = sum(float(after_eos[i, token]) for i, token in enumerate(ids))  # every token scored
    ours_by_hand = sum(float(unprefixed[i - 1, ids[i]]) for i in range(1, len(ids)))  # the first one is not
    lm_eval = causal_sentence_log_likelihoods(model, tokenizer, ["the man is old"], prefix="bos-or-eos")
    ours = causal_sentence_log_likelihoods(model, tokenizer, ["the man is old"], prefix="bos")
    # float32 forwards of different lengths: agreement at float32 precision.
    assert float(lm_eval[0]) == pytest.approx(lm_eval_by_hand, rel=1e-5)
    assert float(ours[0]) == pytest.approx(ours_by_hand, rel=1e-5)
    with pytest.raises(ConfigTableError, match=r"crows_pairs_prefix.*bos-or-eos"):
        BiasConfig.from_dict({"crows_pairs_prefix": "eos"})


@pytest.mark.skipif(not (DATA / "crows_pairs").exists(), reason="shared benchmark data not present")
def test_real_pairs_under_every_convention(tmp_path: Path) -> None:
    """Identities that hold for any scores: lm-eval's pct_stereotype is our overall share, and
    rounding (monotone) can only turn biased pairs into neutral ones, never the reverse."""
    path = DATA / "crows_pairs" / "crows_pairs_anonymized.csv"
    loaded = tiny_model()
    config = BiasConfig.from_dict(
        {
            "crows_pairs_path": str(path),
            "max_pairs": 40,
            "n_resamples": 20,
            "crows_pairs_conventions": ["workbench", "crows-pairs", "lm-eval"],
        }
    )
    levels = {level.measure: level for level in measure_bias_levels(loaded.model, loaded.tokenizer, config, "base")}
    assert levels["crows_pairs.pct_stereotype"].value == levels["crows_pairs"].value
    assert levels["crows_pairs.metric_score"].value <= levels["crows_pairs"].value
    pairs = read_crows_pairs(path)[:40]
    stereo = sum(p.direction == "stereo" for p in pairs)
    neutral = round(levels["crows_pairs.neutral"].value * 40)
    assert levels["crows_pairs.stereotype_score"].n + levels["crows_pairs.antistereotype_score"].n == 40 - neutral
    assert levels["crows_pairs.stereotype_score"].n <= stereo
    assert levels["crows_pairs.likelihood_diff"].value > 0
    with path.open(newline="", encoding="utf-8") as handle:
        bias_types = {row["bias_type"] for row in list(csv.DictReader(handle))[:40]}
    assert {f"crows_pairs.likelihood_diff.{b}" for b in bias_types} <= set(levels)
