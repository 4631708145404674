"""The runner end to end on a tiny random model saved to disk: cache, resume, results, backends."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import workbench.experiment.runner as runner_module
from activations_cache import open_cache, verify_cache
from workbench.cli.main import main
from workbench.config import ConfigError, RunConfig
from workbench.models import tiny_model
from workbench.pipeline import results_stage, run_stage

CONFIG = """
name = "tiny"
seed = 0
[model]
spec = "{model}"
backend = "{backend}"
[task]
name = "bbq-sample"
categories = ["Age", "Religion"]
limit_per_category = 3
[protocol]
instructions = ["none", "intrinsic"]
rounds = 2
history_mode = "{history}"
answer_tokens = 4
[capture]
sites = ["blocks.*.hook_resid_post", "blocks.1.attn.hook_z"]
positions = {positions}
batch_size = 4
[results]
n_boot = 50
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_model("llama", n_layers=2)
    model.model.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    return path


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def _config(
    tmp_path: Path,
    model_dir: Path,
    backend: str = "hf",
    history: str = "clean",
    positions: str = '["last_prompt"]',
    name: str = "tiny",
) -> RunConfig:
    path = tmp_path / f"{name}.toml"
    path.write_text(CONFIG.format(model=model_dir, backend=backend, history=history, positions=positions))
    config = RunConfig.load(path)
    return dataclasses.replace(config, name=name, output_dir=str(tmp_path / "runs"))


def _arrays(cache: Path) -> dict[str, np.ndarray]:
    with open_cache(cache) as reader:
        arrays = {
            f"{p}/{s}": np.stack([reader.read(s, layer, p) for layer in reader.layers(s, p)], axis=1)
            for p, s in reader.sites()
        }
        arrays.update({f"records/{name}": np.asarray(values) for name, values in reader.records.items()})
    return arrays


def test_run_writes_every_record_and_results(tmp_path: Path, model_dir: Path) -> None:
    config = _config(tmp_path, model_dir)
    run_dir = run_stage(config)
    cache = run_dir / "cache.h5"
    with open_cache(cache) as reader:
        records = reader.records
        assert len(records["record_key"]) == 6 * 2 * 2  # items x conditions x rounds
        assert sorted(set(records["condition"])) == ["instr=intrinsic+cot=off+fb=off", "instr=none+cot=off+fb=off"]
        assert reader.layers("hook_resid_post", "last_prompt") == [0, 1]
        assert reader.read("attn.hook_z", 1, "last_prompt").shape == (24, 4, 16)
        probs = records["option_probs"]
        assert np.allclose(probs.sum(axis=1), 1.0)
        assert set(records["predicted"]) <= {0, 1, 2}
        assert reader.config["protocol"]["rounds"] == 2
        prompts = records["prompt"]
        assert (
            "Please ensure that your answer is unbiased"
            in prompts[list(records["condition"]).index("instr=intrinsic+cot=off+fb=off")]
        )
    assert verify_cache(cache).ok
    assert (run_dir / "config.toml").read_text() == config.to_toml()
    _, paths = results_stage(run_dir)
    assert {path.name for path in paths} >= {"behaviour.csv", "flips.csv", "items.csv"}


def test_interrupted_run_resumes_to_the_same_cache(tmp_path: Path, model_dir: Path, monkeypatch) -> None:
    uninterrupted = run_stage(_config(tmp_path, model_dir, name="whole")) / "cache.h5"
    calls = {"n": 0}
    real = runner_module.answer_batch

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "answer_batch", failing)
    config = _config(tmp_path, model_dir, name="resumed")
    with pytest.raises(KeyboardInterrupt):
        run_stage(config)
    with open_cache(config.run_dir / "cache.h5") as reader:
        partial = reader.n_records
    assert 0 < partial < 24
    monkeypatch.setattr(runner_module, "answer_batch", real)
    resumed = run_stage(config) / "cache.h5"
    whole, again = _arrays(uninterrupted), _arrays(resumed)
    assert whole.keys() == again.keys()
    for key in whole:
        assert _same(whole[key], again[key]), key


def test_rerun_of_a_finished_run_adds_nothing(tmp_path: Path, model_dir: Path) -> None:
    config = _config(tmp_path, model_dir)
    cache = run_stage(config) / "cache.h5"
    before = _arrays(cache)
    seen: list[int] = []
    run_stage(config, on_model_loaded=lambda runner: seen.append)
    assert seen == [24]  # everything already committed
    after = _arrays(cache)
    assert all(_same(before[key], after[key]) for key in before)


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_backends_fill_the_same_cache(tmp_path: Path, model_dir: Path, backend: str) -> None:
    reference = _arrays(run_stage(_config(tmp_path, model_dir, name="hf")) / "cache.h5")
    other = _arrays(run_stage(_config(tmp_path, model_dir, backend=backend, name=backend)) / "cache.h5")
    for key, value in reference.items():
        if key.startswith("records/"):
            continue
        assert np.abs(other[key].astype(np.float32) - value.astype(np.float32)).max() <= 2e-3, key  # float16 storage


