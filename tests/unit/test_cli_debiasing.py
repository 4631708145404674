"""The debiasing commands (bias, attribute, debias, finetune) on tiny random Llamas saved to
disk, with hand-written data files: what lands in the run folder, what is printed, and the
one-line errors for bad input."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from workbench.attribution.selection import ArchitectureMismatch
from workbench.cli.debiasing import (
    add_debiasing_commands,
    bias_levels_table,
    checkpoint_label,
)
from workbench.cli.errors import CheckpointKindError, CheckpointLabelError, DebiasingConfigError
from workbench.finetune.cda import NoGenderedWordsError
from workbench.finetune.prosocial import HeadParameterError
from workbench.finetune.tasks import TaskDataError
from workbench.finetune.tiny_encoder import tiny_encoder
from workbench.models import tiny_model

TASK_ROWS = [
    ("he was old", 0),
    ("she was young", 1),
    ("the man was young", 1),
    ("the woman was old", 0),
    ("he said it", 0),
    ("she said it", 1),
    ("the man said it", 0),
    ("the woman was young", 1),
] * 2


def run_command(argv: list[str]) -> int:
    """Parse and run one debiasing command as ``workbench`` does, letting errors propagate (their class is checked)."""
    parser = argparse.ArgumentParser(prog="workbench")
    add_debiasing_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.handler(args)


def save_tiny(folder: Path, seed: int = 0, n_heads: int = 4) -> str:
    loaded = tiny_model(d_model=32, n_heads=n_heads, n_kv_heads=2, seed=seed)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return str(folder)


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich wraps at $COLUMNS; keep printed paths and tables on one line each."""
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture
def data(tmp_path: Path) -> dict[str, Path]:
    """Tiny data files in the tiny tokenizer's vocabulary, and a TOML config pointing at them."""
    files = {
        "crows": write_csv(
            tmp_path / "crows.csv",
            ["", "sent_more", "sent_less", "stereo_antistereo", "bias_type"],
            [
                (0, "the nurse said she was kind", "the nurse said he was kind", "stereo", "gender"),
                (1, "the doctor said he can pay", "the doctor said she can pay", "stereo", "gender"),
                (2, "the old man is a doctor", "the young man is a doctor", "antistereo", "age"),
                (3, "the woman is a nurse", "the man is a nurse", "stereo", "gender"),
            ],
        ),
        "occupations": tmp_path / "occupations.tsv",
        "seat": tmp_path / "seat.jsonl",
        "corpus": tmp_path / "corpus.txt",
        "neutral": tmp_path / "neutral.txt",
        "task": write_csv(tmp_path / "task.csv", ["label", "input"], [(label, text) for text, label in TASK_ROWS]),
        "one_label": write_csv(
            tmp_path / "one_label.csv", ["label", "input"], [(1, "he was old"), (1, "she was young")]
        ),
    }
    files["occupations"].write_text(
        "occupation\tbergsma_pct_female\tbls_pct_female\tbls_year\nnurse\t90\t90\t2015\ndoctor\t40\t38\t2015\n"
        "person\t50\t50\t2015\n",
        encoding="utf-8",
    )
    files["seat"].write_text(
        json.dumps(
            {
                "targ1": {"examples": ["doctor", "old"]},
                "targ2": {"examples": ["nurse", "young"]},
                "attr1": {"examples": ["man", "he"]},
                "attr2": {"examples": ["woman", "she"]},
            }
        ),
        encoding="utf-8",
    )
    files["corpus"].write_text(
        "he said the doctor was old\nthe nurse said it\nthe woman said she was young\n", encoding="utf-8"
    )
    files["neutral"].write_text("the nurse said it\nthe doctor was old\n", encoding="utf-8")
    files["config"] = write_config(tmp_path / "debiasing.toml", files)
    return files


