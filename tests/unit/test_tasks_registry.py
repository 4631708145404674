"""load_task and the [task] configuration table."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from workbench.tasks.registry import TaskConfig, TaskConfigError, load_configured_task, load_task

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_data = pytest.mark.skipif(
    not (DATA_DIR / "bbq" / "data" / "Age.jsonl").is_file(), reason=f"benchmark files not found under {DATA_DIR}"
)


def test_embedded_sample_needs_no_path():
    items = load_task("bbq-sample", polarities=["neg"], context_conditions=["disambig"])
    assert len(items) == 15  # 15 templates x 1 cell
    assert all(item.task == "bbq" for item in items)


@needs_data
def test_each_task_by_name():
    assert len(load_task("bbq", DATA_DIR / "bbq", categories=["Religion"], limit_per_category=4)) == 4
    assert len(load_task("winogender", DATA_DIR / "winogender", categories=["nurse"])) == 2
    assert len(load_task("realtoxicity", DATA_DIR / "real_toxicity_prompts", categories=["nontoxic"])) == 1200


def test_config_from_toml_table_round_trips():
    table = tomllib.loads(
        'name = "bbq-sample"\ncategories = ["Age", "Religion"]\ncontext_conditions = ["ambig"]\n'
        "limit_per_category = 2\nseed = 5\n"
    )
    config = TaskConfig.from_dict(table)
    assert config.categories == ("Age", "Religion") and config.seed == 5
    assert TaskConfig.from_dict(config.to_dict()) == config
    assert config.to_dict() == {
        "name": "bbq-sample",
        "categories": ["Age", "Religion"],
        "context_conditions": ["ambig"],
        "limit_per_category": 2,
        "seed": 5,
        "on_error": "raise",
    }
    items = load_configured_task(config)
    assert [item.category for item in items] == ["Age", "Age", "Religion", "Religion"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"name": "bbq", "path": "x", "categorys": ["Age"]},
            r"\[task\] has unknown key\(s\) categorys; valid keys: name, path",
        ),
        ({"name": "squad"}, "unknown task 'squad'; valid tasks: bbq, bbq-sample, winogender, realtoxicity"),
        ({"name": "winogender"}, 'needs a path to its data, e.g. path = "shared/data/winogender"'),
        ({"name": "winogender", "path": "x", "polarities": ["neg"]}, "does not take polarities"),
        ({"name": "bbq-sample", "path": "x"}, "takes no path"),
        ({"name": "bbq-sample", "polarities": ["negative"]}, "'negative' not among"),
        ({"name": "bbq-sample", "limit_per_category": 0}, "positive integer"),
        ({"name": "bbq", "path": "x", "on_error": "ignore"}, "on_error='ignore'"),
        ({"path": "x"}, "needs a name"),
    ],
)
def test_bad_tables_are_rejected_clearly(table, message):
    with pytest.raises(TaskConfigError, match=message):
        TaskConfig.from_dict(table)


def test_unknown_filter_keyword():
    with pytest.raises(TaskConfigError, match=r"unknown filter\(s\) polarity; valid: categories"):
        load_task("bbq-sample", polarity=["neg"])
