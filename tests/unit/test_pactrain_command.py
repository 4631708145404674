"""``workbench pactrain``'s configuration lines and the files the command writes."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import pytest

from workbench.pactrain.command import add_arguments, config_from_arguments, run_command
from workbench.pactrain.config import PACTrainConfig, PACTrainError
from workbench.pactrain.experiment import ExperimentResults, RunRecord, summarize, t_interval
from workbench.pactrain.tables import format_summary

TINY = [
    "--seeds", "0", "1",
    "--epochs", "2",
    "--batch-size", "64",
    "--train-size", "200",
    "--hidden-width", "32",
    "--adam-learning-rates", "1e-3", "1e-2",
    "--adam-weight-decays", "0",
]  # fmt: skip


def _parse(*arguments: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="workbench pactrain")
    add_arguments(parser)
    return parser.parse_args(list(arguments))


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        (
            {"networks": ("mlp", "rnn")},
            "[pactrain] networks = ('mlp', 'rnn') has unknown network 'rnn'; valid networks: mlp, cnn",
        ),
        (
            {"methods": ("sgd",)},
            "[pactrain] methods = ('sgd',) has unknown method 'sgd'; valid methods: pac_bayes, adam_grid",
        ),
        ({"networks": ()}, "[pactrain] networks = () is empty; valid networks: mlp, cnn"),
        ({"epochs": 0}, "[pactrain] epochs = 0 must be an integer >= 1"),
        ({"epochs": 10, "stage1_epochs": 11}, "[pactrain] stage1_epochs = 11 must be between 0 and epochs = 10"),
        ({"seeds": (1, 1)}, "[pactrain] seeds = (1, 1) repeats a seed; give distinct integers"),
        ({"test_fraction": 1.0}, "[pactrain] test_fraction = 1.0 must be strictly between 0 and 1"),
        ({"train_size": 5}, "[pactrain] train_size = 5 must be >= 20 (or None for the split)"),
        (
            {"adam_weight_decays": (-0.1,)},
            "[pactrain] adam_weight_decays = (-0.1,) must be a non-empty list of values >= 0",
        ),
        ({"noise_learning_rate": 0.0}, "[pactrain] noise_learning_rate = 0.0 must be > 0"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key_and_valid_values(settings: dict[str, object], line: str) -> None:
    with pytest.raises(PACTrainError) as raised:
        PACTrainConfig(**settings)  # type: ignore[arg-type]
    assert str(raised.value) == line


def test_a_toml_table_is_type_checked_and_unknown_keys_name_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(PACTrainError, match=r'\[pactrain\] epochs = "ten" must be an integer'):
        PACTrainConfig.from_dict({"epochs": "ten"})
    with pytest.raises(PACTrainError, match=r"\[pactrain\] has unknown key\(s\) dropout; valid keys: networks, "):
        PACTrainConfig.from_dict({"dropout": 0.1})
    with pytest.raises(PACTrainError, match=r"\[pactrain.bound\] gamma_min = 20, gamma_max = 10.0: need 0 < "):
        PACTrainConfig.from_dict({"bound": {"gamma_min": 20}})
    path = tmp_path / "pactrain.toml"
    path.write_text("[pactrain]\nepochs = 7\nseeds = [3]\n[pactrain.bound]\nbound_constant = 10.0\n")
    config = config_from_arguments(_parse("-o", str(tmp_path), "--config", str(path), "--epochs", "9"))
    assert (config.epochs, config.seeds, config.bound.bound_constant) == (9, (3,), 10.0)
    assert config.stage1_epoch_count == 7  # 4/5 of 9, rounded down


def test_command_line_numbers_are_checked_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(PACTrainError, match=r"\[pactrain\] batch_size = 0 must be an integer >= 1"):
        run_command(_parse("-o", str(tmp_path / "out"), "--batch-size", "0"))
    with pytest.raises(PACTrainError, match=r"train_size = 1300 exceeds the 1257 training digits"):
        run_command(_parse("-o", str(tmp_path / "out"), "--train-size", "1300"))
    assert not (tmp_path / "out").exists()


def test_run_command_writes_results_summary_and_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "pactrain"
    huge_constant = tmp_path / "vacuous.toml"  # (KL + c + 3L) / (n γ) >= 1e5 / (200 * 10): vacuous for sure
    huge_constant.write_text("[pactrain.bound]\nbound_constant = 1e5\n")
    with pytest.raises(
        PACTrainError, match=r"of (mlp|cnn) seed \d \(4 of 4 PAC-Bayes runs vacuous\) is vacuous: \d+\.\d{4} nats >= "
    ):
        run_command(_parse("-o", str(output), "--config", str(huge_constant), *TINY))
    with (output / "results.csv").open() as handle:
        runs = list(csv.DictReader(handle))
    assert [(row["network"], row["method"], row["seed"]) for row in runs] == [
        (network, method, seed)
        for network in ("mlp", "cnn")
        for seed in ("0", "1")
        for method in ("pac_bayes", "adam_grid")
    ]
    assert all(row["train_size"] == "200" and 0 <= float(row["test_accuracy"]) <= 1 for row in runs)
    assert all(row["bound"] and row["learning_rate"] == "" for row in runs if row["method"] == "pac_bayes")
    assert all(row["bound"] == "" and row["learning_rate"] for row in runs if row["method"] == "adam_grid")
    with (output / "adam_grid.csv").open() as handle:
        grid = list(csv.DictReader(handle))
    assert len(grid) == 2 * 2 * 2  # networks x seeds x cells
    assert sum(row["chosen"] == "True" for row in grid) == 4
    with (output / "summary.csv").open() as handle:
        summary = list(csv.DictReader(handle))
    assert [(row["network"], row["method"], row["seeds"]) for row in summary] == [
        ("mlp", "pac_bayes", "2"),
        ("mlp", "adam_grid", "2"),
        ("cnn", "pac_bayes", "2"),
        ("cnn", "adam_grid", "2"),
    ]
    assert json.loads((output / "config.json").read_text())["epochs"] == 2
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("network method")
    assert max(len(line) for line in printed.splitlines()) <= 80

    again = _parse("-o", str(output), "--config", str(huge_constant), *TINY, "--networks", "mlp", "--allow-vacuous")
    assert run_command(again) == 0
    assert "note: the PAC-Bayes bound of mlp seed" in capsys.readouterr().err


def test_summary_interval_is_the_student_t_interval() -> None:
    values = [0.90, 0.94, 0.92, 0.95, 0.93]
    mean, low, high = t_interval(values)
    sd = math.sqrt(sum((v - 0.928) ** 2 for v in values) / 4)
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t_{0.975, 4}
    assert (mean, low, high) == pytest.approx((0.928, 0.928 - half, 0.928 + half), rel=1e-12)
    assert all(math.isnan(x) for x in t_interval([0.9])[1:])


def test_summary_names_the_adam_cell_chosen_most_often() -> None:
    def adam(seed: int, rate: float) -> RunRecord:
        return RunRecord("mlp", "adam_grid", seed, 100, 0.9, 1.0, 1.0, learning_rate=rate, weight_decay=0.0)

    rows = summarize(ExperimentResults((adam(0, 1e-3), adam(1, 1e-2), adam(2, 1e-3)), ()))
    assert rows[0].adam_choice == "lr=0.001 wd=0 (2/3)"
    assert "lr=0.001 wd=0 (2/3)" in format_summary(rows)
