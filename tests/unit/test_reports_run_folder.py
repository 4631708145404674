"""Loading a run folder's tidy tables (reports.run_results / reports.tables, row types of workbench.run_tables).

Also defines ``write_synthetic_run``, the synthetic run folder that the other report tests
(and tests/e2e/test_report_browser.py) build their reports from.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import pytest

from reports.run_results import RunResults
from reports.tables import TableFormatError
from workbench.run_folder import RunFolderError
from workbench.run_tables import BehaviourMetric, ItemAnswer

HOSTILE_PROMPT = "<script>alert(1)</script> Who was bad at math?"
HOSTILE_ANSWER = '<img src=x onerror="alert(2)"> (a)'
CONDITIONS = ("instr=intrinsic+cot=off+fb=off", "instr=intrinsic+cot=on+fb=off")
ROUNDS = (0, 1, 2)
LAYERS = (0, 1, 2, 3)
ITEM_IDS = ("bbq/Age/1", "bbq/Age/2", "bbq/Age/3", "bbq/Age/4")
CONFIG_TOML = """\
name = "synthetic"
seed = 7

[model]
name = "smollm2-135m-instruct"
backend = "hf"

[data]
task = "bbq"
categories = ["Age"]
max_items = 4

[protocol]
rounds = 3
"""


HEADERS = {
    "results/behaviour.csv": "condition,round,metric,value,ci_low,ci_high,n,undefined_reason",
    "results/convergence.csv": "condition,metric,convergence_round",
    "results/flips.csv": "condition,round_from,round_to,answer_from,answer_to,count",
    "results/calibration.csv": "condition,round,bin_low,bin_high,mean_confidence,accuracy,count",
    "results/paired_tests.csv": "metric,round,condition_a,condition_b,difference,ci_low,ci_high,p_value,n,n_unparsed",
    "results/bbq_categories.csv": (
        "condition,round,category,metric,unparsed,convention,value,ci_low,ci_high,n,undefined_reason,n_unparsed"
    ),
    "results/interactions.csv": "outcome,effect,estimate,ci_low,ci_high",
    "results/items.csv": "item_id,condition,round,prompt_excerpt,answer,predicted,correct",
    "probes/layer_scores.csv": "site,position,layer,arm,metric,value,ci_low,ci_high",
    "probes/morality.csv": "condition,round,site,layer,measure,value,ci_low,ci_high,n",
    "probes/concept_uncertainty.csv": "condition,round,item_id,concept_activation,uncertainty",
    "probes/interactions.csv": "outcome,effect,estimate,ci_low,ci_high",
    "probes/steering.csv": "site,layer,direction,alpha,metric,value",
    "attribution/heads.csv": "checkpoint,method,layer,head,effect",
    "attribution/bias_levels.csv": "checkpoint,measure,value,ci_low,ci_high,n",
    "attribution/selected_heads.csv": "layer,head,effect_before,effect_after,drop",
}
SITE = "blocks.{l}.hook_resid_post"
UNDEFINED_REASON = "no non-unknown answer"


def write_csv(run_dir: Path, table: str, rows: Sequence[tuple[object, ...]]) -> None:
    """Write the tidy ``table`` (a key of :data:`HEADERS`) of ``run_dir``; ``None`` -> ''."""
    path = run_dir / table
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS[table].split(","))
        writer.writerows(["" if cell is None else cell for cell in row] for row in rows)


def write_synthetic_run(run_dir: Path, *, with_probes: bool = True) -> Path:
    """A complete run folder: 2 conditions x 3 rounds x 4 items, 4 layers, 2 checkpoints.

    Every table of the report is written (the probe tables only ``with_probes``): paired tests of the
    two conditions, BBQ bias scores of two categories, steering at one layer, two selected heads.

    Item ``bbq/Age/1`` carries :data:`HOSTILE_PROMPT` and :data:`HOSTILE_ANSWER`. The bias score of
    the second condition at round 1 is undefined (:data:`UNDEFINED_REASON`), as when every answer
    of that cell is "unknown".
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(CONFIG_TOML, encoding="utf-8")
    (run_dir / "cache.h5").write_bytes(b"")
    behaviour: list[tuple[object, ...]] = []
    for c, condition in enumerate(CONDITIONS):
        for r in ROUNDS:
            accuracy = 0.5 + 0.1 * r + 0.05 * c
            uncertainty = 1.2 - 0.2 * r
            ece = 0.2 - 0.05 * r
            bias = (None, None, None, 4, UNDEFINED_REASON) if (c, r) == (1, 1) else (0.3 - 0.1 * r, None, None, 4, None)
            behaviour += [
                (condition, r, "accuracy", accuracy, accuracy - 0.1, accuracy + 0.1, 4, None),
                (condition, r, "bias_score_ambiguous", *bias),
                (condition, r, "uncertainty", uncertainty, uncertainty - 0.2, uncertainty + 0.2, 4, None),
                (condition, r, "ece", ece, ece - 0.1, ece + 0.1, 4, None),
            ]
    write_csv(run_dir, "results/behaviour.csv", behaviour)
    convergence = [
        (CONDITIONS[0], "accuracy", 2),
        (CONDITIONS[1], "accuracy", 1),
        (CONDITIONS[1], "bias_score_ambiguous", None),
    ]
    write_csv(run_dir, "results/convergence.csv", convergence)
    flips = [
        (condition, r, r + 1, answer_from, answer_to, count)
        for condition in CONDITIONS
        for r in ROUNDS[:-1]
        for answer_from, answer_to, count in (("a", "c", 1), ("c", "c", 2), ("b", "b", 1))
    ]
    write_csv(run_dir, "results/flips.csv", flips)
    calibration = [
        (condition, r, low, low + 0.1, low + 0.05, min(1.0, low + 0.05 * r), 2)
        for condition in CONDITIONS
        for r in ROUNDS
        for low in (0.3, 0.5, 0.7, 0.9)
    ]
    write_csv(run_dir, "results/calibration.csv", calibration)
    effects = ("instruction", "cot", "feedback", "instruction:cot", "cot:feedback")
    write_csv(
        run_dir,
        "results/interactions.csv",
        [("accuracy", effect, 0.1 * i - 0.2, 0.1 * i - 0.3, 0.1 * i - 0.1) for i, effect in enumerate(effects)],
    )
    items = []
    for condition in CONDITIONS:
        for r in ROUNDS:
            for i, item_id in enumerate(ITEM_IDS):
                hostile = i == 0
                items.append(
                    (
                        item_id,
                        condition,
                        r,
                        HOSTILE_PROMPT if hostile else f"Context {i}. Who was forgetful?",
                        HOSTILE_ANSWER if hostile else "The answer is (c)",
                        "a" if hostile else "c",
                        0 if hostile else 1,
                    )
                )
    write_csv(run_dir, "results/items.csv", items)
    paired = [("accuracy", r, CONDITIONS[0], CONDITIONS[1], -0.05, -0.3, 0.2, 1.0, 4, 0) for r in ROUNDS]
    write_csv(run_dir, "results/paired_tests.csv", paired)
    categories = [
        (condition, r, category, metric, "excluded", "r_script", 0.1 * (c + 1) - 0.05 * r, -0.4, 0.6, 2, None, 0)
        for c, condition in enumerate(CONDITIONS)
        for r in ROUNDS
        for category in ("all", "Age", "Age (names)")
        for metric in ("bias_score_ambiguous", "bias_score_disambiguated")
    ]
    write_csv(run_dir, "results/bbq_categories.csv", categories)
    if with_probes:
        _write_probe_tables(run_dir)
    heads = [
        (checkpoint, "attribution_patching", layer, head, (layer - head) / 10 * (k + 1))
        for k, checkpoint in enumerate(("base", "debiased"))
        for layer in LAYERS
        for head in range(3)
    ]
    write_csv(run_dir, "attribution/heads.csv", heads)
    bias_levels = [
        ("base", "bias_score_ambiguous", 0.3, 0.2, 0.4, 4),
        ("debiased", "bias_score_ambiguous", 0.1, None, None, 4),
    ]
    write_csv(run_dir, "attribution/bias_levels.csv", bias_levels)
    write_csv(run_dir, "attribution/selected_heads.csv", [(1, 0, 0.4, 0.1, 0.3), (2, 2, -0.3, -0.2, 0.1)])
    return run_dir


