"""Probes and concept states applied to a hand-built run cache: planted values per measure."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from activations_cache import CacheMetadata, CacheSpec, CacheWriter, ColumnSpec, DatasetSpec, open_cache
from probes import CacheSiteError, DimensionMismatchError, NonFiniteActivationsError, ProbeProvenance, SavedProbe
from probes.apply import (
    ConceptStates,
    InputStates,
    RunRecords,
    band_cosine_rows,
    concept_activation_rows,
    concept_uncertainty_correlations,
    concept_uncertainty_rows,
    final_probe_rows,
    interaction_rows,
    probe_morality_rows,
    read_probes,
)

D = 4
COLUMNS = {"option_probs": ColumnSpec("float64", length=3)}


def write_cache(
    path: Path,
    rows: list[tuple[str, str, int, list[float]]],
    states: np.ndarray,
    semantic: list[float] | None = None,
) -> Path:
    """rows: (condition, item_id, round, option_probs); states [n, layers=2, D] at layers 3 and 5;
    ``semantic``: [n] a recorded ``semantic_uncertainty`` column (NaN = not measured)."""
    spec = CacheSpec(
        datasets=(
            DatasetSpec("last_prompt", "hook_resid_post", (3, 5), (D,)),
            DatasetSpec("last_prompt", "hook_attn_out", (3, 5), (D,)),
        ),
        record_columns={**COLUMNS, "semantic_uncertainty": ColumnSpec("float64")} if semantic else COLUMNS,
        dtype="float32",
    )
    records = [
        {
            "record_key": f"{c}|{i}|{r}",
            "item_id": i,
            "condition": c,
            "round": r,
            "prompt": "p",
            "answer": "a",
            "n_prompt_tokens": 1,
            "n_answer_tokens": 1,
            "option_probs": probs,
            **({"semantic_uncertainty": semantic[index]} if semantic else {}),
        }
        for index, (c, i, r, probs) in enumerate(rows)
    ]
    meta = CacheMetadata("test-model", "sha256:test", "tok", {}, 0)
    with CacheWriter.open(path, spec, meta) as writer:
        writer.submit(records, {("last_prompt", "hook_resid_post"): states, ("last_prompt", "hook_attn_out"): states})
    return path


def probe(layer: int, coef: list[float], intercept: float = 0.0) -> SavedProbe:
    provenance = ProbeProvenance("logistic", "hook_resid_post", "last_prompt", layer, "c.h5", "h", {}, {}, [0, 1])
    return SavedProbe(np.array(coef, dtype=float), intercept, None, provenance)


UNIFORM = [1 / 3, 1 / 3, 1 / 3]


@pytest.fixture
def run_cache(tmp_path: Path) -> Path:
    # condition A: states along e0 (2 * e0); condition B: along e1 (3 * e1); two items, one round.
    rows = [("A", "i0", 0, UNIFORM), ("A", "i1", 0, UNIFORM), ("B", "i0", 0, UNIFORM), ("B", "i1", 0, UNIFORM)]
    states = np.zeros((4, 2, D))
    states[:2, :, 0] = 2.0
    states[2:, :, 1] = 3.0
    return write_cache(tmp_path / "cache.h5", rows, states)


def test_probe_probability_and_cosine_are_planted(run_cache: Path) -> None:
    with open_cache(run_cache) as reader:
        records = RunRecords.from_cache(reader)
        readings = read_probes(reader, [probe(5, [1.0, 0.0, 0.0, 0.0], intercept=-1.0)])
        rows = probe_morality_rows(records, readings, ("probe_probability", "cosine"), seed=0)
    table = {(r["condition"], r["measure"]): r for r in rows}
    assert set(rows[0]) == {"condition", "round", "site", "layer", "measure", "value", "ci_low", "ci_high", "n"}
    assert table["A", "probe_probability"]["value"] == pytest.approx(1 / (1 + math.exp(-1.0)))  # 2 - 1
    assert table["B", "probe_probability"]["value"] == pytest.approx(1 / (1 + math.exp(1.0)))  # 0 - 1
    assert table["A", "cosine"]["value"] == pytest.approx(1.0)
    assert table["B", "cosine"]["value"] == pytest.approx(0.0)
    assert table["A", "cosine"]["n"] == 2 and table["A", "cosine"]["layer"] == 5


def test_final_probe_cosine_is_planted_at_every_layer_and_over_the_band(tmp_path: Path) -> None:
    # attn_out: condition A along e0 at layer 3 and along e1 at layer 5; B along e1 at both layers
    rows = [("A", "i0", 0, UNIFORM), ("A", "i1", 0, UNIFORM), ("B", "i0", 0, UNIFORM), ("B", "i1", 0, UNIFORM)]
    states = np.zeros((4, 2, D))
    states[:2, 0, 0], states[:2, 1, 1], states[2:, :, 1] = 2.0, 1.0, 3.0
    provenance = ProbeProvenance("logistic", "ln_final.hook_out", "last_prompt", 6, "c.h5", "h", {}, {}, [0, 1])
    toxic = SavedProbe(np.array([4.0, 0.0, 0.0, 3.0]), 0.0, None, provenance)  # direction (0.8, 0, 0, 0.6)
    with open_cache(write_cache(tmp_path / "c.h5", rows, states)) as reader:
        records = RunRecords.from_cache(reader)
        table = final_probe_rows(reader, records, toxic, "hook_attn_out", (3, 5), seed=0)
    values = {(r["condition"], r["measure"], r["layer"]): r["value"] for r in table}
    assert values == pytest.approx(
        {
            ("A", "final_probe_cosine_attn_out", 3): 0.8,
            ("A", "final_probe_cosine_attn_out", 5): 0.0,
            ("B", "final_probe_cosine_attn_out", 3): 0.0,
            ("B", "final_probe_cosine_attn_out", 5): 0.0,
            ("A", "band_final_probe_cosine_attn_out", 3): 0.4,
            ("B", "band_final_probe_cosine_attn_out", 3): 0.0,
        }
    )
    assert {r["site"] for r in table} == {"hook_attn_out"}
    wide = SavedProbe(np.ones(D + 1), 0.0, None, provenance)
    with open_cache(tmp_path / "c.h5") as reader, pytest.raises(DimensionMismatchError, match="was fitted on 5"):
        final_probe_rows(reader, records, wide, "hook_attn_out", (3, 5), seed=0)


def test_concept_activation_uses_the_items_own_statement(run_cache: Path) -> None:
    mean = np.tile([0.0, 1.0, 0.0, 0.0], (2, 1))
    own = np.tile([1.0, 0.0, 0.0, 0.0], (2, 1))
    states = ConceptStates("hook_resid_post", "last_prompt", (3, 5), mean, {"i0": own})
    with open_cache(run_cache) as reader:
        records = RunRecords.from_cache(reader)
        rows, by_layer = concept_activation_rows(reader, records, states, seed=0)
        band = band_cosine_rows(
            reader, records, ConceptStates("hook_attn_out", "last_prompt", (3, 5), mean, {}), (3, 5), 0
        )
    # record order: A/i0 (own: e0 -> 1), A/i1 (mean e1 -> 0), B/i0 (own e0 -> 0), B/i1 (mean e1 -> 1)
    assert by_layer[5].tolist() == pytest.approx([1.0, 0.0, 0.0, 1.0])
    assert {r["measure"] for r in rows} == {"concept_activation"}
    assert [r["value"] for r in rows if r["layer"] == 3] == pytest.approx([0.5, 0.5])
    assert {(r["condition"], r["measure"], r["layer"]): r["value"] for r in band} == pytest.approx(
        {("A", "band_cosine_attn_out", 3): 0.0, ("B", "band_cosine_attn_out", 3): 1.0}
    )


def test_uncertainty_is_option_entropy_and_correlates_over_rounds(tmp_path: Path) -> None:
    rows = [("A", f"i{i}", r, [p, 1 - p, math.nan]) for r, p in enumerate((0.5, 0.8, 0.99)) for i in range(2)]
    with open_cache(write_cache(tmp_path / "c.h5", rows, np.ones((6, 2, D)))) as reader:
        records = RunRecords.from_cache(reader)
    assert records.uncertainty[0] == pytest.approx(math.log(2))
    activation = -records.uncertainty + 0.1 * np.array([1, -1, 1, -1, 1, -1])
    summary = concept_uncertainty_correlations(records, activation)["A"]
    assert summary["r_round_means"] == pytest.approx(-1.0)
    assert summary["n_rounds"] == 3 and summary["n_records"] == 6
    assert -1.0 < summary["r_records"] < -0.9


def test_recorded_semantic_uncertainty_is_the_one_correlated_and_named(tmp_path: Path) -> None:
    # option entropy falls over rounds, the recorded semantic uncertainty rises: the measure decides the sign
    rows = [("A", f"i{i}", r, [p, 1 - p, math.nan]) for r, p in enumerate((0.5, 0.8, 0.99)) for i in range(2)]
    semantic = [0.1, 0.3, 1.1, 1.2, 2.0, math.nan]  # the last record was not sampled
    with open_cache(write_cache(tmp_path / "c.h5", rows, np.ones((6, 2, D)), semantic)) as reader:
        records = RunRecords.from_cache(reader)
    assert records.uncertainty_measure == "semantic_uncertainty"
    assert records.uncertainty[:5].tolist() == pytest.approx(semantic[:5]) and np.isnan(records.uncertainty[5])
    activation = np.array([0.1, 0.2, 0.5, 0.6, 0.9, 0.0])
    summary = concept_uncertainty_correlations(records, activation)["A"]
    # by hand: round means of activation (0.15, 0.55, 0.9) and uncertainty (0.2, 1.15, 2.0)
    x, y = np.array([0.15, 0.55, 0.9]), np.array([0.2, 1.15, 2.0])
    expected = float(
        ((x - x.mean()) * (y - y.mean())).sum() / np.sqrt(((x - x.mean()) ** 2).sum() * ((y - y.mean()) ** 2).sum())
    )
    assert summary["r_round_means"] == pytest.approx(expected) and summary["r_round_means"] > 0.99
    assert (summary["n_records"], summary["uncertainty"]) == (5, "semantic_uncertainty")
    table = concept_uncertainty_rows(records, activation)
    assert [row["uncertainty_measure"] for row in table] == ["semantic_uncertainty"] * 5 + [""]
    assert table[2]["uncertainty"] == pytest.approx(1.1) and table[5]["uncertainty"] == ""
    with open_cache(write_cache(tmp_path / "e.h5", rows, np.ones((6, 2, D)), [math.nan] * 6)) as reader:
        unmeasured = RunRecords.from_cache(reader)
    assert unmeasured.uncertainty_measure == "option_entropy"
    assert unmeasured.uncertainty[0] == pytest.approx(math.log(2))
    assert concept_uncertainty_correlations(unmeasured, activation)["A"]["r_round_means"] < 0  # the sign flips


def test_question_block_states_replace_the_cached_states(run_cache: Path) -> None:
    # cached states: A along e0, B along e1; block states planted the other way round
    mean = np.tile([1.0, 0.0, 0.0, 0.0], (2, 1))
    concept = ConceptStates("hook_resid_post", "last_prompt", (3, 5), mean, {})
    blocks = np.zeros((4, 2, D))
    blocks[:2, :, 1] = 1.0
    blocks[2:, :, 0] = 5.0
    with open_cache(run_cache) as reader:
        records = RunRecords.from_cache(reader)
        _, cached = concept_activation_rows(reader, records, concept, seed=0)
        _, from_blocks = concept_activation_rows(
            reader, records, concept, seed=0, inputs=InputStates("hook_resid_post", (3, 5), blocks)
        )
    assert cached[5].tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0])
    assert from_blocks[5].tolist() == pytest.approx([0.0, 0.0, 1.0, 1.0])


def test_interactions_recover_a_planted_cot_effect(tmp_path: Path) -> None:
    names = [f"instr={i}+cot={c}+fb={f}" for i in ("none", "intrinsic") for c in ("off", "on") for f in ("off", "on")]
    rows = [(name, f"i{k}", 0, UNIFORM) for name in names for k in range(3)]
    with open_cache(write_cache(tmp_path / "c.h5", rows, np.ones((24, 2, D)))) as reader:
        records = RunRecords.from_cache(reader)
    morality = np.array([0.9 if "cot=on" in c else 0.2 for c in records.condition])
    effects = {r["effect"]: r["estimate"] for r in interaction_rows(records, morality, "morality", seed=0)}
    assert effects["cot"] == pytest.approx(0.7)
    assert effects["instruction"] == pytest.approx(0.0) and effects["cot:feedback"] == pytest.approx(0.0)
    two_cells = dataclasses.replace(
        records, **{name: getattr(records, name)[:6] for name in ("item_id", "condition", "round", "uncertainty")}
    )
    assert interaction_rows(two_cells, morality[:6], "morality", seed=0) == []


def test_probe_of_another_width_or_layer_is_refused(run_cache: Path) -> None:
    with open_cache(run_cache) as reader:
        with pytest.raises(
            DimensionMismatchError, match="4 wide but the probe hook_resid_post.last_prompt.L5 was fitted on 5"
        ):
            read_probes(reader, [probe(5, [1.0] * 5)])
        with pytest.raises(CacheSiteError, match=r"no layer 7 of hook_resid_post@last_prompt .*stored: \[3, 5\]"):
            read_probes(reader, [probe(7, [1.0] * 4)])


def test_nan_activations_are_named(tmp_path: Path) -> None:
    states = np.ones((2, 2, D))
    states[1, 1, 2] = np.nan
    path = write_cache(tmp_path / "c.h5", [("A", "i0", 0, UNIFORM), ("A", "i1", 0, UNIFORM)], states)
    with (
        open_cache(path) as reader,
        pytest.raises(
            NonFiniteActivationsError, match="hook_resid_post@last_prompt layer 5 holds NaN or inf in 1 record"
        ),
    ):
        read_probes(reader, [probe(5, [1.0] * 4)])
