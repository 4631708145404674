"""A run is checked before any model loads, a refused run changes nothing, a cache never chooses code.

Each test stands for one case a new user (or an attacker with write access to a shared run folder)
met on commit 242d4a2: tracebacks for mistyped values, refusals that overwrote ``config.toml``, a
0-record cache bound to a bad configuration, and a cache whose recorded configuration made
``workbench probe`` import a folder's Python file.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import pytest
import torch
from rich.console import Console

from activations_cache import config_sha256
from workbench.cli.main import main
from workbench.cli.progress import LogProgress
from workbench.config import ConfigError, RunConfig
from workbench.models import tiny_model

BASE = """
name = "pre"
[model]
spec = "{model}"
[task]
name = "bbq-sample"
categories = ["Age"]
limit_per_category = 2
[protocol]
instructions = ["none"]
rounds = 1
answer_tokens = 2
[capture]
sites = ["blocks.*.hook_resid_post"]
positions = {positions}
batch_size = 2
[results]
n_boot = 20
[probe]
n_folds = 2
n_repeats = 1
max_concept_examples = 20
layer_band = [0, 1]
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_model("llama", n_layers=2)
    model.model.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    return path


def _write(tmp_path: Path, model_dir: Path, extra: str = "", positions: str = '["last_prompt"]') -> Path:
    path = tmp_path / "run.toml"
    path.write_text(BASE.format(model=model_dir, positions=positions) + extra)
    return path


