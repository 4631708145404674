"""Semantic uncertainty on hand-made samples: the equivalence rules, the clustering, the configuration keys.

Expected clusters and values are worked out by hand from docs/protocols.md §2.2: paper 4's rule
(HaitaoMao/LLM-self-correction@071c790 ``analysis/uncerntainty.py``, ``clustering``: equivalent
unless either direction predicts CONTRADICTION) and Kuhn et al.'s bidirectional entailment.
"""

from __future__ import annotations

import numpy as np
import pytest

from workbench.config import ConfigError, ProtocolSettings, RunConfig
from workbench.inference.semantic_equivalence import (
    DEFAULT_NLI_MODEL,
    NliLabels,
    equivalence_name,
    judged_equivalence,
    nli_equivalent,
    nli_rule_of,
    option_equivalence,
    resolved_rule,
)
from workbench.metrics.uncertainty import anchor_clusters, distinct_samples, semantic_uncertainty

# microsoft/deberta-large-mnli's config.id2label: 0 CONTRADICTION, 1 NEUTRAL, 2 ENTAILMENT
C, N, E = 0, 1, 2
MNLI = NliLabels(entailment=E, contradiction=C)
SAMPLES = ["The grandfather", "The old man", "The grandson", "Nobody knows"]
# JUDGED[i][j]: predicted class of SAMPLES[i] => SAMPLES[j] (diagonal never compared)
JUDGED = np.array(
    [
        [-1, E, C, N],
        [E, -1, C, N],
        [C, C, -1, N],
        [N, E, N, -1],
    ]
)
NLL = [1.0, 2.0, 3.0, 4.0]


def test_bidirectional_entailment_needs_entailment_both_ways() -> None:
    assert nli_equivalent(E, E, MNLI, "nli-bidirectional")
    assert not nli_equivalent(E, N, MNLI, "nli-bidirectional")
    assert not nli_equivalent(N, N, MNLI, "nli-bidirectional")
    assert not nli_equivalent(E, C, MNLI, "nli-bidirectional")


def test_paper4_rule_splits_only_on_a_contradiction() -> None:
    assert nli_equivalent(E, E, MNLI, "nli-contradiction")
    assert nli_equivalent(N, N, MNLI, "nli-contradiction")
    assert nli_equivalent(E, N, MNLI, "nli-contradiction")
    assert not nli_equivalent(N, C, MNLI, "nli-contradiction")
    assert not nli_equivalent(C, E, MNLI, "nli-contradiction")


def test_label_ids_come_from_the_labels_not_from_position() -> None:
    # a classifier whose id2label puts ENTAILMENT at 0 and CONTRADICTION at 2
    permuted = NliLabels(entailment=0, contradiction=2)
    assert nli_equivalent(0, 0, permuted, "nli-bidirectional")
    assert not nli_equivalent(2, 2, permuted, "nli-bidirectional")
    assert nli_equivalent(1, 0, permuted, "nli-contradiction")  # class 0 is entailment here, not contradiction
    assert not nli_equivalent(1, 2, permuted, "nli-contradiction")


def test_hand_made_samples_cluster_by_each_rule() -> None:
    bidirectional = anchor_clusters(SAMPLES, judged_equivalence(SAMPLES, JUDGED, MNLI, "nli-bidirectional"))
    contradiction = anchor_clusters(SAMPLES, judged_equivalence(SAMPLES, JUDGED, MNLI, "nli-contradiction"))
    # 0~1 entail both ways; 3 => 1 entails but 1 => 3 is neutral: only the looser rule joins 3 to 0
    assert bidirectional == [[0, 1], [2], [3]]
    assert contradiction == [[0, 1, 3], [2]]
    assert semantic_uncertainty(NLL, bidirectional) == pytest.approx((1.5 + 3.0 + 4.0) / 3, rel=1e-12)
    assert semantic_uncertainty(NLL, contradiction) == pytest.approx(((1.0 + 2.0 + 4.0) / 3 + 3.0) / 2, rel=1e-12)


def test_judged_equivalence_needs_distinct_samples() -> None:
    with pytest.raises(ValueError, match="distinct samples"):
        judged_equivalence(["(a)", "(a)"], np.full((2, 2), E), MNLI, "nli-bidirectional")