def _write_probe_tables(run_dir: Path) -> None:
    accuracy = {
        (layer, arm): value
        for layer in LAYERS
        for arm, value in (
            ("probe", 0.6 + 0.1 * layer),
            ("shuffled_labels", 0.5),
            ("random_direction", 0.52),
        )
    }
    layer_scores = [
        (SITE, "last", layer, arm, "accuracy", value, value - 0.05, value + 0.05)
        for (layer, arm), value in accuracy.items()
    ]
    write_csv(run_dir, "probes/layer_scores.csv", layer_scores)
    morality = [
        (condition, r, SITE, layer, "probe_probability", 0.1 * layer + 0.05 * r, None, None, 4)
        for condition in CONDITIONS
        for r in ROUNDS
        for layer in LAYERS
    ]
    write_csv(run_dir, "probes/morality.csv", morality)
    concept = [
        (condition, r, item_id, 0.1 * i + 0.02 * r, 1.0 + 0.2 * i)
        for condition in CONDITIONS
        for r in ROUNDS
        for i, item_id in enumerate(ITEM_IDS)
    ]
    write_csv(run_dir, "probes/concept_uncertainty.csv", concept)
    hidden_effects = [
        ("probe_probability", "instruction", 0.05, -0.01, 0.11),
        ("probe_probability", "cot", -0.02, None, None),
    ]
    write_csv(run_dir, "probes/interactions.csv", hidden_effects)
    steering = [
        ("hook_resid_post", 2, direction, alpha, metric, 0.3 + (0.02 * alpha if direction == "probe" else 0.0))
        for direction in ("probe", "random")
        for alpha in (-4.0, 0.0, 4.0)
        for metric in ("unknown_rate", "mean_prob_target")
    ]
    write_csv(run_dir, "probes/steering.csv", steering)


