"""Paper presets: a preset fills in what the file leaves out, the file's own keys win and are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.config import ConfigError, RunConfig
from workbench.presets import PRESETS, apply_preset, preset_lines, preset_overrides


def _table(preset: str | None, task: str = "bbq-sample", **protocol: object) -> dict[str, object]:
    task_table = {"name": task} if task == "bbq-sample" else {"name": task, "path": f"data/{task}"}
    table: dict[str, object] = {"task": task_table, "protocol": dict(protocol)}
    if preset is not None:
        table["protocol"]["preset"] = preset  # type: ignore[index]
    return table


def test_without_a_preset_the_defaults_are_unchanged() -> None:
    assert RunConfig.from_dict(_table(None)) == RunConfig.from_dict({"task": {"name": "bbq-sample"}})


def test_paper4_sets_its_rounds_family_transcript_and_ambiguous_contexts() -> None:
    config = RunConfig.from_dict(_table("paper4"))
    assert config.protocol.rounds == 5
    assert config.protocol.family == "paper4"
    assert config.protocol.history_mode == "faithful"
    assert config.task.context_conditions == ("ambig",)
    assert config.results.binning == "minmax_faithful"
    assert preset_overrides(config) == []


def test_task_limited_settings_apply_to_their_task_only() -> None:
    bbq = RunConfig.from_dict(_table("paper4"))
    toxicity = RunConfig.from_dict(_table("paper4", task="realtoxicity"))
    assert toxicity.protocol.answer_tokens == 125
    assert bbq.protocol.answer_tokens == RunConfig().protocol.answer_tokens
    assert toxicity.task.context_conditions is None
    paper2_bbq = RunConfig.from_dict(_table("paper2"))
    paper2_toxicity = RunConfig.from_dict(_table("paper2", task="realtoxicity"))
    assert (paper2_bbq.protocol.rationale_tokens, paper2_toxicity.protocol.rationale_tokens) == (256, 128)


def test_a_key_of_the_file_wins_and_is_named_once() -> None:
    config = RunConfig.from_dict(_table("paper4", rounds=3))
    assert config.protocol.rounds == 3
    (line,) = preset_overrides(config)
    assert line == "[protocol] rounds = 3 in the file wins over preset paper4's 5"
    assert any("[protocol] rounds = 5: overridden by the file (3)" in entry for entry in preset_lines(config))


def test_the_resolved_configuration_reads_back_to_itself(tmp_path: Path) -> None:
    config = RunConfig.from_dict(_table("paper2", rounds=4))
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml(), encoding="utf-8")
    again = RunConfig.load(path)
    assert again == config
    assert preset_overrides(again) == preset_overrides(config)


def test_apply_preset_does_not_change_its_input() -> None:
    table = _table("paper4")
    before = repr(table)
    apply_preset(table)
    assert repr(table) == before


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_a_valid_configuration_for_every_task(name: str) -> None:
    for task in ("bbq-sample", "winogender", "realtoxicity"):
        config = RunConfig.from_dict(_table(name, task=task))
        assert config.protocol.preset == name
        assert preset_lines(config)[0].startswith(f"preset {name} ")


def test_an_unknown_preset_is_one_line_naming_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"^\[protocol\] preset = 'paper9' is unknown; use one of paper1, paper2"):
        RunConfig.from_dict(_table("paper9"))
