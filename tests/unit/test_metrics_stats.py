"""Bootstrap intervals, paired tests and 2x2x2 factorial effects."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from workbench.metrics.statistics import (
    Estimate,
    bootstrap_ci,
    factorial_effects,
    paired_difference,
    sign_flip_p_value,
)


def test_bootstrap_ci_contains_mean_and_is_seeded() -> None:
    values = np.array([0, 1] * 50, dtype=float)
    estimate = bootstrap_ci(values, n_boot=500, seed=1)
    assert estimate.estimate == 0.5 and estimate.n == 100
    assert 0.38 < estimate.ci_low < 0.5 < estimate.ci_high < 0.62
    assert bootstrap_ci(values, n_boot=500, seed=1) == estimate
    constant = bootstrap_ci(np.ones(5), n_boot=50)
    assert (constant.ci_low, constant.ci_high) == (1.0, 1.0)
    assert math.isnan(bootstrap_ci(np.array([3.0])).ci_low)


def test_undefined_estimate_carries_its_reason_and_blank_cells() -> None:
    empty = bootstrap_ci(np.array([]), n_boot=20)
    assert (empty.defined, empty.undefined_reason, empty.n) == (False, "no items", 0)
    nan_statistic = bootstrap_ci(np.array([1.0, 2.0, 3.0]), lambda v: float("nan"), n_boot=20)
    assert (nan_statistic.undefined_reason, nan_statistic.n) == ("not computable", 3)
    assert math.isnan(nan_statistic.ci_low) and math.isnan(nan_statistic.ci_high)
    explained = nan_statistic.explained("no non-unknown answer")
    assert explained.undefined_reason == "no non-unknown answer" and explained.n == 3
    assert explained.csv_cells() == {
        "value": "",
        "ci_low": "",
        "ci_high": "",
        "undefined_reason": "no non-unknown answer",
    }
    # a defined estimate keeps its value whatever reason is offered; only a missing bound is blank
    single = bootstrap_ci(np.array([0.25]), n_boot=20).explained("no parsed answer")
    assert single.defined and single.csv_cells() == {"value": 0.25, "ci_low": "", "ci_high": "", "undefined_reason": ""}
    # a nan built by hand is undefined too, never a number with a missing reason
    assert Estimate(float("nan"), 0.1, 0.2, 5).undefined_reason == "not computable"
    assert math.isnan(Estimate(float("nan"), 0.1, 0.2, 5).ci_low)
    with pytest.raises(ValueError, match="cannot be undefined"):
        Estimate(0.5, 0.4, 0.6, 5, "one class")


def test_paired_difference() -> None:
    a = np.array([1.0, 1.0, 1.0, 0.0])
    b = np.array([0.0, 1.0, 0.0, 0.0])
    estimate = paired_difference(a, b, n_boot=200)
    assert estimate.estimate == 0.5 and estimate.n == 4
    with pytest.raises(ValueError, match="equal shapes"):
        paired_difference(a, b[:3])


def test_sign_flip_exact_p_values() -> None:
    # d = (1, 1, 1): of 8 sign patterns only +++ and --- reach |mean| = 1 -> p = 2/8
    assert sign_flip_p_value(np.array([1.0, 1.0, 1.0])) == pytest.approx(0.25)
    # d = (1, -1): patterns give means 0, 1, -1, 0 -> |mean| >= 0 always -> p = 1
    assert sign_flip_p_value(np.array([1.0, -1.0])) == 1.0
    # d = (2, 1): means 1.5, .5, -.5, -1.5 -> 2 of 4 reach 1.5 -> 0.5
    assert sign_flip_p_value(np.array([2.0, 1.0])) == 0.5
    approx = sign_flip_p_value(np.ones(30), n_permutations=2000, seed=0)
    assert approx == pytest.approx(1 / 2001, abs=2e-3)


def test_factorial_effects_recover_known_contrasts() -> None:
    # cell mean = 0.2 + 0.1*I + 0.3*C + 0.04*I*C (0/1 coding); per-item noise-free
    n_items = 5
    outcomes = np.zeros((n_items, 2, 2, 2))
    for i, c, f in itertools.product((0, 1), repeat=3):
        outcomes[:, i, c, f] = 0.2 + 0.1 * i + 0.3 * c + 0.04 * i * c
    effects = factorial_effects(outcomes, n_boot=100)
    # main effect of I = mean(I=1) - mean(I=0) = 0.1 + 0.04*0.5 = 0.12
    assert effects["instruction"].estimate == pytest.approx(0.12)
    assert effects["cot"].estimate == pytest.approx(0.3 + 0.04 * 0.5)
    assert effects["feedback"].estimate == pytest.approx(0.0)
    # interaction I:C = half of (effect of I at C=1 minus at C=0) = 0.04 / 2
    assert effects["instruction:cot"].estimate == pytest.approx(0.02)
    assert effects["instruction:feedback"].estimate == pytest.approx(0.0)
    assert effects["instruction:cot:feedback"].estimate == pytest.approx(0.0)
    assert effects["instruction"].ci_low == pytest.approx(0.12)  # no between-item variance
    with pytest.raises(ValueError, match="shape"):
        factorial_effects(np.zeros((3, 2, 2)))


# --- the in-context demonstration factor (cells that exist only in part of the design) -----------------


def test_weighted_contrast_is_the_weighted_sum_of_cell_means_over_complete_items() -> None:
    from workbench.metrics.statistics import weighted_contrast

    outcomes = np.array([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, np.nan]])
    # two complete items: cell means (1, 0.5, 0.5, 1); weights of a mean paired difference over 2 pairs
    estimate = weighted_contrast(outcomes, np.array([0.5, -0.5, 0.5, -0.5]), n_boot=200, seed=0)
    assert estimate.estimate == pytest.approx(0.5 * (1 - 0.5) + 0.5 * (0.5 - 1))
    assert estimate.n == 2
    with pytest.raises(ValueError, match="n_cells"):
        weighted_contrast(outcomes, np.ones(3))


DEMO_BASE = {"none": "instr=none+cot=off+fb=off", "intrinsic": "instr=intrinsic+cot=off+fb=off"}
DEMO_CELLS = {  # per-item outcomes of items i0, i1, i2 at round 0
    ("none", ""): [0.0, 0.0, 1.0],
    ("none", "+demo=4-correct"): [1.0, 1.0, 1.0],
    ("none", "+demo=4-remapped"): [0.0, 1.0, 0.0],
    ("intrinsic", ""): [1.0, 0.0, 1.0],
    ("intrinsic", "+demo=4-correct"): [1.0, 1.0, 0.0],
    ("intrinsic", "+demo=4-remapped"): [0.0, 0.0, 0.0],
}


def test_demonstration_effects_against_none_and_correct_labels_with_the_instruction_interaction() -> None:
    from workbench.metrics.tables import design_effect_rows

    cells = {
        (DEMO_BASE[instruction] + part, 0): {f"i{n}": value for n, value in enumerate(values)}
        for (instruction, part), values in DEMO_CELLS.items()
    }
    rows = design_effect_rows(cells, "accuracy", n_boot=200, seed=0)
    effects = {row["effect"]: row["estimate"] for row in rows}
    assert [row["outcome"] for row in rows] == ["accuracy@round0"] * 6
    # cell means: none 1/3, 1, 1/3; intrinsic 2/3, 2/3, 0 (no demo, 4 correct, 4 remapped)
    expected = {
        "demo=4-correct vs demo=0": ((1 - 1 / 3) + (2 / 3 - 2 / 3)) / 2,
        "instruction:(demo=4-correct vs demo=0)": ((2 / 3 - 2 / 3) - (1 - 1 / 3)) / 2,
        "demo=4-remapped vs demo=0": ((1 / 3 - 1 / 3) + (0 - 2 / 3)) / 2,
        "instruction:(demo=4-remapped vs demo=0)": ((0 - 2 / 3) - (1 / 3 - 1 / 3)) / 2,
        "demo=4-remapped vs demo=4-correct": ((1 / 3 - 1) + (0 - 2 / 3)) / 2,
        "instruction:(demo=4-remapped vs demo=4-correct)": ((0 - 2 / 3) - (1 / 3 - 1)) / 2,
    }
    assert list(effects) == list(expected)
    for effect, value in expected.items():
        assert effects[effect] == pytest.approx(value), effect


def test_a_full_design_at_each_demonstration_level_keeps_the_three_factor_effects() -> None:
    from workbench.metrics.tables import design_effect_rows

    rng = np.random.default_rng(0)
    outcomes = rng.integers(0, 2, size=(6, 2, 2, 2)).astype(float)
    cells: dict[tuple[str, int], dict[str, float]] = {}
    for i, c, f in itertools.product((0, 1), repeat=3):
        name = f"instr={('none', 'intrinsic')[i]}+cot={('off', 'on')[c]}+fb={('off', 'on')[f]}"
        for part, shift in (("", 0.0), ("+demo=4-correct", 1.0)):
            cells[(name + part, 1)] = {f"i{n}": outcomes[n, i, c, f] + shift * i for n in range(6)}
    rows = design_effect_rows(cells, "accuracy", n_boot=100, seed=0)
    plain = factorial_effects(outcomes, n_boot=100, seed=0)
    without = {row["effect"]: row for row in rows if "demo" not in row["effect"]}
    assert list(without) == list(plain)  # a run without demonstrations reads as before
    assert all(without[e]["estimate"] == plain[e].estimate for e in plain)
    at_four = {row["effect"]: row["estimate"] for row in rows if row["effect"].endswith(" @ demo=4-correct")}
    assert at_four["instruction @ demo=4-correct"] == pytest.approx(plain["instruction"].estimate + 1.0)
    assert at_four["cot @ demo=4-correct"] == pytest.approx(plain["cot"].estimate)
    effects = {row["effect"]: row["estimate"] for row in rows}
    assert effects["demo=4-correct vs demo=0"] == pytest.approx(0.5)  # +1 in the 4 instructed cells of 8
    assert effects["instruction:(demo=4-correct vs demo=0)"] == pytest.approx(0.5)


def _record(item: int, condition: str, predicted: int | None, gold: int = 1) -> dict:
    return {
        "item_id": f"bbq/Age/{item}",
        "condition": condition,
        "round": 0,
        "category": "Age",
        "task": "bbq",
        "context_condition": "ambig",
        "question_polarity": "neg",
        "predicted": predicted,
        "gold": gold,
        "target_index": 0,
        "unknown_index": 2,
        "option_probs": [0.2, 0.5, 0.3],
        "answer": "",
        "prompt": "",
        "toxicity": None,
    }


def test_remapped_answer_rate_counts_answers_naming_the_next_option_in_remapping_runs_only() -> None:
    from workbench.metrics.tables import compute_results, format_results_table

    base = "instr=none+cot=off+fb=off"
    remapped = base + "+demo=4-remapped"
    rows = [_record(0, base, 1), _record(1, base, 2), _record(0, remapped, 2), _record(1, remapped, 2, gold=2)]
    behaviour = compute_results(rows).tables["behaviour"]
    rate = {row["condition"]: row["value"] for row in behaviour if row["metric"] == "remapped_answer_rate"}
    # gold (b) -> (c); gold (c) -> (a): base answers (b), (c) -> 1 of 2; remapped answers (c), (c) -> 1 of 2
    assert rate == {base: 0.5, remapped: 0.5}
    plain = compute_results([_record(0, base, 1)]).tables["behaviour"]
    assert all(row["metric"] != "remapped_answer_rate" for row in plain)
    table = format_results_table(behaviour, "accuracy")
    assert [column.header for column in table.columns][:1] == ["demo"]
    assert "instr=none+cot=off+fb=off+demo=<demo> (none for demo 0)" in str(table.caption)


def test_probe_morality_levels_work_per_demonstration_condition() -> None:
    """probes/ reads conditions as plain names: its per-cell levels and its 2x2x2 effects take demonstration
    names; ``design_effect_rows`` over the same per-item levels gives its rows and the demonstration effects."""
    from probes.apply import RunRecords, cell_estimate, interaction_rows
    from workbench.metrics.tables import design_effect_rows

    rng = np.random.default_rng(1)
    names = [
        f"instr={i}+cot={c}+fb={f}{part}"
        for i in ("none", "intrinsic")
        for c in ("off", "on")
        for f in ("off", "on")
        for part in ("", "+demo=4-correct")
    ]
    n_items = 5
    condition = np.array([name for name in names for _ in range(n_items)], dtype=object)
    item_id = np.array([f"i{n}" for _ in names for n in range(n_items)], dtype=object)
    records = RunRecords(
        item_id=item_id,
        condition=condition,
        round=np.zeros(len(condition), dtype=int),
        uncertainty=np.full(len(condition), np.nan),
        uncertainty_measure="option_entropy",
        record_key=np.array([f"{c}/{i}" for c, i in zip(condition, item_id)], dtype=object),
        prompt=np.array([""] * len(condition), dtype=object),
        correct=np.full(len(condition), np.nan),
    )
    morality = rng.random(len(condition))
    demo = names[1]
    level = cell_estimate(records, morality, demo, 0, seed=0)
    assert level.n == n_items and level.estimate == pytest.approx(morality[condition == demo].mean())
    probe_rows = interaction_rows(records, morality, "morality", seed=0)
    plain_effects = list(factorial_effects(np.zeros((1, 2, 2, 2))))
    assert [row["effect"] for row in probe_rows[: len(plain_effects)]] == plain_effects
    cells = {
        (name, 0): {str(i): float(morality[(condition == name) & (item_id == i)][0]) for i in set(item_id)}
        for name in names
    }
    rows = design_effect_rows(cells, "morality", n_boot=1000, seed=0)
    assert rows == probe_rows  # the probes' morality effects are the behaviour tables' effects
    assert {row["effect"] for row in rows} >= {"demo=4-correct vs demo=0", "cot @ demo=4-correct"}
