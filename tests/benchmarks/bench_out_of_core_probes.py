"""Out-of-core probes: streamed fits of every layer of a cache larger than the budget (run by hand).

    .venv/bin/python tests/benchmarks/bench_out_of_core_probes.py [--records 100000] [--layers 30]
        [--width 576] [--dir /tmp] [--budget-mb 512] [--repeats 2] [--threads N] [--keep | --cache PATH]
        [--epochs 10] [--batch-size 1024] [--parts mean_difference,logistic,agreement] [--cold]

Writes a synthetic float16 cache with the real writer (100,000 x 30 x 576: 3.5 GB; residual-like
states: a rank-16 correlated part, three outlier dimensions, iid noise, and a label direction whose
strength grows with depth), then runs each measurement in a fresh subprocess, reporting wall time
and peak resident memory (``VmHWM``, which includes the interpreter, torch and h5py):

- ``read``: one sequential read of the file, every activation chunk once in file order with
  h5py's ``read_direct_chunk`` into a reused buffer (nothing else);
- ``mean_difference``: the streamed mean-difference fit of all layers (one moments pass, Platt
  scaling on the record sample), ``LayerwiseProbe(MeanDifferenceProbe()).fit(view, labels)``;
- ``logistic``: the streamed logistic fit of all layers (moments pass + ``epochs`` passes of
  preconditioned mini-batch steps), once with ``--epochs`` and once with one epoch: the difference
  over ``epochs - 1`` is the cost of one epoch (its pass and steps), printed against the read;
- ``agreement``: both streamed fits against the in-memory fits of three layers (first, middle,
  last; in memory those three layers alone take about 3 x 0.7 GB): direction cosine and accuracy
  on all records.

Reads and mean-difference fits alternate ``--repeats`` times, then one read and the logistic fits
(the file stays in the page cache throughout: it was just written, or read by the previous
measurement); times are printed side by side with the load average (``/proc/loadavg``: the machine
may be shared), never asserted. ``--threads`` sets torch's intra-op threads of the process before the
fit (default: torch's own choice); the streamed passes run their products on one intra-op thread
whatever it is (``probes.streaming.one_intra_op_thread``). ``--epochs`` and ``--batch-size`` are the
logistic fit's ``StreamingSettings``. The cache is deleted at the end unless ``--keep``; ``--cache``
reuses a kept one (its labels lie next to it, ``<name>.labels.npy``). ``--cold`` evicts the file
from the operating system's page cache (``posix_fadvise``) before every measurement, so that each
reads it from the disk, as a cache larger than memory is read; by default the file is warm.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SITE, POSITION = "hook_resid_post", "last_prompt"


def planted_states(
    rng: np.random.Generator, labels: np.ndarray, layers: int, width: int, basis: np.ndarray, directions: np.ndarray
) -> np.ndarray:
    """[b, layers, width] float32 residual-like states for ``labels`` [b]."""
    states = rng.standard_normal((len(labels), layers, width), dtype=np.float32)
    states += np.einsum(
        "blr,lrd->bld", rng.standard_normal((len(labels), layers, basis.shape[1]), dtype=np.float32), basis
    )
    states[:, :, :3] *= 8.0
    strength = np.linspace(0.5, 3.0, layers, dtype=np.float32)[None, :, None]
    states += (labels[:, None, None] - 0.5).astype(np.float32) * strength * directions[None]
    return states


def build(path: Path, records: int, layers: int, width: int) -> np.ndarray:
    """Write the synthetic cache; returns the labels [records]."""
    from activations_cache import CacheMetadata, CacheSpec, CacheWriter, DatasetSpec

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, records)
    basis = (rng.standard_normal((layers, 16, width)) * (3.0 / np.arange(1, 17))[None, :, None]).astype(np.float32)
    directions = rng.standard_normal((layers, width)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    spec = CacheSpec(datasets=(DatasetSpec(POSITION, SITE, tuple(range(layers)), (width,)),))
    metadata = CacheMetadata("synthetic", "sha256:synthetic", "synthetic", {"benchmark": "out_of_core_probes"}, 0)
    batch = 2000
    with CacheWriter.open(path, spec, metadata, overwrite=True) as writer:
        for start in range(0, records, batch):
            part = labels[start : start + batch]
            rows = [
                {
                    "record_key": f"r{start + i}",
                    "item_id": f"i{(start + i) // 2}",
                    "condition": "synthetic",
                    "round": 0,
                    "prompt": "",
                    "answer": "",
                    "n_prompt_tokens": 1,
                    "n_answer_tokens": 0,
                }
                for i in range(len(part))
            ]
            writer.submit(rows, {(POSITION, SITE): planted_states(rng, part, layers, width, basis, directions)})
    return labels


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (every thread), seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def load_average() -> float:
    """The machine's one-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def measure(kind: str, path: Path, labels_path: Path, settings: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """One measurement in this (fresh) process; ``settings`` are ``StreamingSettings`` fields."""
    if kind == "read":
        import h5py

        with h5py.File(path, "r") as file:
            dataset = file[f"activations/{POSITION}/{SITE}"]
            rows, chunk = int(file["committed_records"][()]), dataset.chunks[0]
            buffer = np.empty(chunk * dataset.shape[2], dtype=dataset.dtype).view(np.uint8)
            start, cpu = time.perf_counter(), cpu_seconds()
            for first in range(0, rows, chunk):
                for layer in range(dataset.shape[1]):
                    dataset.id.read_direct_chunk((first, layer, 0), out=buffer)
            seconds = time.perf_counter() - start
        return {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds() - cpu,
            "peak_rss_mb": peak_rss_mb(),
            "load": load_average(),
        }

    import torch

    if threads is not None:
        torch.set_num_threads(threads)

    from activations_cache import open_cache
    from probes.cache_reading import read_layers, stored_site
    from probes.estimators import LogisticProbe, MeanDifferenceProbe
    from probes.layerwise import LayerwiseProbe
    from probes.streamed_solvers import StreamingSettings
    from probes.streaming import StreamedActivations

    labels = np.load(labels_path)
    streaming = StreamingSettings(**settings)
    with open_cache(path) as reader:
        site = stored_site(reader, SITE, POSITION)
        view = StreamedActivations(reader, site)
        if kind in ("mean_difference", "logistic", "logistic_one_epoch"):
            estimator = MeanDifferenceProbe(device="cpu") if kind == "mean_difference" else LogisticProbe(device="cpu")
            before = peak_rss_mb()
            start, cpu = time.perf_counter(), cpu_seconds()
            if kind == "logistic_one_epoch":
                streaming = dataclasses.replace(streaming, epochs=1)
            LayerwiseProbe(estimator, streaming).fit(view, labels)
            seconds = time.perf_counter() - start
            return {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds() - cpu,
                "peak_rss_mb": peak_rss_mb(),
                "rss_before_fit_mb": before,
                "load": load_average(),
            }
        layers = [0, len(site.layers) // 2, len(site.layers) - 1]
        states = read_layers(reader, site, layers)
        result: dict[str, Any] = {"layers": layers, "threads": torch.get_num_threads()}
        for name, probe_kind in (("mean_difference", MeanDifferenceProbe), ("logistic", LogisticProbe)):
            streamed = LayerwiseProbe(probe_kind(device="cpu"), streaming).fit(view.with_layers(layers), labels)
            in_memory = LayerwiseProbe(probe_kind(device="cpu")).fit(states, labels)
            cosine = np.sum(streamed.coef_ * in_memory.coef_, axis=1) / (
                np.linalg.norm(streamed.coef_, axis=1) * np.linalg.norm(in_memory.coef_, axis=1)
            )
            accuracy = [
                ((probe.predict_proba(states) > 0.5) == labels[:, None]).mean(axis=0) for probe in (streamed, in_memory)
            ]
            result[name] = {
                "cosine": cosine.tolist(),
                "streamed_accuracy": accuracy[0].tolist(),
                "in_memory_accuracy": accuracy[1].tolist(),
            }
        return result


def evict_from_page_cache(path: Path) -> None:
    """Drop ``path``'s pages from the operating system's page cache (``POSIX_FADV_DONTNEED``, no root
    needed), so that the next measurement reads the file from the disk, as a cache larger than
    memory is read."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def run(
    kind: str, path: Path, labels_path: Path, settings: dict[str, Any], threads: int | None, cold: bool = False
) -> dict[str, Any]:
    """``measure`` in a fresh subprocess (so that its peak RSS is its own); ``cold`` evicts the cache
    file from the page cache first."""
    if cold:
        evict_from_page_cache(path)
    command = [sys.executable, __file__, "--measure", kind, "--path", str(path), "--labels", str(labels_path)]
    command += ["--settings", json.dumps(settings)] + (["--threads", str(threads)] if threads is not None else [])
    finished = subprocess.run(command, check=False, capture_output=True, text=True)
    if finished.returncode != 0:
        raise SystemExit(f"measurement {kind!r} failed (exit {finished.returncode}):\n{finished.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--width", type=int, default=576)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--budget-mb", type=float, default=512.0, help="StreamingSettings.memory_budget_mb")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads of the fits")
    parser.add_argument("--epochs", type=int, default=10, help="StreamingSettings.epochs of the logistic fit")
    parser.add_argument("--batch-size", type=int, default=1024, help="StreamingSettings.batch_size")
    parser.add_argument("--parts", default="mean_difference,logistic,agreement", help="what to run besides the reads")
    parser.add_argument("--keep", action="store_true", help="keep the cache afterwards")
    parser.add_argument("--cache", type=Path, default=None, help="reuse this kept cache instead of writing one")
    parser.add_argument(
        "--cold", action="store_true", help="evict the cache file from the page cache before each measurement"
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--labels", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.measure:
        settings = json.loads(arguments.settings)
        measured = measure(arguments.measure, arguments.path, arguments.labels, settings, arguments.threads)
        print(json.dumps(measured))
        return

    name = f"bench_out_of_core_{arguments.records}x{arguments.layers}x{arguments.width}.h5"
    path = arguments.cache or arguments.dir / name
    labels_path = path.with_suffix(".labels.npy")
    keep = arguments.keep or arguments.cache is not None
    budget, threads = arguments.budget_mb, arguments.threads
    settings = {"memory_budget_mb": budget, "epochs": arguments.epochs, "batch_size": arguments.batch_size}
    try:
        start = time.perf_counter()
        if arguments.cache is None:
            np.save(labels_path, build(path, arguments.records, arguments.layers, arguments.width))
        print(
            f"cache {path.name}: {path.stat().st_size / 1e9:.2f} GB float16 (ready in {time.perf_counter() - start:.0f} s); "
            f"budget {budget:g} MiB; torch threads {threads or 'default'}; logistic {arguments.epochs} epochs, "
            f"batch {arguments.batch_size}; page cache {'cold' if arguments.cold else 'warm'}; "
            f"load average {load_average():.2f}"
        )
        rows = []
        parts = arguments.parts.split(",")
        plan = [(repeat, kind) for repeat in range(arguments.repeats) for kind in ("read", "mean_difference")]
        plan = [(repeat, kind) for repeat, kind in plan if kind in parts or kind == "read"]
        logistic = [(0, "read"), (0, "logistic"), (0, "logistic_one_epoch")] if "logistic" in parts else []
        for repeat, kind in plan + logistic:
            result = run(kind, path, labels_path, settings, threads, cold=arguments.cold)
            rows.append((repeat, kind, result))
            print(
                f"  {repeat} {kind:18} {result['seconds']:8.2f} s (CPU {result['cpu_seconds']:7.2f} s)  "
                f"peak RSS {result['peak_rss_mb']:7.0f} MiB  load {result['load']:.2f}"
            )
        reads = [float(r["seconds"]) for _, kind, r in rows if kind == "read"]
        read_cpu = float(np.median([float(r["cpu_seconds"]) for _, kind, r in rows if kind == "read"]))
        print(f"\n{'':20}{'seconds':>9}{'x read':>8}{'CPU s':>8}{'x read':>8}{'peak RSS MiB':>14}{'before fit':>12}")
        for _, kind, result in rows:
            seconds, cpu = float(result["seconds"]), float(result["cpu_seconds"])
            before = f"{float(result['rss_before_fit_mb']):12.0f}" if "rss_before_fit_mb" in result else ""
            print(
                f"{kind:20}{seconds:9.2f}{seconds / np.median(reads):8.2f}{cpu:8.2f}{cpu / read_cpu:8.2f}"
                f"{float(result['peak_rss_mb']):14.0f}{before}"
            )
        print(f"(x read: against the median read, {np.median(reads):.2f} s wall, {read_cpu:.2f} s CPU)")
        fits = {kind: result for _, kind, result in rows if kind.startswith("logistic")}
        if len(fits) == 2 and arguments.epochs > 1:
            epoch = (fits["logistic"]["seconds"] - fits["logistic_one_epoch"]["seconds"]) / (arguments.epochs - 1)
            epoch_cpu = (fits["logistic"]["cpu_seconds"] - fits["logistic_one_epoch"]["cpu_seconds"]) / (
                arguments.epochs - 1
            )
            print(
                f"logistic, one epoch: {epoch:.2f} s wall ({epoch / np.median(reads):.2f} x read), "
                f"{epoch_cpu:.2f} s CPU ({epoch_cpu / read_cpu:.2f} x read)"
            )
        if "agreement" not in parts:
            return
        agreement = run("agreement", path, labels_path, settings, threads)
        print(f"\nagreement with the in-memory fits on layers {agreement['layers']} (threads {agreement['threads']}):")
        for name in ("mean_difference", "logistic"):
            found = agreement[name]
            gaps = 100 * np.abs(np.array(found["streamed_accuracy"]) - np.array(found["in_memory_accuracy"]))
            print(
                f"  {name:16} cosine {np.round(found['cosine'], 6).tolist()}  accuracy streamed "
                f"{np.round(found['streamed_accuracy'], 4).tolist()} in memory "
                f"{np.round(found['in_memory_accuracy'], 4).tolist()}  largest gap {gaps.max():.2f} points"
            )
    finally:
        if not keep:
            path.unlink(missing_ok=True)
            labels_path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