def _run(config: Path, tmp_path: Path, *extra: str) -> int:
    return main(["run", str(config), "--output-dir", str(tmp_path / "runs"), "--stages", "run", *extra])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[protocol]\nrounds = "three"', '[protocol] rounds = "three" must be an integer'),
        ("[protocol]\nrounds = 1.5", "[protocol] rounds = 1.5 must be an integer"),
        ('[capture]\nbatch_size = "4"', '[capture] batch_size = "4" must be an integer'),
        ("[capture]\nbatch_size = 0", "[capture] batch_size = 0 must be at least 1"),
        ("[capture]\nbatch_size = -2", "[capture] batch_size = -2 must be at least 1"),
        ("[protocol]\ninstructions = []", "[protocol] instructions = [] is empty"),
        ('[protocol]\ninstructions = "none"', '[protocol] instructions = "none" must be a list of strings'),
        ('[cache]\ncompression = "gzip9"', '[cache] compression = "gzip9" must be one of "none", "lzf"'),
        ('[model]\nbackend = "vllm"', '[model] backend = "vllm" must be one of "hf", "transformer_lens", "nnsight"'),
        ("[probe]\nn_fold = 3", "[probe] has unknown key(s) n_fold"),
        ('[probe]\nkind = "svm"', "[probe] kind 'svm' is unknown"),
        ('[capture]\npositions = ["all"]', '[capture] positions: "all" is not a cached position'),
    ],
)
def test_a_mistyped_value_is_one_line_naming_the_key(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(table + "\n")
    with pytest.raises(ConfigError) as raised:
        RunConfig.load(path)
    assert message in str(raised.value) and str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_missing_device_and_a_misspelt_model_are_refused_in_seconds(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_device = _write(tmp_path, model_dir)
    bad_device.write_text(bad_device.read_text().replace("[model]\n", '[model]\ndevice = "cuda:7"\n'))
    typo = tmp_path / "typo.toml"
    typo.write_text(BASE.format(model="smollm2-135m-instuct", positions='["last_prompt"]'))
    started = time.monotonic()
    if not torch.cuda.is_available():
        assert _run(bad_device, tmp_path) == 2
        assert 'device "cuda:7": CUDA is not available here' in capsys.readouterr().err
    assert _run(typo, tmp_path) == 2
    assert "did you mean 'smollm2-135m-instruct'" in capsys.readouterr().err
    assert time.monotonic() - started < 30
    assert not (tmp_path / "runs").exists()


def test_check_validates_without_running(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(tmp_path, model_dir)
    assert _run(config, tmp_path, "--check") == 0
    out = capsys.readouterr().out
    assert f"{config}: ok" in out and "task: bbq-sample, 2 items" in out and "records: 2 answer rounds" in out
    assert not (tmp_path / "runs").exists()


def test_a_refused_run_leaves_config_toml_as_it_was(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path, model_dir)
    assert _run(config, tmp_path) == 0
    written = tmp_path / "runs" / "pre" / "config.toml"
    first = written.read_text()

    changed = _write(tmp_path, model_dir, extra="").read_text().replace("rounds = 1", "rounds = 2")
    config.write_text(changed)
    assert _run(config, tmp_path) == 2
    assert "was written by another configuration" in capsys.readouterr().err
    assert written.read_text() == first

    # a second writer holds the lock: refused, and config.toml still describes the first run
    lock_path = tmp_path / "runs" / "pre" / "cache.h5.lock"
    with lock_path.open("a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        config.write_text(_write(tmp_path, model_dir).read_text().replace("batch_size = 2", "batch_size = 1"))
        assert _run(config, tmp_path, "--overwrite") == 2
        assert "is being written by another process" in capsys.readouterr().err
    assert written.read_text() == first


def test_a_run_that_fails_before_its_first_record_leaves_no_cache(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    past_the_prompt = _write(tmp_path, model_dir, positions="[100000]")
    assert _run(past_the_prompt, tmp_path) == 2
    capsys.readouterr()
    run_dir = tmp_path / "runs" / "pre"
    assert not (run_dir / "cache.h5").exists() and not (run_dir / "config.toml").exists()
    fixed = _write(tmp_path, model_dir)
    assert _run(fixed, tmp_path) == 0


def _remote_code_folder(folder: Path, marker: Path) -> Path:
    """A model folder whose config asks transformers to import its own Python file (which leaves ``marker``)."""
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "marker",
                "architectures": ["MarkerModel"],
                "auto_map": {"AutoConfig": "marker.MarkerConfig", "AutoModelForCausalLM": "marker.MarkerModel"},
            }
        )
    )
    (folder / "marker.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["marker.Tok", None]}}))
    return folder


def test_a_cache_cannot_make_probe_run_code(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(_write(tmp_path, model_dir), tmp_path) == 0
    run_dir = tmp_path / "runs" / "pre"
    marker = tmp_path / "marker-ran"
    folder = _remote_code_folder(tmp_path / "shared-model", marker)
    _rewrite_recorded_config(
        run_dir / "cache.h5", lambda recorded: recorded["model"].update(spec=str(folder), trust_remote_code=True)
    )
    assert main(["probe", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"records model {str(folder)!r}" in err and "nothing is loaded from the cache" in err
    assert not marker.exists()

    # the user names that folder too, without trust_remote_code: its weights are checked before loading
    user_config = (run_dir / "config.toml").read_text().replace(f'spec = "{model_dir}"', f'spec = "{folder}"')
    (run_dir / "config.toml").write_text(user_config)
    assert main(["probe", str(run_dir)]) == 2
    assert "were expected (the run cache's)" in capsys.readouterr().err
    assert not marker.exists()


def test_progress_lines_when_the_output_is_a_log_file() -> None:
    console = Console(record=True, width=80, force_terminal=False)
    now = [0.0]
    progress = LogProgress(console, interval_s=30, clock=lambda: now[0], wall_clock=lambda: "12:00:00")
    with progress:
        task = progress.add_task("loading model")
        progress.update(task, description="demo: records", total=400)
        for _ in range(40):
            now[0] += 5
            progress.advance(task, 10)
    lines = console.export_text().splitlines()
    assert lines[0] == "[12:00:00] loading model"
    assert lines[1] == "[12:00:00] demo: records 10/400 (2%), 5s elapsed, about 3m15s left"
    assert lines[-1] == "[12:00:00] demo: records 400/400 (100%), 3m20s elapsed"
    assert 6 <= len(lines) <= 10  # every 30 s of 200 s, plus the first and the last
    assert all(len(line) <= 80 for line in lines)


def test_run_under_a_scheduler_prints_plain_progress(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKBENCH_PROGRESS_SECONDS", "0")
    assert _run(_write(tmp_path, model_dir), tmp_path) == 0
    err = capsys.readouterr().err
    assert "pre: records 2/2 (100%)" in err and "\x1b[" not in err


def test_an_unexpected_error_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import workbench.cli.main as cli

    def broken(args: object) -> int:
        raise RuntimeError("disk quota exceeded\nwhile writing")

    monkeypatch.setattr(cli, "_models", broken)
    assert main(["models"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("unexpected error: RuntimeError: disk quota exceeded while writing")
    assert "\n" not in err and "Traceback" not in err


def test_a_bad_probe_config_names_its_file(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(_write(tmp_path, model_dir), tmp_path) == 0
    capsys.readouterr()
    run_dir = tmp_path / "runs" / "pre"
    bad = tmp_path / "probe.toml"
    bad.write_text("[probe\nkind = 'ccs'\n")
    assert main(["probe", str(run_dir), "--config", str(bad)]) == 2
    assert f"error: {bad}: invalid TOML" in capsys.readouterr().err
    bad.write_text("[probe]\nn_folds = 1\n")
    assert main(["probe", str(run_dir), "--config", str(bad)]) == 2
    assert f"error: {bad}: [probe] n_folds=1 must be at least 2" in capsys.readouterr().err


def test_results_and_probe_refuse_a_concept_cache_in_one_line(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(_write(tmp_path, model_dir), tmp_path) == 0
    run_dir = tmp_path / "runs" / "pre"
    assert main(["probe", str(run_dir)]) == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "cache.h5").write_bytes((run_dir / "probes" / "concepts.h5").read_bytes())
    capsys.readouterr()
    for command in (["results", str(foreign)], ["probe", str(foreign)]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert "is a concept cache" in err and "\n" not in err and "Traceback" not in err


def test_results_refuse_a_cache_without_the_run_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cache another tool wrote with fewer columns would silently lose accuracy and bias scores."""
    import numpy as np

    from activations_cache import CacheMetadata, CacheSpec, CacheWriter, ColumnSpec, DatasetSpec

    run_dir = tmp_path / "partial"
    run_dir.mkdir()
    spec = CacheSpec(
        datasets=(DatasetSpec(position="last_prompt", site="hook_resid_post", layers=(0,), shape=(4,)),),
        record_columns={"option_probs": ColumnSpec("float64", length=3)},
    )
    meta = CacheMetadata(model_id="m", weights_hash="sha256:0", tokenizer="t", config={}, seed=0)
    record = {"record_key": "k", "item_id": "i", "condition": "c", "round": 0, "prompt": "p", "answer": "a"}
    record |= {"n_prompt_tokens": 1, "n_answer_tokens": 1, "option_probs": np.array([0.2, 0.3, 0.5])}
    with CacheWriter.open(run_dir / "cache.h5", spec, meta) as writer:
        writer.submit([record], {("last_prompt", "hook_resid_post"): np.zeros((1, 1, 4), dtype=np.float32)})
    assert main(["results", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "lacks the run record column(s) task, category" in err and "\n" not in err


def _rewrite_recorded_config(cache: Path, edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Rewrite a run cache's recorded configuration (and its hash) as another run, or an older workbench,
    would have written it; returns what it now records."""
    with h5py.File(cache, "r+") as file:
        recorded: dict[str, Any] = json.loads(file.attrs["config_json"])
        edit(recorded)
        file.attrs["config_json"] = json.dumps(recorded, sort_keys=True, separators=(",", ":"))
        file.attrs["config_sha256"] = config_sha256(recorded)
    return recorded


def test_a_cache_written_before_keys_existed_resumes_with_their_defaults(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path, model_dir)
    assert _run(config, tmp_path) == 0
    cache = tmp_path / "runs" / "pre" / "cache.h5"
    with h5py.File(cache, "r") as file:
        n_records = len(file["records"]["record_key"])

    def before_demonstrations_and_engines(recorded: dict[str, Any]) -> None:
        for key in ("demonstrations", "demonstration_labels", "demonstration_seed"):
            del recorded["protocol"][key]
        del recorded["generation"]

    older = _rewrite_recorded_config(cache, before_demonstrations_and_engines)
    with h5py.File(cache, "r+") as file:
        del file.attrs["generation_engine"]  # nor did such a cache record its engine
    as_run = dataclasses.replace(RunConfig.load(config), output_dir=str(tmp_path / "runs"))
    assert as_run.resumes(older) and as_run.to_dict() != older
    assert _run(config, tmp_path) == 0  # resumed: the defaults of the new keys are what the old code did
    with h5py.File(cache, "r") as file:
        assert len(file["records"]["record_key"]) == n_records
        assert json.loads(file.attrs["config_json"]) == older  # the file keeps what it recorded
        assert json.loads(file.attrs["resumed_at"])  # it was opened and resumed, not rewritten

    def other_rounds(recorded: dict[str, Any]) -> None:
        recorded["protocol"]["rounds"] = 5

    changed = _rewrite_recorded_config(cache, other_rounds)
    assert not as_run.resumes(changed)
    capsys.readouterr()
    assert _run(config, tmp_path) == 2
    assert "was written by another configuration" in capsys.readouterr().err
    with h5py.File(cache, "r") as file:
        assert len(file["records"]["record_key"]) == n_records
