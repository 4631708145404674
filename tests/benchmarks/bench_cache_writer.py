"""Benchmark of the activation cache (run by hand: ``python tests/benchmarks/bench_cache_writer.py``).

1. Write throughput: 2,000 and 10,000 records x 30 layers x 576 (hook_resid_post) plus 30 x 9 x 64
   (hook_z), float16, through ``CacheWriter`` (batches of 16 records) against ``numpy.save`` of the same
   bytes to the same folder. Every timing ends when the file is on disk (fsync). Target: the
   writer reaches at least 70% of the ``numpy.save`` rate. For reference, plain h5py writing the
   same chunks, already arranged layer-major, with ``write_direct_chunk`` and then an fsync: what
   this HDF5 layout costs by itself, without streaming, commits or background syncing.
2. Read time of one layer across all records (of the last size): the cache's layer-major chunks ``(R, 1, d)`` against
   a record-major chunking ``(R', layers, d)`` of the same chunk size, each read cold (the file's
   pages are dropped from the OS cache with posix_fadvise first) and warm.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from activations_cache import CacheMetadata, CacheSpec, CacheWriter, DatasetSpec, open_cache

RESID = ("last_prompt", "hook_resid_post")
HEADS = ("last_prompt", "attn.hook_z")


def fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def drop_from_page_cache(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def batch_records(start: int, stop: int) -> list[dict[str, object]]:
    return [
        {
            "record_key": f"r{i}",
            "item_id": f"i{i}",
            "condition": "baseline",
            "round": 0,
            "prompt": "p",
            "answer": "a",
            "n_prompt_tokens": 1,
            "n_answer_tokens": 1,
        }
        for i in range(start, stop)
    ]


def time_cache_writer(path: Path, resid: np.ndarray, heads: np.ndarray, batch: int) -> float:
    layers = tuple(range(resid.shape[1]))
    spec = CacheSpec(
        datasets=[
            DatasetSpec("last_prompt", "hook_resid_post", layers, resid.shape[2:]),
            DatasetSpec("last_prompt", "attn.hook_z", layers, heads.shape[2:]),
        ],
        dtype="float16",
    )
    meta = CacheMetadata("bench", "none", "none", {"bench": True}, 0)
    records = [batch_records(start, min(len(resid), start + batch)) for start in range(0, len(resid), batch)]
    path.unlink(missing_ok=True)  # both writers start from an absent file (deleting is not writing)
    began = time.perf_counter()
    with CacheWriter.open(path, spec, meta, overwrite=True, commit_interval_s=None) as writer:
        for index, start in enumerate(range(0, len(resid), batch)):
            stop = start + batch
            writer.submit(records[index], {RESID: resid[start:stop], HEADS: heads[start:stop]})
    fsync_file(path)
    return time.perf_counter() - began


def time_h5_direct_chunks(path: Path, resid: np.ndarray, heads: np.ndarray) -> float:
    """h5py alone: the cache's chunk layout, chunks pre-arranged (not timed), one write per chunk."""
    arrays = {"resid": resid, "heads": heads}
    layer_major = {name: np.ascontiguousarray(values.swapaxes(0, 1)) for name, values in arrays.items()}
    spec = CacheSpec(
        datasets=[
            DatasetSpec("p", name, tuple(range(values.shape[1])), values.shape[2:]) for name, values in arrays.items()
        ]
    )
    chunks = {}  # (name, start, layer) -> one chunk's bytes, zero-padded past the last record
    for dataset_spec, (name, values) in zip(spec.datasets, arrays.items()):
        rows = spec.chunk_rows(dataset_spec)
        for start in range(0, len(values), rows):
            for layer, block in enumerate(layer_major[name]):
                chunk = np.zeros((rows, *values.shape[2:]), values.dtype)
                chunk[: len(block[start : start + rows])] = block[start : start + rows]
                chunks[name, start, layer] = chunk
    path.unlink(missing_ok=True)
    began = time.perf_counter()
    with h5py.File(path, "w", libver="latest") as file:
        for dataset_spec, (name, values) in zip(spec.datasets, arrays.items()):
            dataset = file.create_dataset(
                name, shape=values.shape, chunks=spec.chunk_shape(dataset_spec), dtype=values.dtype
            )
            for (chunk_name, start, layer), chunk in chunks.items():
                if chunk_name == name:
                    dataset.id.write_direct_chunk((start, layer) + (0,) * (values.ndim - 2), chunk)
    fsync_file(path)
    return time.perf_counter() - began