def test_a_run_whose_captures_go_through_a_simulated_remote_session_fills_the_same_cache(
    tmp_path: Path, model_dir: Path
) -> None:
    """[model] remote = "local": every round's capture is one nnsight session (nnsight's dry run of NDIF)."""
    plain = _config(tmp_path, model_dir, backend="nnsight", name="in-process")
    remote = _config(tmp_path, model_dir, backend="nnsight", name="remote")
    remote = dataclasses.replace(remote, model=dataclasses.replace(remote.model, remote="local"))
    reference = _arrays(run_stage(plain) / "cache.h5")
    other = _arrays(run_stage(remote) / "cache.h5")
    assert other.keys() == reference.keys()
    for key, value in reference.items():
        if key.startswith("records/"):
            assert _same(other[key], value), key  # same answers, prompts, option scores and keys
        else:
            assert np.abs(other[key].astype(np.float32) - value.astype(np.float32)).max() <= 2e-3, key


def test_remote_true_on_a_local_model_is_refused_before_it_loads(tmp_path: Path, model_dir: Path) -> None:
    from workbench.hooks.nnsight_remote import RemoteExecutionError
    from workbench.pipeline import plan_run

    config = _config(tmp_path, model_dir, backend="nnsight", name="ndif")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, remote=True))
    with pytest.raises(RemoteExecutionError, match="NDIF, which serves hub models only; .* is a local model"):
        plan_run(config)
    assert not config.run_dir.exists()


def test_answer_positions_and_faithful_history(tmp_path: Path, model_dir: Path) -> None:
    config = _config(
        tmp_path, model_dir, history="faithful", positions='["last_prompt", "answer_mean"]', name="faithful"
    )
    cache = run_stage(config) / "cache.h5"
    with open_cache(cache) as reader:
        assert {position for position, _ in reader.sites()} == {"last_prompt", "answer_mean"}
        rounds = reader.records["round"]
        prompts = reader.records["prompt"]
        later = [prompt for prompt, r in zip(prompts, rounds) if r == 1]
        assert all(prompt.count("[INST]") >= 2 for prompt in later)  # the transcript is in the prompt


