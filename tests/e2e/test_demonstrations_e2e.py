"""End to end: in-context demonstrations on SmolLM2-135M-Instruct and the embedded BBQ sample.

Five items (one per category, so each has exactly 4 items of other stories to draw from), instruction
none/intrinsic x k in {0, 4} x labels {correct, remapped}, one round: six conditions, thirty dialogues;
about two minutes on two CPU cores.

The runner is given its demonstration pool with ``settings.transcript_rules(runner.items)``, the
line ``ExperimentRunner.__init__`` itself runs once it builds its rules from the run's items; the
assignment is then the same value again, and this test passes either way.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workbench.config import RunConfig
from workbench.experiment.records import read_run_records
from workbench.experiment.runner import ExperimentRunner
from workbench.inference.generation import chat_prompt
from workbench.metrics.tables import compute_results, format_results_table, record_row
from workbench.models import load_model
from workbench.protocols import Dialogue, next_prompt
from workbench.tasks.registry import load_configured_task

pytestmark = pytest.mark.e2e

BASE = "instr=none+cot=off+fb=off"
ANSWER_LINE = re.compile(r"\nThe single, most likely answer choice is (\([abc]\))\.\n\n")


def test_demonstrations_run_into_the_cache_and_the_tables(tmp_path: Path) -> None:
    config = RunConfig.from_dict(
        {
            "name": "demonstrations-e2e",
            "output_dir": str(tmp_path),
            "task": {"name": "bbq-sample", "limit_per_category": 1},
            "protocol": {
                "instructions": ["none", "intrinsic"],
                "demonstrations": [0, 4],
                "demonstration_labels": ["correct", "remapped"],
                "rounds": 1,
            },
            "capture": {"sites": ["blocks.29.hook_resid_post"], "batch_size": 5},
            "results": {"n_boot": 200},
        }
    )
    items = load_configured_task(config.task)
    model = load_model(config.model.spec)
    runner = ExperimentRunner(config, model, items)
    runner.protocol = config.protocol.transcript_rules(runner.items)
    cache = tmp_path / "cache.h5"
    runner.run(cache)

    records = [record_row(record) for record in read_run_records(cache)]
    names = [condition.name for condition in config.protocol.conditions()]
    assert sorted({r["condition"] for r in records}) == sorted(names) and len(names) == 6
    assert len(records) == 5 * 6

    by_key = {(r["condition"], r["item_id"]): r for r in records}
    item = items[0]
    for condition in config.protocol.conditions():
        prompt = next_prompt(item, condition, Dialogue(item.item_id), runner.protocol)
        assert prompt is not None and prompt.messages is not None
        # the cache holds exactly the protocol's prompt, through the model's chat template
        expected = chat_prompt(model, prompt.messages, prompt.assistant_prefix)
        assert by_key[(condition.name, item.item_id)]["prompt"] == expected
    plain = by_key[(BASE, item.item_id)]["prompt"]
    correct = by_key[(BASE + "+demo=4-correct", item.item_id)]["prompt"]
    remapped = by_key[(BASE + "+demo=4-remapped", item.item_id)]["prompt"]
    assert not ANSWER_LINE.search(plain)
    shown_correct, shown_remapped = ANSWER_LINE.findall(correct), ANSWER_LINE.findall(remapped)
    assert len(shown_correct) == len(shown_remapped) == 4
    assert ANSWER_LINE.sub("", correct) == ANSWER_LINE.sub("", remapped)  # same examples, other labels
    shift = {"(a)": "(b)", "(b)": "(c)", "(c)": "(a)"}
    assert shown_remapped == [shift[label] for label in shown_correct]
    last_example = list(ANSWER_LINE.finditer(correct))[-1].end()
    assert correct[last_example:].startswith(item.context + " " + item.question)  # then the item's question

    tables = compute_results(records, config.results).tables
    behaviour = tables["behaviour"]
    for metric in ("accuracy", "remapped_answer_rate"):
        values = {row["condition"]: row["value"] for row in behaviour if row["metric"] == metric}
        assert set(values) == set(names)
        assert all(0.0 <= float(value) <= 1.0 for value in values.values())
    effects = {row["effect"]: row for row in tables["interactions"]}
    for effect in (
        "demo=4-correct vs demo=0",
        "instruction:(demo=4-correct vs demo=0)",
        "demo=4-remapped vs demo=0",
        "demo=4-remapped vs demo=4-correct",
    ):
        assert -1.0 <= float(effects[effect]["estimate"]) <= 1.0
    table = format_results_table(behaviour, "accuracy")
    assert [column.header for column in table.columns][:2] == ["instr", "demo"]