def time_numpy_save(path: Path, resid: np.ndarray, heads: np.ndarray) -> float:
    path.unlink(missing_ok=True)
    began = time.perf_counter()
    with open(path, "wb") as handle:
        np.save(handle, resid)
        np.save(handle, heads)
        handle.flush()
        os.fsync(handle.fileno())
    return time.perf_counter() - began


def write_record_major(path: Path, resid: np.ndarray, chunk_bytes: int) -> None:
    rows = max(1, chunk_bytes // (resid.shape[1] * resid.shape[2] * resid.itemsize))
    with h5py.File(path, "w") as file:
        file.create_dataset("resid", data=resid, chunks=(rows, *resid.shape[1:]))


RESID_PATH = "activations/last_prompt/hook_resid_post"


def read_layer(path: Path, dataset: str, layer: int) -> np.ndarray:
    with h5py.File(path, "r", rdcc_nbytes=0) as file:
        return file[dataset][:, layer]


def read_with_cache_reader(path: Path, layer: int) -> np.ndarray:
    with open_cache(path) as reader:
        return reader.read("hook_resid_post", layer)


def chunks_of(path: Path, dataset: str) -> tuple[int, ...] | None:
    with h5py.File(path, "r") as file:
        return file[dataset].chunks


def time_read(read: Callable[[], np.ndarray], path: Path, cold: bool) -> float:
    if cold:
        drop_from_page_cache(path)
    began = time.perf_counter()
    values = read()
    elapsed = time.perf_counter() - began
    assert values.shape[0] > 0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--records",
        type=int,
        nargs="+",
        default=[2000, 10000],
        help="cache sizes to write (records); reads use the last",
    )
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=None, help="where to write (default: a temp folder)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(
        f"write float16 caches ({args.layers} layers; resid 576 + hook_z 9x64; batches of {args.batch}), "
        f"until on disk (fsync), best of {args.repeats}"
    )
    print(
        f"{'records':>8s} {'MB':>7s} | {'CacheWriter':>19s} | {'numpy.save':>19s} | {'h5py direct, alone':>19s} | writer / numpy.save (target >= 0.70)"
    )
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        cache_path, npy_path, record_major = (
            Path(folder) / "cache.h5",
            Path(folder) / "same.npy",
            Path(folder) / "rm.h5",
        )
        for records in args.records:
            resid = rng.standard_normal((records, args.layers, 576), dtype=np.float32).astype(np.float16)
            heads = rng.standard_normal((records, args.layers, 9, 64), dtype=np.float32).astype(np.float16)
            megabytes = (resid.nbytes + heads.nbytes) / 1e6
            writer_s = min(time_cache_writer(cache_path, resid, heads, args.batch) for _ in range(args.repeats))
            numpy_s = min(time_numpy_save(npy_path, resid, heads) for _ in range(args.repeats))
            direct_s = min(time_h5_direct_chunks(Path(folder) / "direct.h5", resid, heads) for _ in range(args.repeats))
            cells = " | ".join(
                f"{seconds:6.3f} s {megabytes / seconds:6.0f} MB/s" for seconds in (writer_s, numpy_s, direct_s)
            )
            print(
                f"{records:8d} {megabytes:7.1f} | {cells} | {numpy_s / writer_s:.2f} (h5py alone {numpy_s / direct_s:.2f})"
            )

        write_record_major(record_major, resid, 1 << 20)
        layer = args.layers // 2
        print(
            f"read layer {layer} of hook_resid_post across {records} records ({resid[:, layer].nbytes / 1e6:.1f} MB); "
            "each read opens the file afresh (no HDF5 chunk cache carried over)"
        )
        for cold in (True, False):
            ours = min(
                time_read(lambda: read_layer(cache_path, RESID_PATH, layer), cache_path, cold)
                for _ in range(args.repeats)
            )
            theirs = min(
                time_read(lambda: read_layer(record_major, "resid", layer), record_major, cold)
                for _ in range(args.repeats)
            )
            via_reader = min(
                time_read(lambda: read_with_cache_reader(cache_path, layer), cache_path, cold)
                for _ in range(args.repeats)
            )
            print(
                f"  {'cold' if cold else 'warm'}: layer-major chunks {chunks_of(cache_path, RESID_PATH)}: {ours * 1e3:7.1f} ms "
                f"(CacheReader.read to float32: {via_reader * 1e3:7.1f} ms) | record-major chunks "
                f"{chunks_of(record_major, 'resid')}: {theirs * 1e3:7.1f} ms ({theirs / ours:.1f}x slower)"
            )


if __name__ == "__main__":
    main()
