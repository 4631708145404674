"""Head attribution on a tiny random Llama: patching identities, attribution patching to first
order, mean ablation, checkpoint comparison, head selection and the CSV files, the default
methods, selection by attention mediation, and direct logit attribution's refusal of post-norms."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

from workbench.attribution.attribute import AttributionConfig, attribute
from workbench.attribution.contrast import (
    ContrastPair,
    ContrastPairError,
    tokenize_contrast_pairs,
    winogender_contrast_pairs,
)
from workbench.attribution.direct_logit import direct_logit_attribution_effects
from workbench.attribution.head_effects import (
    DEFAULT_METHODS,
    activation_patching_effects,
    attribution_patching_effects,
    bias_measure,
    head_outputs,
    mean_ablation_effects,
    total_effect,
    z_site,
)
from workbench.attribution.selection import (
    ArchitectureMismatch,
    rank_correlation,
    require_same_architecture,
    select_debiased_heads,
    top_k_agreement,
)
from workbench.hooks.capture import run_forward
from workbench.hooks.interventions import Intervention
from workbench.hooks.module_paths import UnsupportedArchitecture
from workbench.hooks.plan import HookPlan
from workbench.hooks.sites import SiteKind
from workbench.models import LoadedModel, ModelArchitecture, tiny_model


def tiny_loaded(seed: int = 0, n_heads: int = 4) -> LoadedModel:
    return tiny_model(d_model=32, n_heads=n_heads, n_kv_heads=2, seed=seed)


def pairs() -> list[ContrastPair]:
    return [
        ContrastPair("The nurse said that", "The man said that", " she", " he"),
        ContrastPair("The doctor said that", "The woman said that", " he", " she"),
        ContrastPair("The person said", "The woman said", " he", " she"),
    ]


def test_patching_a_head_with_its_own_clean_value_changes_nothing() -> None:
    model = tiny_loaded()
    contrast = tokenize_contrast_pairs(model.tokenizer, pairs())
    clean_z = head_outputs(model, contrast.clean)
    assert clean_z.shape == (2, 3, 4, 4, 8)
    effects = activation_patching_effects(model, contrast, clean_z)
    assert effects.abs().max() < 1e-5


def test_patching_every_head_equals_patching_the_layer_output() -> None:
    model = tiny_loaded()
    contrast = tokenize_contrast_pairs(model.tokenizer, pairs())
    source_z = head_outputs(model, contrast.counterfactual)
    plan, store = HookPlan(), {}
    plan.add_reader(1, SiteKind.ATTN_OUT, lambda a: store.__setitem__("attn_out", a.clone()))
    run_forward(model, contrast.counterfactual, plan)
    all_heads = bias_measure(model, contrast.clean, contrast, [Intervention(z_site(1), "patch", value=source_z[1])])
    layer = bias_measure(
        model, contrast.clean, contrast, [Intervention("blocks.1.hook_attn_out", "patch", value=store["attn_out"])]
    )
    torch.testing.assert_close(all_heads, layer, atol=1e-5, rtol=1e-5)
    # and the last layer patched entirely reproduces the counterfactual's measure
    both = bias_measure(
        model,
        contrast.clean,
        contrast,
        [Intervention(z_site(0), "patch", value=source_z[0]), Intervention(z_site(1), "patch", value=source_z[1])],
    )
    torch.testing.assert_close(both, bias_measure(model, contrast.counterfactual, contrast), atol=1e-5, rtol=1e-5)


def test_attribution_patching_matches_patching_to_first_order() -> None:
    model = tiny_loaded()
    contrast = tokenize_contrast_pairs(model.tokenizer, pairs())
    clean_z = head_outputs(model, contrast.clean)
    torch.manual_seed(1)
    source_z = clean_z + 1e-3 * torch.randn_like(clean_z)
    patched = activation_patching_effects(model, contrast, source_z)
    estimated = attribution_patching_effects(model, contrast, source_z)
    assert patched.abs().max() > 1e-5
    assert (patched - estimated).abs().max() < 0.02 * patched.abs().max()


def test_mean_ablation_and_total_effect_shapes_and_nonzero() -> None:
    model = tiny_loaded()
    contrast = tokenize_contrast_pairs(model.tokenizer, pairs())
    assert mean_ablation_effects(model, contrast).abs().max() > 0
    assert total_effect(model, contrast).shape == (3,)


def test_unequal_lengths_are_dropped_and_all_dropped_is_an_error() -> None:
    model = tiny_loaded()
    mixed = [*pairs(), ContrastPair("The nurse said that", "The man said", " she", " he")]
    assert tokenize_contrast_pairs(model.tokenizer, mixed).n_dropped == 1
    with pytest.raises(ContrastPairError, match="different token lengths"):
        tokenize_contrast_pairs(model.tokenizer, [ContrastPair("The nurse", "The man said", " he", " she")])


def test_winogender_pairs_pick_stereotype_by_bls_share(tmp_path: Path) -> None:
    stats = tmp_path / "occupations-stats.tsv"
    stats.write_text(
        "occupation\tbergsma_pct_female\tbls_pct_female\tbls_year\nnurse\t90\t90.0\t2015\ndoctor\t30\t38.0\t2015\n",
        encoding="utf-8",
    )
    nurse, doctor = winogender_contrast_pairs(stats)
    assert nurse == ContrastPair("The nurse said that", "The man said that", " she", " he")
    assert doctor.counterfactual == "The woman said that" and doctor.target == " he"


def test_selection_and_agreement_by_hand() -> None:
    before = np.array([[0.5, -0.4], [0.1, 0.0]])
    after = np.array([[0.1, -0.5], [0.0, 0.0]])
    rows = select_debiased_heads(before, after, top_k=5)
    assert [(r.layer, r.head) for r in rows] == [(0, 0), (1, 0)]
    assert rows[0].drop == pytest.approx(0.4)
    assert [(r.layer, r.head) for r in select_debiased_heads(before, after, top_k=None, min_drop=0.2)] == [(0, 0)]
    assert top_k_agreement(before, after, 2) == 1.0 and top_k_agreement(before, np.array([[0, 0], [1, 2.0]]), 1) == 0.0
    assert rank_correlation(before, before * 3) == pytest.approx(1.0)


def test_different_architectures_are_refused() -> None:
    with pytest.raises(ArchitectureMismatch, match="n_heads: 4 vs 2"):
        require_same_architecture(tiny_loaded().architecture, tiny_loaded(n_heads=2).architecture)


def test_attribute_stage_writes_heads_and_selected_heads(tmp_path: Path) -> None:
    stats = tmp_path / "occupations-stats.tsv"
    stats.write_text(
        "occupation\tbergsma_pct_female\tbls_pct_female\tbls_year\nnurse\t90\t90.0\t2015\ndoctor\t30\t38.0\t2015\n",
        encoding="utf-8",
    )
    config = AttributionConfig.from_dict(
        {"occupations_path": str(stats), "top_k": 3, "methods": ["activation_patching", "attribution_patching"]}
    )
    rows = attribute(tiny_loaded(0), config, tmp_path, debiased=tiny_loaded(1))
    heads = list(csv.DictReader((tmp_path / "attribution" / "heads.csv").open(encoding="utf-8")))
    assert len(heads) == 2 * 2 * 2 * 4 and list(heads[0]) == ["checkpoint", "method", "layer", "head", "effect"]
    selected = list(csv.DictReader((tmp_path / "attribution" / "selected_heads.csv").open(encoding="utf-8")))
    assert len(selected) == len(rows) <= 3 and list(selected[0]) == [
        "layer",
        "head",
        "effect_before",
        "effect_after",
        "drop",
    ]
    levels = list(csv.DictReader((tmp_path / "attribution" / "bias_levels.csv").open(encoding="utf-8")))
    assert {(r["checkpoint"], r["measure"]) for r in levels} == {
        (c, m) for c in ("base", "debiased") for m in ("winogender.logit_difference", "winogender.total_effect")
    }
    assert all(r["n"] == "2" for r in levels)
    with pytest.raises(ValueError, match="methodz"):
        AttributionConfig.from_dict({"occupations_path": "x", "methodz": []})


def test_default_methods_add_direct_logit_attribution_and_mediation_can_select(tmp_path: Path) -> None:
    stats = tmp_path / "occupations-stats.tsv"
    stats.write_text(
        "occupation\tbergsma_pct_female\tbls_pct_female\tbls_year\nnurse\t90\t90.0\t2015\ndoctor\t30\t38.0\t2015\n",
        encoding="utf-8",
    )
    default = AttributionConfig.from_dict({"occupations_path": str(stats)})
    assert default.methods == DEFAULT_METHODS and "direct_logit_attribution" in default.methods
    assert "attention_mediation" not in default.methods  # one forward per head: on request
    config = AttributionConfig.from_dict(
        {
            "occupations_path": str(stats),
            "methods": ["attention_mediation", "direct_logit_attribution"],
            "selection_method": "attention_mediation",
            "top_k": 3,
        }
    )
    base, debiased = tiny_loaded(0), tiny_loaded(1)
    rows = attribute(base, config, tmp_path, debiased=debiased)
    heads = list(csv.DictReader((tmp_path / "attribution" / "heads.csv").open(encoding="utf-8")))
    assert {r["method"] for r in heads} == {"attention_mediation", "direct_logit_attribution"}
    table = {
        (r["checkpoint"], int(r["layer"]), int(r["head"])): float(r["effect"])
        for r in heads
        if r["method"] == "attention_mediation"
    }
    before = np.array([[table["base", layer, head] for head in range(4)] for layer in range(2)])
    after = np.array([[table["debiased", layer, head] for head in range(4)] for layer in range(2)])
    expected = select_debiased_heads(before, after, top_k=3)
    assert [(r.layer, r.head) for r in rows] == [(r.layer, r.head) for r in expected]


def test_direct_logit_attribution_refuses_a_norm_after_attention() -> None:
    config = Gemma2Config(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        pad_token_id=0,
    )
    model = Gemma2ForCausalLM(config).eval()
    tokenizer = tiny_loaded().tokenizer
    loaded = LoadedModel(
        model, tokenizer, "tiny-gemma2", "tiny-gemma2", "in-memory", "x", ModelArchitecture.from_config(config)
    )
    contrast = tokenize_contrast_pairs(tokenizer, pairs())
    with pytest.raises(UnsupportedArchitecture, match="gemma2 normalises the attention output first"):
        direct_logit_attribution_effects(loaded, contrast)
