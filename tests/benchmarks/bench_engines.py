"""Generation engines side by side on the 5-round benchmark of bench_kv_reuse.py.

Run by hand (not in CI)::

    .venv/bin/python tests/benchmarks/bench_engines.py [--items 16] [--rounds 5] [--repeats 1]

Runs the same experiment (packaged SmolLM2, embedded BBQ sample, intrinsic instruction, greedy) once
per engine that runs here: ``hf`` (static batches with key/value reuse across rounds, the default),
``hf-continuous`` (transformers' continuous batching) and ``vllm`` (when ``$WORKBENCH_VLLM_PYTHON``
names a vLLM environment; its server is started before the clock starts, and its start-up time is
printed apart). A batch-size-1 run of the ``hf`` engine without key/value reuse is the reference; it
runs last, so that each engine's time is printed as soon as it is known.

Prints, per engine: wall time, transcript tokens per second (prompt tokens of every round / time;
model loading excluded), generated tokens per second, and the records whose answer equals the
reference's. A differing answer is explained: when its prompt equals the reference record's prompt,
the first differing token is classified as a float tie or not (workbench.inference.engine_parity);
when the prompts already differ, an earlier round of that dialogue diverged ("downstream").
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from activations_cache import open_cache
from workbench.config import CaptureConfig, GenerationSettings, ProtocolSettings, RunConfig
from workbench.experiment.runner import ExperimentRunner
from workbench.inference.engine_parity import first_divergences
from workbench.inference.engines import ENGINE_NAMES, EngineError, check_engine_available
from workbench.inference.generation import generate_greedy
from workbench.models.loading import LoadedModel, load_model
from workbench.pipeline import run_stage
from workbench.tasks.registry import TaskConfig

VLLM_ARGS = ("--enforce-eager", "--kv-cache-memory-bytes=1073741824")
"""No compilation, and a 1 GiB key/value cache (on the CPU vLLM otherwise reserves 92 % of the memory)."""


@dataclasses.dataclass(frozen=True)
class Arm:
    """One timed run: its records (column -> values in record-key order) and its times."""

    seconds: float
    startup_s: float
    records: dict[str, np.ndarray]


def _run(root: Path, name: str, engine: str, batch_size: int, reuse: bool, items: int, rounds: int) -> Arm:
    config = RunConfig(
        name=name,
        output_dir=str(root),
        task=TaskConfig(name="bbq-sample", limit_per_category=max(1, items // 5)),
        protocol=ProtocolSettings(instructions=("intrinsic",), rounds=rounds, reuse_kv_cache=reuse),
        capture=CaptureConfig(sites=("blocks.*.hook_resid_post",), batch_size=batch_size),
        generation=GenerationSettings(engine=engine, vllm_args=VLLM_ARGS if engine == "vllm" else ()),  # type: ignore[arg-type]
    )
    marks: list[float] = []

    def loaded(runner: ExperimentRunner) -> None:
        started = time.perf_counter()
        runner.engine.generate([[1, 2, 3]], 1)  # vllm: start the server now, off the clock
        marks.extend([time.perf_counter() - started, time.perf_counter()])

    run_dir = run_stage(config, on_model_loaded=loaded)
    seconds = time.perf_counter() - marks[1]
    with open_cache(run_dir / "cache.h5") as reader:
        records = {name: np.asarray(values) for name, values in reader.records.items()}
    order = np.argsort(records["record_key"])
    return Arm(seconds=seconds, startup_s=marks[0], records={key: value[order] for key, value in records.items()})


def _explain(model: LoadedModel, arm: Arm, reference: Arm) -> dict[str, int]:
    """Counts of differing answers: ``tie`` / ``not a tie`` (same prompt), ``downstream`` (prompt differs).

    The reference side is batch-size-1 ``generate`` on the record's prompt (token ids); the engine's
    side is its answer text tokenized again (the cache keeps texts), checked to decode to that text.
    """
    counts = {"tie": 0, "not a tie": 0, "downstream": 0, "not re-tokenizable": 0}
    tokenizer = model.tokenizer
    same_prompt, prompts, wanted, got = [], [], [], []
    for index, (answer, expected) in enumerate(zip(arm.records["answer"], reference.records["answer"])):
        if answer == expected:
            continue
        if arm.records["prompt"][index] != reference.records["prompt"][index]:
            counts["downstream"] += 1
            continue
        prompt = tokenizer(str(arm.records["prompt"][index]), add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(str(answer), add_special_tokens=False)["input_ids"]
        if tokenizer.decode(answer_ids, skip_special_tokens=True) != answer:
            counts["not re-tokenizable"] += 1
            continue
        same_prompt.append(index)
        prompts.append(prompt)
        wanted.append(generate_greedy(model, [prompt], ProtocolSettings().answer_tokens).answer_ids[0])
        got.append(answer_ids)
    divergences = first_divergences(model, prompts, wanted, got)
    counts["equals batch-size-1 generate"] = len(prompts) - len(divergences)  # the reference run's answer differed
    for divergence in divergences:
        counts["tie" if divergence.tie else "not a tie"] += 1
        print(
            f"  {arm.records['record_key'][same_prompt[divergence.index]]}: token {divergence.step}, "
            f"margin {divergence.margin:.2e} logits, float32 rounding {divergence.rounding:.1e} "
            f"({'tie' if divergence.tie else 'NOT a tie'})"
        )
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each engine; the fastest counts")
    args = parser.parse_args()
    engines = []
    for engine in ENGINE_NAMES:
        try:
            check_engine_available(engine)
            engines.append(engine)
        except EngineError as error:
            print(f"skipping {engine}: {error}")
    arms: dict[str, Arm] = {}
    with tempfile.TemporaryDirectory() as root:
        for repeat in range(args.repeats):
            for engine in engines:
                arm = _run(Path(root), f"{engine}-{repeat}", engine, 8, True, args.items, args.rounds)
                tokens = int(arm.records["n_prompt_tokens"].sum())
                startup = f" (server start {arm.startup_s:.1f} s, not counted)" if engine == "vllm" else ""
                print(
                    f"{engine} run {repeat}: {arm.seconds:.1f} s, {tokens / arm.seconds:.0f} tok/s{startup}", flush=True
                )
                if engine not in arms or arm.seconds < arms[engine].seconds:
                    arms[engine] = arm
        reference = _run(Path(root), "reference", "hf", 1, False, args.items, args.rounds)
    records = reference.records
    tokens = int(records["n_prompt_tokens"].sum())
    print(
        f"{len(records['answer'])} records ({args.rounds} rounds), {tokens} transcript tokens in all rounds; "
        f"reference: batch size 1, no key/value reuse, {reference.seconds:.1f} s ({tokens / reference.seconds:.0f} tok/s)"
    )
    print(f"{'engine':15s} {'seconds':>8s} {'tokens/s':>9s} {'gen tok/s':>9s} {'vs hf':>6s} {'same answers':>13s}")
    model = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
    for name, arm in arms.items():
        same = float(np.mean(arm.records["answer"] == records["answer"]))
        generated = int(arm.records["n_answer_tokens"].sum())
        speed_up = arms["hf"].seconds / arm.seconds if "hf" in arms else float("nan")
        print(
            f"{name:15s} {arm.seconds:8.1f} {tokens / arm.seconds:9.0f} {generated / arm.seconds:9.1f} "
            f"{speed_up:5.2f}x {same:12.1%}"
        )
    for name, arm in arms.items():
        print(f"{name}: differing answers explained:")
        print(f"  {_explain(model, arm, reference)}")


if __name__ == "__main__":
    main()