def test_duplicates_are_removed_in_order_of_first_occurrence() -> None:
    assert distinct_samples(["(c) Unknown", "(a)", "(c) Unknown", "(a)", "(b)"]) == ["(c) Unknown", "(a)", "(b)"]


def test_option_rule_keeps_different_unparsed_answers_apart() -> None:
    equivalent = option_equivalence(("The grandfather", "The grandson", "Unknown"))
    samples = ["(c) Unknown", "I am not sure", "Unknown", "Maybe later", "(a)"]
    # both unparsed answers used to be one cluster ("parse to None" was equal)
    assert anchor_clusters(samples, equivalent) == [[0, 2], [1], [3], [4]]


def test_option_rule_uses_the_configured_parse_rule() -> None:
    options = ("The grandfather", "The grandson", "Unknown")
    # first_label: the first label in label order that occurs, so "(b) or (a)" is (a); label: the earliest, (b)
    assert option_equivalence(options, "first_label")("(b) or (a)", "(a)")
    assert not option_equivalence(options, "label")("(b) or (a)", "(a)")
    # gold_label (gold (b)): "(b)" on the last line is the gold; "(a) ... (c)" is the first other label, (a)
    assert option_equivalence(options, "gold_label", gold=1)("(a) then\n(b)", "(b)")
    assert option_equivalence(options, "gold_label", gold=1)("(c) or (a)", "(a)")


def test_clusters_partition_the_samples_for_any_symmetric_relation() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 8))
        relation = rng.random((n, n)) < 0.5
        relation = relation | relation.T | np.eye(n, dtype=bool)
        samples = [f"s{i}" for i in range(n)]
        clusters = anchor_clusters(samples, lambda a, b: bool(relation[int(a[1:]), int(b[1:])]))  # noqa: B023
        assert sorted(i for cluster in clusters for i in cluster) == list(range(n))
        anchors = [cluster[0] for cluster in clusters]
        assert anchors == sorted(anchors)
        for position, cluster in enumerate(clusters):
            for member in cluster[1:]:
                assert relation[cluster[0], member]
                assert not any(relation[anchor, member] for anchor in anchors[:position])


def test_auto_rule_is_the_option_rule_for_multiple_choice_only() -> None:
    assert resolved_rule("auto", has_options=True) is None
    assert resolved_rule("auto", has_options=False) == "nli-bidirectional"
    assert resolved_rule("option", has_options=False) is None
    assert resolved_rule("nli-contradiction", has_options=True) == "nli-contradiction"
    assert nli_rule_of("option") is None and nli_rule_of("auto") == "nli-bidirectional"
    assert equivalence_name(None, parse_rule="label", nli_model=DEFAULT_NLI_MODEL) == "option:label"
    assert (
        equivalence_name("nli-contradiction", parse_rule="label", nli_model=DEFAULT_NLI_MODEL)
        == "nli-contradiction:microsoft/deberta-large-mnli"
    )


def test_configuration_defaults() -> None:
    settings = ProtocolSettings()
    assert settings.uncertainty_samples == 0
    assert settings.uncertainty_sampling == "beam-sample"
    assert settings.uncertainty_equivalence == "auto"
    assert settings.nli_model == "microsoft/deberta-large-mnli"
    assert settings.uncertainty_tokens is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"uncertainty_sampling": "beam"},
            '[protocol] uncertainty_sampling = "beam" must be one of "beam-sample", "multinomial"',
        ),
        (
            {"uncertainty_equivalence": "nli"},
            '[protocol] uncertainty_equivalence = "nli" must be one of "auto", "option", "nli-bidirectional", '
            '"nli-contradiction"',
        ),
        ({"uncertainty_tokens": 0}, "[protocol] uncertainty_tokens = 0 must be at least 1"),
        ({"uncertainty_tokens": "8"}, '[protocol] uncertainty_tokens = "8" must be an integer'),
        ({"nli_model": " "}, '[protocol] nli_model = " " is empty'),
    ],
)
def test_bad_uncertainty_keys_are_one_line_errors(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        RunConfig.from_dict({"protocol": table})
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_option_rule_needs_no_nli_model() -> None:
    settings = RunConfig.from_dict({"protocol": {"uncertainty_equivalence": "option", "nli_model": ""}}).protocol
    assert settings.uncertainty_equivalence == "option"