def test_load_parses_numbers_empty_intervals_and_booleans(tmp_path: Path) -> None:
    results = RunResults.load(write_synthetic_run(tmp_path / "run"))
    assert results.name == "run"
    assert results.config is not None and results.config["model"]["backend"] == "hf"
    assert results.behaviour is not None and len(results.behaviour) == 2 * 3 * 4
    first = results.behaviour[0]
    assert first == BehaviourMetric(CONDITIONS[0], 0, "accuracy", 0.5, 0.4, 0.6, 4)
    bias = results.behaviour[1]
    assert (bias.metric, bias.ci_low, bias.ci_high, bias.undefined_reason) == ("bias_score_ambiguous", None, None, None)
    undefined = next(
        r for r in results.behaviour if (r.condition, r.round, r.metric) == (CONDITIONS[1], 1, bias.metric)
    )
    assert undefined == BehaviourMetric(CONDITIONS[1], 1, bias.metric, None, None, None, 4, UNDEFINED_REASON)
    assert undefined.value_text() == "undefined (no non-unknown answer)"
    assert results.convergence is not None
    assert results.convergence[2].convergence_round is None
    assert results.items is not None
    assert results.items[0] == ItemAnswer("bbq/Age/1", CONDITIONS[0], 0, HOSTILE_PROMPT, HOSTILE_ANSWER, "a", False)
    assert results.items[1].correct is True
    assert results.heads is not None and len(results.heads) == 2 * 4 * 3