def write_config(path: Path, files: dict[str, Path], **overrides: str) -> Path:
    """A TOML config over ``files``; ``overrides`` maps a table name to its replacement text."""
    tables = {
        "bias": f'crows_pairs_path = "{files["crows"]}"\nseat_paths = ["{files["seat"]}"]\nn_resamples = 50\n'
        "n_permutations = 100\n",
        "attribution": f'occupations_path = "{files["occupations"]}"\n'
        'methods = ["activation_patching", "attribution_patching"]\ntop_k = 3\n',
        "debias": f'corpus_path = "{files["corpus"]}"\nsteps = 2\nbatch_size = 2\nmax_length = 16\n',
        "finetune": f'task = "ethics_commonsense"\ndata_path = "{files["task"]}"\nepochs = 1\nbatch_size = 4\n'
        "max_length = 16\nheld_out_fraction = 0.25\ncheckpoint_every = 1\nlearning_rate = 1e-3\n",
    }
    tables.update(overrides)
    path.write_text("".join(f"[{name}]\n{body}\n" for name, body in tables.items() if body), encoding="utf-8")
    return path


def test_checkpoint_label_is_the_short_name_of_the_spec() -> None:
    assert checkpoint_label("runs/a/checkpoints/debiased") == "debiased"
    assert checkpoint_label("HuggingFaceTB/SmolLM2-135M-Instruct") == "SmolLM2-135M-Instruct"
    assert checkpoint_label("models/q4.gguf") == "q4"
    assert checkpoint_label("smollm2-135m-instruct") == "smollm2-135m-instruct"


def test_bias_table_puts_checkpoints_side_by_side(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "bias_levels.csv",
        ["checkpoint", "measure", "value", "ci_low", "ci_high", "n"],
        [
            ("pretrained", "crows_pairs", "0.57", "0.47", "0.67", "100"),
            ("pretrained", "seat.weat6.effect_size", "-0.2291", "", "", "32"),
            ("debiased", "crows_pairs", "0.55", "0.4", "0.65", "100"),
        ],
    )
    console = Console(file=io.StringIO(), width=200)
    console.print(bias_levels_table(path))
    lines = console.file.getvalue().splitlines()
    header = next(line for line in lines if "measure" in line)
    assert header.index("pretrained") < header.index("debiased")
    crows = next(line for line in lines if "crows_pairs" in line)
    assert "0.570 [0.470, 0.670]" in crows and "0.550 [0.400, 0.650]" in crows
    seat = next(line for line in lines if "seat.weat6.effect_size" in line)
    assert "-0.229" in seat and "[" not in seat and seat.rstrip(" │").endswith("-")


