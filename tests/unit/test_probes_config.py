"""ProbeConfig: defaults, TOML tables, rejected keys and values."""

from __future__ import annotations

import pytest

from probes import ProbeConfig, ProbeConfigError


def test_defaults_and_lists_become_tuples() -> None:
    config = ProbeConfig.from_dict({"sites": ["blocks.3.hook_resid_post"], "layer_band": [2, 4]})
    assert config.sites == ("blocks.3.hook_resid_post",)
    assert config.layer_band == (2, 4)
    assert (config.concept_set, config.kind, config.position, config.steering) == (
        "auto",
        "logistic",
        "last_prompt",
        False,
    )
    assert (config.concept_statement, config.concept_input, config.layer_band_fraction) == (
        "workbench",
        "round_prompt",
        None,
    )
    fraction = ProbeConfig.from_dict({"layer_band_fraction": [0.46875, 0.875], "concept_statement": "paper4"})
    assert fraction.layer_band_fraction == (0.46875, 0.875)
    assert ProbeConfig.from_dict(fraction.to_dict()) == fraction
    assert ProbeConfig.from_dict(config.to_dict()) == config


def test_unknown_key_names_the_valid_ones() -> None:
    with pytest.raises(
        ProbeConfigError,
        match=r"unknown key\(s\) folds; valid keys: concept_set, concept_statement, concept_input, kind",
    ):
        ProbeConfig.from_dict({"folds": 3})


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"concept_set": "crows_pairs"}, "concept_set 'crows_pairs' is unknown"),
        ({"concept_set": "jigsaw:/x.csv"}, "concept_set 'jigsaw:/x.csv' is unknown"),
        ({"kind": "svm"}, "kind 'svm' is unknown"),
        ({"measures": ["entropy"]}, r"measures \['entropy'\] are unknown"),
        ({"layer_band": [9, 3]}, "first <= last"),
        ({"n_folds": 1}, "n_folds=1 must be at least 2"),
        ({"C": 0}, "C=0 must be positive"),
        (
            {"concept_statement": "paper9"},
            "concept_statement 'paper9' is unknown; use one of workbench, paper4, paper2",
        ),
        (
            {"concept_statement": "paper2", "concept_set": "ethics:/x.csv"},
            "concept_statement 'paper2' builds BBQ statements, but concept_set 'ethics:/x.csv' is a file",
        ),
        ({"concept_input": "block"}, "concept_input 'block' is unknown; use one of round_prompt, question_block"),
        (
            {"layer_band_fraction": [0.9, 0.2]},
            r"layer_band_fraction \[0.9, 0.2\] must be \[first, last\] with 0 <= first",
        ),
        ({"layer_band_fraction": [0.5, 1.5]}, "with 0 <= first <= last <= 1"),
        ({"layer_band_fraction": [0.5]}, r"layer_band_fraction = \[0.5\] must be a list of 2 values"),
        ({"layer_band_fraction": ["a", "b"]}, "layer_band_fraction"),
    ],
)
def test_bad_values(table: dict, message: str) -> None:
    with pytest.raises(ProbeConfigError, match=message):
        ProbeConfig.from_dict(table)


def test_file_concept_sets_are_accepted() -> None:
    assert ProbeConfig(concept_set="ethics:/data/cm_test.csv").concept_set == "ethics:/data/cm_test.csv"