def test_missing_tables_load_as_none(tmp_path: Path) -> None:
    results = RunResults.load(write_synthetic_run(tmp_path / "run", with_probes=False))
    assert results.morality is None and results.layer_scores is None
    assert results.probe_interactions is None and results.concept_uncertainty is None
    assert results.flips is not None


def test_cache_file_path_loads_its_run_folder(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path / "run")
    assert RunResults.load(run_dir / "cache.h5").run_dir == run_dir


def test_header_only_table_loads_as_empty(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_csv(run_dir, "results/flips.csv", [])
    assert RunResults.load(run_dir).flips == ()


def test_missing_run_folder_names_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match=r"nowhere: no such run folder; run `workbench run"):
        RunResults.load(tmp_path / "nowhere")


def test_folder_without_results_or_cache_names_path_and_fix(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match=r"empty: holds neither results/ nor cache.h5; run `workbench run"):
        RunResults.load(tmp_path / "empty")


def test_behaviour_without_reason_column_reads_empty_values_as_undefined(tmp_path: Path) -> None:
    """A behaviour.csv written before the undefined_reason column existed: an empty value is undefined."""
    path = tmp_path / "run" / "results" / "behaviour.csv"
    path.parent.mkdir(parents=True)
    path.write_text(
        "condition,round,metric,value,ci_low,ci_high,n\n"
        "c,0,accuracy,0.5,0.4,0.6,4\n"
        "c,0,bias_score_ambiguous,,,,4\n"
        "c,1,bias_score_ambiguous,nan,0.1,0.2,4\n",
        encoding="utf-8",
    )
    assert RunResults.load(tmp_path / "run").behaviour == (
        BehaviourMetric("c", 0, "accuracy", 0.5, 0.4, 0.6, 4),
        BehaviourMetric("c", 0, "bias_score_ambiguous", None, None, None, 4, "not computable"),
        BehaviourMetric("c", 1, "bias_score_ambiguous", None, None, None, 4, "not computable"),
    )


def test_value_with_an_undefined_reason_is_a_one_line_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_csv(run_dir, "results/behaviour.csv", [("c", 0, "accuracy", 0.5, "", "", 3, "one class")])
    with pytest.raises(TableFormatError) as error:
        RunResults.load(run_dir)
    assert "\n" not in str(error.value)
    assert str(error.value).startswith(f"{run_dir / 'results' / 'behaviour.csv'}:2: column 'undefined_reason'")
    assert "empty one of the two cells or rerun the stage that wrote it" in str(error.value)


def test_bad_cell_names_file_line_and_column(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    rows = [("c", 0, "accuracy", 0.5, "", "", 3, ""), ("c", 1, "accuracy", "high", "", "", 3, "")]
    write_csv(run_dir, "results/behaviour.csv", rows)
    with pytest.raises(TableFormatError, match=r"behaviour.csv:3: column 'value' holds 'high', expected a number"):
        RunResults.load(run_dir)


def test_missing_column_is_named(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "results").mkdir(parents=True)
    (run_dir / "results/convergence.csv").write_text("condition,metric\nc,accuracy\n")
    with pytest.raises(TableFormatError, match=r"convergence.csv:1: missing column\(s\) convergence_round"):
        RunResults.load(run_dir)


def test_short_row_is_reported(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "results").mkdir(parents=True)
    (run_dir / "results/convergence.csv").write_text("condition,metric,convergence_round\nc,accuracy\n")
    with pytest.raises(TableFormatError, match=r"convergence.csv:2: the row has fewer cells"):
        RunResults.load(run_dir)


def test_bad_boolean_is_reported(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_csv(run_dir, "results/items.csv", [("i", "c", 0, "p", "a", "a", "maybe")])
    with pytest.raises(TableFormatError, match=r"items.csv:2: column 'correct' holds 'maybe'"):
        RunResults.load(run_dir)


def test_invalid_config_is_reported(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path / "run")
    (run_dir / "config.toml").write_text("[model\n")
    with pytest.raises(RunFolderError, match=r"config.toml: not valid TOML"):
        RunResults.load(run_dir)