def test_bias_measures_several_checkpoints_and_prints_all(
    tmp_path: Path, data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = save_tiny(tmp_path / "m0"), save_tiny(tmp_path / "m1", seed=1)
    run = tmp_path / "run"
    assert (
        run_command(
            [
                "bias",
                "--run",
                str(run),
                "--config",
                str(data["config"]),
                "--model",
                first,
                "--model",
                second,
                "--label",
                "pretrained",
                "--label",
                "debiased",
            ]
        )
        == 0
    )
    rows = read_rows(run / "attribution" / "bias_levels.csv")
    overall = {r["checkpoint"]: r for r in rows if r["measure"] == "crows_pairs"}
    assert list(overall) == ["pretrained", "debiased"]
    assert all(r["n"] == "4" and float(r["value"]) in (0.0, 0.25, 0.5, 0.75, 1.0) for r in overall.values())
    by_type = {r["measure"]: r["n"] for r in rows if r["checkpoint"] == "pretrained"}
    assert by_type["crows_pairs.gender"] == "3" and by_type["crows_pairs.age"] == "1"
    assert by_type["crows_pairs.stereo"] == "3" and by_type["seat.seat.effect_size"] == "8"
    # re-measuring one checkpoint replaces its rows in place and keeps the other's
    assert (
        run_command(
            ["bias", "--run", str(run), "--config", str(data["config"]), "--model", second, "--label", "pretrained"]
        )
        == 0
    )
    again = read_rows(run / "attribution" / "bias_levels.csv")
    assert len(again) == len(rows) and [r["checkpoint"] for r in again] == [r["checkpoint"] for r in rows]
    printed = capsys.readouterr().out
    assert "pretrained" in printed and "debiased" in printed and "crows_pairs.gender" in printed
    assert run_command(["bias", "--run", str(run)]) == 0  # print only


def test_bias_input_errors(tmp_path: Path, data: dict[str, Path]) -> None:
    run, model = str(tmp_path / "run"), save_tiny(tmp_path / "m0")
    with pytest.raises(CheckpointLabelError, match="2 --label for 1 --model"):
        run_command(
            ["bias", "--run", run, "--config", str(data["config"]), "--model", model, "--label", "a", "--label", "b"]
        )
    with pytest.raises(CheckpointLabelError, match=r"\['m0'\]"):
        run_command(["bias", "--run", run, "--config", str(data["config"]), "--model", model, "--model", model])
    with pytest.raises(DebiasingConfigError, match="needs --config"):
        run_command(["bias", "--run", run, "--model", model])
    with pytest.raises(FileNotFoundError, match="bias_levels.csv does not exist yet"):
        run_command(["bias", "--run", run])
    missing = write_config(tmp_path / "missing.toml", {**data, "crows": tmp_path / "nowhere.csv"})
    with pytest.raises(DebiasingConfigError, match=r"\[bias\] crows_pairs_path = '.*nowhere.csv' does not exist"):
        run_command(["bias", "--run", run, "--config", str(missing), "--model", model])
    typo = write_config(tmp_path / "typo.toml", data, bias="crows_path = 'x'\n")
    unknown_key = r"typo.toml: \[bias\] has unknown key\(s\) crows_path; valid keys: crows_pairs_path"
    with pytest.raises(DebiasingConfigError, match=unknown_key):
        run_command(["bias", "--run", run, "--config", str(typo), "--model", model])
    extra = tmp_path / "extra.toml"
    extra.write_text(data["config"].read_text(encoding="utf-8") + "[probe]\nx = 1\n", encoding="utf-8")
    with pytest.raises(DebiasingConfigError, match=r"unknown table\(s\) \['probe'\]"):
        run_command(["bias", "--run", run, "--config", str(extra), "--model", model])


def test_attribute_base_and_debiased_writes_heads_and_selection(
    tmp_path: Path, data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base, debiased = save_tiny(tmp_path / "base"), save_tiny(tmp_path / "debiased", seed=1)
    run = tmp_path / "run"
    assert (
        run_command(
            ["bias", "--run", str(run), "--config", str(data["config"]), "--model", base, "--label", "pretrained"]
        )
        == 0
    )
    assert (
        run_command(
            [
                "attribute",
                "--run",
                str(run),
                "--config",
                str(data["config"]),
                "--model",
                base,
                "--label",
                "pretrained",
                "--debiased",
                debiased,
            ]
        )
        == 0
    )
    heads = read_rows(run / "attribution" / "heads.csv")
    assert len(heads) == 2 * 2 * 2 * 4  # checkpoints x methods x layers x heads
    effect = {
        (r["checkpoint"], int(r["layer"]), int(r["head"])): float(r["effect"])
        for r in heads
        if r["method"] == "activation_patching"
    }
    drops = sorted(
        ((abs(effect["pretrained", l, h]) - abs(effect["debiased", l, h]), l, h) for l in range(2) for h in range(4)),
        reverse=True,
    )
    expected = [(l, h) for drop, l, h in drops if drop > 0][:3]
    selected = read_rows(run / "attribution" / "selected_heads.csv")
    assert [(int(r["layer"]), int(r["head"])) for r in selected] == expected
    levels = {(r["checkpoint"], r["measure"]) for r in read_rows(run / "attribution" / "bias_levels.csv")}
    assert ("pretrained", "winogender.total_effect") in levels and ("debiased", "winogender.logit_difference") in levels
    assert ("pretrained", "crows_pairs") in levels  # the bias command's rows of that checkpoint are kept
    printed = capsys.readouterr().out
    assert "pretrained: attribution patching vs activation patching: Spearman rho" in printed
    assert "successfully debiased heads" in printed and f"{len(expected)} heads selected" in printed


def test_attribute_refuses_different_architectures_and_same_labels(tmp_path: Path, data: dict[str, Path]) -> None:
    base, other = save_tiny(tmp_path / "base"), save_tiny(tmp_path / "other", n_heads=8)
    run = str(tmp_path / "run")
    with pytest.raises(ArchitectureMismatch, match="n_heads: 4 vs 8"):
        run_command(["attribute", "--run", run, "--config", str(data["config"]), "--model", base, "--debiased", other])
    with pytest.raises(CheckpointLabelError, match="both have the label 'x'"):
        run_command(
            [
                "attribute",
                "--run",
                run,
                "--config",
                str(data["config"]),
                "--model",
                base,
                "--label",
                "x",
                "--debiased",
                other,
                "--debiased-label",
                "x",
            ]
        )
    assert not (tmp_path / "run" / "attribution" / "heads.csv").exists()


def test_debias_saves_checkpoint_counts_changed_lines_and_measures(
    tmp_path: Path, data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert (
        run_command(
            ["debias", "--run", str(run), "--config", str(data["config"]), "--model", save_tiny(tmp_path / "m0")]
        )
        == 0
    )
    checkpoint = run / "checkpoints" / "debiased"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "config.json").is_file()
    printed = capsys.readouterr().out
    # lines 1 and 3 of the corpus have gendered words; line 2 has none
    assert f"checkpoint: {checkpoint}" in printed and "CDA changed 2 of 3 corpus lines" in printed
    assert {r["checkpoint"] for r in read_rows(run / "attribution" / "bias_levels.csv")} == {"debiased"}


def test_a_selection_of_another_corpus_is_refused_before_the_model_loads(tmp_path: Path, data: dict[str, Path]) -> None:
    from workbench.finetune.selection import SelectionError

    selection = tmp_path / "selection.csv"
    selection.write_text(
        "line,text,uncertainty,uncertainty_measure,concept_activation,score,rank,selected,random\n"
        "0,not a line of this corpus,0.5,semantic,0.1,0.2,0,1,0\n",
        encoding="utf-8",
    )
    debias = f'corpus_path = "{data["corpus"]}"\nsteps = 1\nbatch_size = 2\nmax_length = 16\nselection_path = "{selection}"\n'
    config = write_config(tmp_path / "selected.toml", data, debias=debias)
    missing_model = str(tmp_path / "no-model-here")  # loading it would fail with another error
    with pytest.raises(SelectionError, match="corpus line 0 is not the text this selection scored"):
        run_command(["debias", "--run", str(tmp_path / "run"), "--config", str(config), "--model", missing_model])
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_debias_corpus_without_gendered_words(
    tmp_path: Path, data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, run = save_tiny(tmp_path / "m0"), str(tmp_path / "run")
    neutral = f'corpus_path = "{data["neutral"]}"\nsteps = 1\nbatch_size = 2\nmax_length = 16\n'
    refusing = write_config(tmp_path / "refuse.toml", data, debias=neutral)
    with pytest.raises(NoGenderedWordsError, match=r"neutral.txt: none of the 2 texts contains a gendered word"):
        run_command(["debias", "--run", run, "--config", str(refusing), "--model", model])
    warning = write_config(tmp_path / "warn.toml", data, bias="", debias=neutral + 'on_no_gendered_words = "warn"\n')
    assert run_command(["debias", "--run", run, "--config", str(warning), "--model", model]) == 0
    captured = capsys.readouterr()
    assert "CDA changed nothing" in captured.err and "none of the 2 lines" in captured.err
    assert not (tmp_path / "run" / "attribution" / "bias_levels.csv").exists()  # no [bias] table: not measured


def test_finetune_plain_reports_accuracy_and_bias_next_to_the_others(
    tmp_path: Path, data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, run = save_tiny(tmp_path / "m0"), tmp_path / "run"
    common = ["--run", str(run), "--config", str(data["config"])]
    assert run_command(["bias", *common, "--model", model, "--label", "debiased"]) == 0
    assert run_command(["finetune", *common, "--model", model, "--mode", "plain"]) == 0
    folder = run / "checkpoints" / "finetuned-plain"
    result = json.loads((folder / "finetune_result.json").read_text(encoding="utf-8"))["result"]
    # 16 examples: 4 held out, 12 trained in batches of 4 for one epoch
    assert (result["steps"], result["n_train"], result["n_held_out"]) == (3, 12, 4)
    assert result["held_out_accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    levels = read_rows(run / "attribution" / "bias_levels.csv")
    assert [r["checkpoint"] for r in levels if r["measure"] == "crows_pairs"] == ["debiased", "finetuned-plain"]
    printed = capsys.readouterr().out
    assert f"finetuned-plain: held-out accuracy {result['held_out_accuracy']:.3f} on 4 examples" in printed
    header = [line for line in printed.splitlines() if "measure" in line and "debiased" in line][-1]
    assert header.index("debiased") < header.index("finetuned-plain")


def test_finetune_resumes_after_an_interruption(
    tmp_path: Path, data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, run = save_tiny(tmp_path / "m0"), tmp_path / "run"
    common = ["--run", str(run), "--config", str(data["config"]), "--model", model, "--mode", "plain"]
    assert run_command(["finetune", *common, "--stop-after-steps", "2"]) == 0
    folder = run / "checkpoints" / "finetuned-plain"
    assert sorted(p.name for p in folder.iterdir()) == ["step-000001", "step-000002"]
    kept = (folder / "step-000001" / "model.safetensors").read_bytes()
    assert "stopped after step 2" in capsys.readouterr().out
    assert run_command(["finetune", *common]) == 0
    assert f"resuming from {folder / 'step-000002'}" in capsys.readouterr().err
    assert json.loads((folder / "finetune_result.json").read_text(encoding="utf-8"))["result"]["steps"] == 3
    assert (folder / "step-000001" / "model.safetensors").read_bytes() == kept
    assert (folder / "step-000003").is_dir() and (folder / "final").is_dir()


def test_finetune_prosocial_uses_the_run_folder_heads_and_checks_their_range(
    tmp_path: Path, data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, run = save_tiny(tmp_path / "m0"), tmp_path / "run"
    common = ["--run", str(run), "--config", str(data["config"]), "--model", model, "--mode", "prosocial"]
    with pytest.raises(FileNotFoundError, match="selected_heads.csv does not exist; run `workbench attribute"):
        run_command(["finetune", *common])
    save_tiny(run / "checkpoints" / "debiased", seed=1)
    (run / "attribution").mkdir()
    heads = write_csv(
        run / "attribution" / "selected_heads.csv",
        ["layer", "head", "effect_before", "effect_after", "drop"],
        [(1, 2, 0.5, 0.1, 0.4)],
    )
    assert run_command(["finetune", *common]) == 0
    assert "finetuned-prosocial: held-out accuracy" in capsys.readouterr().out
    write_csv(
        heads,
        ["layer", "head", "effect_before", "effect_after", "drop"],
        [(1, 2, 0.5, 0.1, 0.4), (0, 4, 0.3, 0.1, 0.2)],
    )
    out_of_range = r"selected_heads.csv:3: head \(layer 0, head 4\) is out of range .* heads 0..3"
    with pytest.raises(HeadParameterError, match=out_of_range):
        run_command(["finetune", *common])
    save_tiny(tmp_path / "wide", n_heads=8)
    with pytest.raises(ArchitectureMismatch, match="n_heads: 4 vs 8"):
        run_command(["finetune", *common, "--debiased", str(tmp_path / "wide")])


def test_finetune_task_with_one_label_is_refused(tmp_path: Path, data: dict[str, Path]) -> None:
    one_label = write_config(
        tmp_path / "one.toml", data, finetune=f'task = "ethics_commonsense"\ndata_path = "{data["one_label"]}"\n'
    )
    with pytest.raises(TaskDataError, match="one_label.csv: every example has label"):
        run_command(
            [
                "finetune",
                "--run",
                str(tmp_path / "run"),
                "--config",
                str(one_label),
                "--model",
                save_tiny(tmp_path / "m0"),
                "--mode",
                "plain",
            ]
        )


def test_every_option_has_help() -> None:
    parser = argparse.ArgumentParser(prog="workbench")
    commands = parser.add_subparsers()
    add_debiasing_commands(commands)
    assert set(commands.choices) == {"bias", "attribute", "debias", "finetune"}
    for command in commands.choices.values():
        for action in command._actions:
            assert action.help, f"{command.prog} {action.option_strings} has no help"


def test_finetune_pac_mode_reads_the_nested_pac_table(tmp_path: Path, data: dict[str, Path]) -> None:
    finetune = (
        f'task = "ethics_commonsense"\ndata_path = "{data["task"]}"\nepochs = 1\nbatch_size = 4\n'
        "max_length = 16\n[finetune.pac]\nstage1_epochs = 1\nk_prior_log_scales = [-6.0, -2.0, 2]\n"
        "k_models = 2\n"
    )
    config = write_config(tmp_path / "pac.toml", data, finetune=finetune)
    run = tmp_path / "run"
    assert (
        run_command(
            [
                "finetune",
                "--run",
                str(run),
                "--config",
                str(config),
                "--model",
                save_tiny(tmp_path / "m0"),
                "--mode",
                "pac",
            ]
        )
        == 0
    )
    record = json.loads((run / "checkpoints" / "finetuned-pac" / "finetune_result.json").read_text(encoding="utf-8"))
    assert record["config"]["mode"] == "pac" and record["config"]["pac"]["k_models"] == 2
    assert record["result"]["steps"] == 4  # default held_out_fraction 0.2: 3 of 16 held out, 13 in 4 batches


def test_workbench_main_runs_the_commands_and_prints_errors_in_one_line(
    tmp_path: Path, data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from workbench.cli.main import main

    run = str(tmp_path / "run")
    assert main(["bias", "--run", run]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "bias_levels.csv does not exist yet" in error and "\n" not in error
    assert (
        main(
            [
                "bias",
                "--run",
                run,
                "--config",
                str(data["config"]),
                "--model",
                save_tiny(tmp_path / "m0"),
                "--label",
                "pretrained",
            ]
        )
        == 0
    )
    assert "pretrained" in capsys.readouterr().out


def save_tiny_encoder(folder: Path, family: str = "bert", seed: int = 0) -> str:
    loaded = tiny_encoder(family, seed=seed)
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return str(folder)


def test_encoder_given_to_a_causal_only_command_is_refused_in_one_line(
    tmp_path: Path, data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from workbench.cli.main import main

    encoder, run = save_tiny_encoder(tmp_path / "bert"), str(tmp_path / "run")
    common = ["--run", run, "--config", str(data["config"]), "--model", encoder]
    with pytest.raises(CheckpointKindError, match=r"bert encoder checkpoint, but `workbench attribute` needs a causal"):
        run_command(["attribute", *common])
    with pytest.raises(CheckpointKindError, match=r"`workbench debias` needs a causal LM .* --debiased DIR"):
        run_command(["debias", *common])
    causal_crows = 'set likelihood = "masked" in the \\[bias\\] table for encoders'
    with pytest.raises(CheckpointKindError, match=causal_crows):
        run_command(["bias", *common])
    with pytest.raises(CheckpointKindError, match=causal_crows):
        run_command(["finetune", *common, "--mode", "plain"])
    capsys.readouterr()
    assert main(["attribute", *common]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and str(tmp_path / "bert") in error and "\n" not in error
    assert not (tmp_path / "run" / "attribution").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_finetune_and_bias_take_an_encoder_with_masked_likelihood(
    tmp_path: Path, data: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    masked = (
        f'crows_pairs_path = "{data["crows"]}"\nseat_paths = ["{data["seat"]}"]\nlikelihood = "masked"\n'
        "n_resamples = 50\nn_permutations = 100\n"
    )
    config = write_config(tmp_path / "masked.toml", data, bias=masked)
    encoder, run = save_tiny_encoder(tmp_path / "roberta", "roberta"), tmp_path / "run"
    common = ["--run", str(run), "--config", str(config)]
    assert run_command(["bias", *common, "--model", encoder, "--label", "debiased"]) == 0
    assert run_command(["finetune", *common, "--model", encoder, "--mode", "pac"]) == 0
    record = json.loads((run / "checkpoints" / "finetuned-pac" / "finetune_result.json").read_text(encoding="utf-8"))
    assert record["result"]["steps"] == 3 and record["config"]["mode"] == "pac"
    levels = read_rows(run / "attribution" / "bias_levels.csv")
    assert [r["checkpoint"] for r in levels if r["measure"] == "crows_pairs"] == ["debiased", "finetuned-pac"]
    assert "finetuned-pac: held-out accuracy" in capsys.readouterr().out
