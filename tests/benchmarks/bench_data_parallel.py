"""Data-parallel runs on the CPU: 2 ranks x 1 thread (torchrun, gloo) against 1 process x 2 threads.

Run by hand (not in CI)::

    .venv/bin/python tests/benchmarks/bench_data_parallel.py [--items 10] [--baseline]

The packaged SmolLM2 on the embedded BBQ sample with the demo configuration (two conditions, three
rounds, every layer's four sites cached), cut to ``--items`` items (default 10: two of each of the
five categories, 60 records; the demo's own size is 40). Each arm is a fresh command: ``python`` for one
process, ``torchrun --standalone --nproc_per_node 2`` for two ranks, with ``OMP_NUM_THREADS`` and
``torch.set_num_threads`` set to the arm's threads. Timed: from the (lead's) model being loaded to
the run stage returning, shards joined; the whole command's wall time is printed beside it.
``--baseline`` adds 1 process x 1 thread, for the classic efficiency ``T(1x1) / (2 T(2x1))`` and to
separate what the thread count alone changes in the answers from what the ranks' batches change.

Prints the times, the scaling efficiency ``T(1 process x 2 threads) / T(2 ranks x 1 thread)`` (the
two arms use the same two cores) and whether the joined cache equals the one-process cache record
for record: the keys, how many answers differ (by round), and the option probabilities of records
whose prompts are identical.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[2]
DEMO = REPOSITORY / "workbench" / "configs" / "demo.toml"
TORCHRUN = REPOSITORY / ".venv" / "bin" / "torchrun"


def _worker(config_path: Path, threads: int, out: Path) -> None:
    """One rank (or the one process) of an arm: the run stage, timed from the model being loaded."""
    import torch

    from workbench.config import RunConfig
    from workbench.experiment.data_parallel import launched_world
    from workbench.pipeline import plan_run, run_stage

    torch.set_num_threads(threads)
    config = RunConfig.load(config_path)
    world = launched_world()
    marks: list[float] = []
    run_stage(
        config, plan=plan_run(config, world=world), on_model_loaded=lambda runner: marks.append(time.perf_counter())
    )
    if world.is_lead:
        out.write_text(json.dumps({"run_s": time.perf_counter() - marks[0]}))


def _arm(root: Path, name: str, ranks: int, threads: int, items: int) -> tuple[float, float, Path]:
    """Run one arm in a fresh command; returns (run-stage seconds, command seconds, its cache)."""
    from workbench.config import RunConfig
    from workbench.run_folder import RunFolder

    config = RunConfig.load(DEMO)
    config = dataclasses.replace(
        config,
        name=name,
        output_dir=str(root),
        task=dataclasses.replace(config.task, limit_per_category=max(1, items // 5)),
    )
    config_path = root / f"{name}.toml"
    config_path.write_text(config.to_toml())
    out = root / f"{name}.json"
    script = [str(Path(__file__).resolve()), "--worker", str(config_path), "--threads", str(threads), "--out", str(out)]
    launcher = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(ranks)] if ranks > 1 else [sys.executable]
    start = time.perf_counter()
    subprocess.run(
        [*launcher, *script],
        cwd=REPOSITORY,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    command_s = time.perf_counter() - start
    return float(json.loads(out.read_text())["run_s"]), command_s, RunFolder(config.run_dir).cache


def _records(cache: Path) -> dict[str, dict[str, object]]:
    from activations_cache import open_cache

    with open_cache(cache) as reader:
        columns = {name: np.asarray(reader.records[name]) for name in ("record_key", "round", "prompt", "answer")}
        columns["predicted"] = np.asarray(reader.records["predicted"])
        columns["option_probs"] = np.asarray(reader.records["option_probs"])
    keys = columns["record_key"].tolist()
    return {key: {name: values[index] for name, values in columns.items()} for index, key in enumerate(keys)}


def _compare(label: str, reference: Path, other: Path) -> None:
    """Print how the cache ``other`` differs from ``reference``, record by record."""
    a, b = _records(reference), _records(other)
    same_keys = sorted(a) == sorted(b)
    print(f"{label}: record keys {'identical' if same_keys else 'DIFFER'} ({len(a)} and {len(b)} records)")
    if not same_keys:
        return
    rounds = sorted({int(record["round"]) for record in a.values()})  # type: ignore[call-overload]
    answers = {r: [key for key in a if a[key]["round"] == r and a[key]["answer"] != b[key]["answer"]] for r in rounds}
    choices = sum(int(a[key]["predicted"] != b[key]["predicted"]) for key in a)
    by_round = ", ".join(f"round {r}: {len(keys)}" for r, keys in answers.items())
    print(f"  answers differing: {sum(map(len, answers.values()))} of {len(a)} ({by_round}); option choices: {choices}")
    same_prompt = [key for key in a if a[key]["prompt"] == b[key]["prompt"]]
    if same_prompt:
        diff = max(
            float(np.abs(np.asarray(a[key]["option_probs"]) - np.asarray(b[key]["option_probs"])).max())
            for key in same_prompt
        )
        print(
            f"  records with identical prompts: {len(same_prompt)}; their max option-probability difference {diff:.1e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10, help="items of the embedded sample (default 10; the demo: 40)")
    parser.add_argument("--baseline", action="store_true", help="also run 1 process x 1 thread")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        _worker(args.worker, args.threads, args.out)
        return
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        arms = {"1 process x 2 threads": (1, 2), "2 ranks x 1 thread": (2, 1)}
        if args.baseline:
            arms["1 process x 1 thread"] = (1, 1)
        results = {}
        for index, (label, (ranks, threads)) in enumerate(arms.items()):
            results[label] = _arm(root, f"arm{index}", ranks, threads, args.items)
            print(f"{label:24s} run {results[label][0]:7.1f} s   command {results[label][1]:7.1f} s", flush=True)
        threads_s, ranks_s = results["1 process x 2 threads"][0], results["2 ranks x 1 thread"][0]
        print(f"scaling efficiency T(1 process x 2 threads) / T(2 ranks x 1 thread) = {threads_s / ranks_s:.2f}")
        if args.baseline:
            single_s = results["1 process x 1 thread"][0]
            print(
                f"classic efficiency T(1x1) / (2 T(2x1)) = {single_s / (2 * ranks_s):.2f}; "
                f"threads T(1x1) / (2 T(1x2)) = {single_s / (2 * threads_s):.2f}"
            )
            _compare(
                "1x1 against 1x2 (thread count only)",
                results["1 process x 1 thread"][2],
                results["1 process x 2 threads"][2],
            )
            _compare(
                "1x1 against 2x1 (the ranks' batches, same thread count)",
                results["1 process x 1 thread"][2],
                results["2 ranks x 1 thread"][2],
            )
        _compare("joined 2x1 against 1x2", results["1 process x 2 threads"][2], results["2 ranks x 1 thread"][2])


if __name__ == "__main__":
    main()