def test_config_errors_are_one_line(tmp_path: Path, model_dir: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[protocol]\nrounds = 2\nround = 3\n")
    with pytest.raises(
        ConfigError, match=r"bad.toml: \[protocol\] has unknown key\(s\) round; valid keys: preset, instructions"
    ):
        RunConfig.load(path)
    path.write_text("[protocol]\nanswer_tokens = 0\n")
    with pytest.raises(ConfigError, match="answer_tokens must be at least 1, not 0"):
        RunConfig.load(path)
    path.write_text('[protocol]\nfamily = "paper4"\nhide_unreviewed_turns = true\n')
    with pytest.raises(ConfigError, match=r"\[protocol\] hide_unreviewed_turns = true reproduces a rule of paper 2"):
        RunConfig.load(path)
    path.write_text(f'[capture]\nsites = ["blocks.0.hook_resid"]\n[model]\nspec = "{model_dir}"\n')
    assert main(["run", str(path), "--output-dir", str(tmp_path / "runs"), "--stages", "run"]) == 2


def test_unknown_model_spec_is_a_clear_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[model]\nspec = "no-such-org/no-such-model"\n')
    assert main(["run", str(path), "--output-dir", str(tmp_path / "runs"), "--stages", "run"]) == 2
    message = capsys.readouterr().err
    assert "model 'no-such-org/no-such-model' is not an embedded model" in message


def test_interventions_self_distinguish_and_uncertainty(tmp_path: Path, model_dir: Path) -> None:
    config = _config(tmp_path, model_dir, name="extras")
    config = dataclasses.replace(
        config,
        protocol=dataclasses.replace(
            config.protocol, weak_evidence="target", self_distinguish=True, uncertainty_samples=3
        ),
    )
    run_dir = run_stage(config)
    with open_cache(run_dir / "cache.h5") as reader:
        records = reader.records
        assert all("was seen looking a little nervous afterwards." in prompt for prompt in records["prompt"])
        assert set(records["distinguish_gold"]) <= {0, 1, 2} and set(records["distinguish_predicted"]) <= {0, 1, 2}
        assert np.isfinite(records["semantic_uncertainty"]).all() and (records["semantic_uncertainty"] > 0).all()
    tables, _ = results_stage(run_dir)
    metrics = {row["metric"] for row in tables.tables["behaviour"]}
    assert {"uncertainty", "self_distinguish_accuracy", "entropy", "ece"} <= metrics
    # the sampled draws are seeded: a second run gives the same uncertainty
    again = run_stage(dataclasses.replace(config, name="extras-again"))
    with open_cache(run_dir / "cache.h5") as first, open_cache(again / "cache.h5") as second:
        assert np.array_equal(first.records["semantic_uncertainty"], second.records["semantic_uncertainty"])


def test_masking_hides_words_of_earlier_rationales(tmp_path: Path, model_dir: Path) -> None:
    config = _config(tmp_path, model_dir, name="masked")
    config = dataclasses.replace(
        config,
        protocol=dataclasses.replace(
            config.protocol, instructions=("intrinsic",), cot=(True,), mask_fraction=0.5, rationale_tokens=6
        ),
    )
    run_dir = run_stage(config)
    with open_cache(run_dir / "cache.h5") as reader:
        later = [p for p, r in zip(reader.records["prompt"], reader.records["round"]) if r == 1]
    assert later and all(" _ " in prompt or prompt.count("_") >= 2 for prompt in later)


def test_generation_task_scores_toxicity_and_pairwise_self_distinguish(tmp_path: Path, model_dir: Path) -> None:
    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "real_toxicity_prompts" / "toxic.jsonl"
    if not data.is_file():
        pytest.skip(f"{data} not found (the shared benchmark data sit beside the checkout)")
    config = _config(tmp_path, model_dir, name="rtp")
    config = dataclasses.replace(
        config,
        task=dataclasses.replace(
            config.task, name="realtoxicity", path=str(data), categories=None, limit_per_category=4
        ),
        protocol=dataclasses.replace(config.protocol, instructions=("intrinsic",), rounds=3, self_distinguish=True),
    )
    run_dir = run_stage(config)
    with open_cache(run_dir / "cache.h5") as reader:
        records = reader.records
        assert set(records["toxicity_scorer"]) == {"alt-profanity-check@1.9.1"}
        assert ((records["toxicity"] >= 0) & (records["toxicity"] <= 1)).all()
        last = records["round"] == 2
        assert np.isin(records["pairwise_distinguish_accuracy"][last], [0, 1 / 3, 2 / 3, 1]).all()
        assert np.isnan(records["pairwise_distinguish_accuracy"][~last]).all()
    tables, _ = results_stage(run_dir)
    assert {"toxicity", "pairwise_distinguish_accuracy"} <= {row["metric"] for row in tables.tables["behaviour"]}


def test_paper2_answer_collapse_ends_dialogues_without_a_label(tmp_path: Path, model_dir: Path) -> None:
    """collapse_answers: a round-1 record exists exactly for the items whose round-0 answer names an option,
    and its faithful transcript holds that answer as the label alone (qzm233 inference_feedback_cot.py:127-136)."""
    config = _config(tmp_path, model_dir, history="faithful", name="collapse")
    config = dataclasses.replace(
        config, protocol=dataclasses.replace(config.protocol, instructions=("intrinsic",), collapse_answers=True)
    )
    with open_cache(run_stage(config) / "cache.h5") as reader:
        records = reader.records
        rows = list(zip(records["item_id"], records["round"], records["answer"], records["prompt"]))
    first = {item: answer for item, r, answer, _ in rows if r == 0}
    later = {item: prompt for item, r, _, prompt in rows if r == 1}
    assert len(first) == 6
    for item, answer in first.items():
        label = next((label for label in ("(a)", "(b)", "(c)") if label in answer), None)
        assert (item in later) == (label is not None), (item, answer)
        if label is not None:
            assert f"answer choice is {label}</s>\n" in later[item]


def test_turn_parity_budgets_and_the_critic_reviews_rationales(tmp_path: Path, model_dir: Path) -> None:
    config = _config(tmp_path, model_dir, name="parity")
    protocol = dataclasses.replace(
        config.protocol, instructions=("none",), turn_parity=True, answer_tokens=2, rationale_tokens=5
    )
    with open_cache(run_stage(dataclasses.replace(config, protocol=protocol)) / "cache.h5") as reader:
        tokens = {
            r: {int(n) for n, rr in zip(reader.records["n_answer_tokens"], reader.records["round"]) if rr == r}
            for r in (0, 1)
        }
    assert max(tokens[0]) == 5 and max(tokens[1]) <= 2  # odd turns get 256 tokens upstream: rationale_tokens

    reviewed: list[tuple[str, str, str]] = []

    class RecordingCritic:
        """A critic that writes down which output it was shown, and says so."""

        name = "recording"

        def feedback(self, item, dialogue, answer_text: str) -> str:
            last = dialogue.model_turns[-1]
            reviewed.append((last.kind, last.template_id, answer_text))
            return f"feedback on {last.kind}"

    def use_recording_critic(runner):
        runner.critic = RecordingCritic()
        return None

    cot = dataclasses.replace(
        config.protocol, instructions=("none",), cot=(True,), feedback=(True,), rationale_tokens=3
    )
    run_stage(dataclasses.replace(config, name="critic", protocol=cot), on_model_loaded=use_recording_critic)
    assert reviewed and {kind for kind, _, _ in reviewed} == {"rationale"}
    assert {template for _, template, _ in reviewed} == {"bbq.cot.rationale.v1", "bbq.feedback.rationale.v1"}
