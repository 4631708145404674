"""Key/value cache reuse across self-correction rounds, side by side with re-encoding.

Run by hand (not in CI)::

    .venv/bin/python tests/benchmarks/bench_kv_reuse.py [--items 16] [--rounds 5]

Runs the same experiment twice on the packaged SmolLM2 (embedded BBQ sample, intrinsic
instruction, greedy): once re-encoding every round's whole transcript, once reusing each dialogue's
key/value cache so a round encodes only its new tokens. Prints wall time, transcript tokens per
second (prompt tokens of every round / time; model loading excluded) and the agreement of the
answers and option choices.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from activations_cache import open_cache
from workbench.config import CaptureConfig, ProtocolSettings, RunConfig
from workbench.pipeline import run_stage
from workbench.tasks.registry import TaskConfig


def _run(root: Path, reuse: bool, items: int, rounds: int) -> tuple[float, dict[str, np.ndarray]]:
    config = RunConfig(
        name="reuse" if reuse else "reencode",
        output_dir=str(root),
        task=TaskConfig(name="bbq-sample", limit_per_category=max(1, items // 5)),
        protocol=ProtocolSettings(instructions=("intrinsic",), rounds=rounds, reuse_kv_cache=reuse),
        capture=CaptureConfig(sites=("blocks.*.hook_resid_post",), batch_size=8),
    )
    marks: list[float] = []
    run_dir = run_stage(config, on_model_loaded=lambda runner: marks.append(time.perf_counter()))
    seconds = time.perf_counter() - marks[0]  # the runs themselves, not loading the model
    with open_cache(run_dir / "cache.h5") as reader:
        records = {name: np.asarray(values) for name, values in reader.records.items()}
    return seconds, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="runs of each arm, interleaved; the fastest counts (a shared machine drifts)",
    )
    args = parser.parse_args()
    plain_times, reuse_times = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as root:
            seconds, plain = _run(Path(root), False, args.items, args.rounds)
            plain_times.append(seconds)
            seconds, reused = _run(Path(root), True, args.items, args.rounds)
            reuse_times.append(seconds)
    plain_s, reuse_s = min(plain_times), min(reuse_times)
    tokens = int(plain["n_prompt_tokens"].sum())
    same_text = float(np.mean(plain["answer"] == reused["answer"]))
    same_choice = float(np.mean(plain["predicted"] == reused["predicted"]))
    max_prob_diff = float(np.abs(plain["option_probs"] - reused["option_probs"]).max())
    print(
        f"{len(plain['answer'])} records ({args.rounds} rounds), {tokens} transcript tokens in all rounds, "
        f"fastest of {args.repeats} interleaved runs per arm"
    )
    print(f"{'':18s} {'seconds':>9s} {'tokens/s':>10s}")
    print(f"{'re-encode':18s} {plain_s:9.1f} {tokens / plain_s:10.0f}")
    print(f"{'reuse KV cache':18s} {reuse_s:9.1f} {tokens / reuse_s:10.0f}")
    print(
        f"speed-up {plain_s / reuse_s:.2f}x; identical answers {same_text:.1%}, same option choice "
        f"{same_choice:.1%}, max option-probability difference {max_prob_diff:.1e}"
    )
    by_round = [
        (r, float(np.mean(plain["answer"][plain["round"] == r] == reused["answer"][reused["round"] == r])))
        for r in range(args.rounds)
    ]
    print("answer agreement per round: " + ", ".join(f"{r}: {a:.0%}" for r, a in by_round))


if __name__ == "__main__":
    main()
