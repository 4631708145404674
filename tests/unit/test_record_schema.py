"""The record schema has one owner: declared once, written by the runner, decoded by one decoder."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest

from activations_cache import BUILTIN_COLUMNS, open_cache
from workbench.config import RunConfig
from workbench.experiment.records import (
    MAX_OPTIONS,
    NO_INDEX,
    RECORD_COLUMNS,
    RunRecord,
    decode_records,
    encode_index,
    encode_option_probs,
    record_key,
)
from workbench.experiment.runner import ExperimentRunner
from workbench.metrics.tables import RECORD_KEYS
from workbench.models import tiny_model
from workbench.protocols.self_distinguish import bbq_stereotype_prompt
from workbench.tasks.registry import load_configured_task

ROOT = Path(__file__).resolve().parents[2]
OWNER = ROOT / "workbench" / "experiment" / "records.py"

CONFIG = """
name = "schema"
seed = 0
[model]
spec = "tiny-llama"
[task]
name = "bbq-sample"
categories = ["Age"]
limit_per_category = 2
[protocol]
instructions = ["none"]
rounds = 1
answer_tokens = 3
self_distinguish = true
uncertainty_samples = 2
[capture]
sites = ["blocks.1.hook_resid_post"]
batch_size = 2
"""


def test_decoder_handles_exactly_the_declared_columns() -> None:
    decoded = {field.name for field in dataclasses.fields(RunRecord)}
    assert decoded == set(BUILTIN_COLUMNS) | set(RECORD_COLUMNS)
    assert not set(BUILTIN_COLUMNS) & set(RECORD_COLUMNS)
    assert set(RECORD_KEYS) <= decoded  # the results rows are made of decoded fields


def test_no_other_module_declares_record_columns() -> None:
    declaration = re.compile(
        r"\bRECORD_COLUMNS\s*[:=]|\bMAX_OPTIONS\s*=|def record_key\b|"
        + "|".join(rf"[\"']{name}[\"']\s*:\s*ColumnSpec\(" for name in RECORD_COLUMNS)
    )
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("workbench", "probes", "reports")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != OWNER and declaration.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_missing_values_encode_and_decode_as_documented() -> None:
    assert encode_index(None) == NO_INDEX and encode_index(2) == 2
    assert np.isnan(encode_option_probs(None)).all() and encode_option_probs(None).shape == (MAX_OPTIONS,)
    np.testing.assert_array_equal(encode_option_probs([0.25, 0.75]), [0.25, 0.75, np.nan])
    np.testing.assert_array_equal(encode_option_probs([0.1, 0.2, 0.3, 0.4]), [0.1, 0.2, 0.3])
    table: dict[str, np.ndarray] = {
        "record_key": np.array(["c|i|0"], dtype=object),
        "item_id": np.array(["i"], dtype=object),
        "condition": np.array(["c"], dtype=object),
        "round": np.array([0]),
        "prompt": np.array(["p"], dtype=object),
        "answer": np.array(["a"], dtype=object),
        "n_prompt_tokens": np.array([1]),
        "n_answer_tokens": np.array([1]),
        "prompt_sha256": np.array(["x"], dtype=object),
        "answer_sha256": np.array(["y"], dtype=object),
        "gold": np.array([NO_INDEX]),
        "predicted": np.array([1]),
        "option_probs": encode_option_probs([0.25, 0.75])[None],
        "toxicity": np.array([np.nan]),
        "context_condition": np.array([""], dtype=object),
        "category": np.array([""], dtype=object),
        "distinguish_predicted": np.array([1]),
        "distinguish_gold": np.array([1]),
        "not_declared": np.array([7]),
    }  # the other declared columns are absent: missing in every record
    (record,) = decode_records(table)
    assert record.gold is None and record.predicted == 1 and record.target_index is None
    assert record.option_probs == (0.25, 0.75)
    assert record.toxicity is None and record.semantic_uncertainty is None
    assert record.context_condition is None and record.question_polarity is None and record.toxicity_scorer is None
    assert record.category == "" and record.task == "" and record.template_id == ""
    assert record.distinguish_correct == 1.0
    assert record.pairwise_distinguish_accuracy is None
    assert dataclasses.replace(record, distinguish_gold=None).distinguish_correct is None


def test_runner_records_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "schema.toml"
    path.write_text(CONFIG)
    config = dataclasses.replace(RunConfig.load(path), output_dir=str(tmp_path / "runs"))
    items = load_configured_task(config.task)
    runner = ExperimentRunner(config, tiny_model("llama", n_layers=2), items)
    runner.run(tmp_path / "cache.h5")
    with open_cache(tmp_path / "cache.h5", expect="run") as reader:
        written = set(reader.records)
        records = decode_records(reader.records)
    assert written == {field.name for field in dataclasses.fields(RunRecord)}
    assert [record.item_id for record in records] == [item.item_id for item in items]
    (condition,) = runner.conditions
    for record, item in zip(records, items):
        assert record.record_key == record_key(condition.name, item.item_id, 0)
        assert (record.condition, record.round, record.task, record.category) == (condition.name, 0, "bbq", "Age")
        assert record.context_condition == item.metadata["context_condition"]
        assert record.question_polarity == item.metadata["question_polarity"]
        assert (record.gold, record.target_index, record.unknown_index) == (
            item.gold,
            item.metadata["target_index"],
            item.metadata["unknown_index"],
        )
        assert record.option_probs is not None and len(record.option_probs) == len(item.options) == MAX_OPTIONS
        assert math.isclose(sum(record.option_probs), 1.0, rel_tol=1e-6)
        assert record.predicted_logprob == int(np.argmax(record.option_probs))
        assert record.predicted_parsed is None or 0 <= record.predicted_parsed < MAX_OPTIONS
        assert record.distinguish_gold == bbq_stereotype_prompt(item).gold
        assert record.distinguish_correct in (0.0, 1.0)
        assert record.semantic_uncertainty is not None and record.semantic_uncertainty >= 0
        # not measured for BBQ: no toxicity scorer, no pairwise distinguish
        assert record.toxicity is None and record.toxicity_scorer is None
        assert record.pairwise_distinguish_accuracy is None
        assert record.n_prompt_tokens > 0 and record.prompt and record.prompt_sha256


@pytest.mark.parametrize("value", [None, 0, 2])
def test_index_round_trip(value: int | None) -> None:
    table = {name: np.array([encode_index(value)]) for name, spec in RECORD_COLUMNS.items() if spec.kind == "int64"}
    builtins = {
        name: np.array([0] if spec.kind == "int64" else ["k"], dtype=object) for name, spec in BUILTIN_COLUMNS.items()
    }
    (record,) = decode_records({**builtins, **table})
    assert all(getattr(record, name) == value for name in table)
