"""CacheWriter: round trip, storage choices, validation errors, resume checks, thread errors."""

from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from activations_cache import (
    ActivationShapeError,
    CacheFormatError,
    CacheMetadata,
    CacheMismatchError,
    CachePathError,
    CacheSpec,
    CacheSpecError,
    CacheWriteError,
    CacheWriter,
    ColumnSpec,
    DatasetSpec,
    RecordError,
    open_cache,
)
from activations_cache.chunk_rows import ChunkRowAssembler, ChunkRowJob, write_chunk_row
from activations_cache.writer_lock import WriterLock

RESID = ("last_prompt", "hook_resid_post")
HEADS = ("last_prompt", "attn.hook_z")


def make_spec(**overrides: Any) -> CacheSpec:
    fields: dict[str, Any] = dict(
        datasets=[
            DatasetSpec(position="last_prompt", site="hook_resid_post", layers=(0, 2, 5), shape=(8,)),
            DatasetSpec(position="last_prompt", site="attn.hook_z", layers=(1, 3), shape=(2, 4)),
        ],
        record_columns={
            "option_probs": ColumnSpec("float64", length=3),
            "predicted": ColumnSpec("int64"),
            "category": ColumnSpec("str"),
            "correct": ColumnSpec("bool"),
        },
        dtype="float16",
        chunk_bytes=64,
    )
    fields.update(overrides)
    return CacheSpec(**fields)


META = CacheMetadata(model_id="tiny/llama", weights_hash="w123", tokenizer="tiny/tok", config={"lr": 1}, seed=3)


def make_records(start: int, stop: int) -> list[dict[str, Any]]:
    return [
        {
            "record_key": f"k{i}",
            "item_id": f"item{i // 2}",
            "condition": "baseline" if i % 3 else "instruction",
            "round": i % 2,
            "prompt": f"prompt {i} é",
            "answer": f"answer {i}",
            "n_prompt_tokens": 10 + i,
            "n_answer_tokens": 2,
            "option_probs": [0.25, 0.25, 0.5],
            "predicted": i % 3,
            "category": "age",
            "correct": i % 2 == 0,
        }
        for i in range(start, stop)
    ]


def make_activations(start: int, stop: int) -> dict[tuple[str, str], np.ndarray]:
    """Record i, layer slot l, unit u holds 100 i + 10 l + u: integers below 2048, exact in float16."""
    i = np.arange(start, stop, dtype=np.float64)[:, None, None]
    resid = 100 * i + 10 * np.arange(3)[None, :, None] + np.arange(8)[None, None, :]
    heads = 100 * i[..., None] + 10 * np.arange(2)[None, :, None, None] + np.arange(8).reshape(1, 1, 2, 4)
    return {RESID: resid.astype(np.float32), HEADS: heads}


def write(path: Path, start: int, stop: int, batch: int = 3, spec: CacheSpec | None = None, **options: Any) -> None:
    with CacheWriter.open(path, spec or make_spec(), META, **options) as writer:
        for lo in range(start, stop, batch):
            hi = min(stop, lo + batch)
            writer.submit(make_records(lo, hi), make_activations(lo, hi))


def test_round_trip_stores_layout_attributes_records_and_values(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    write(path, 0, 7)
    with h5py.File(path, "r") as file:
        resid = file["activations/last_prompt/hook_resid_post"]
        assert resid.shape == (7, 3, 8) and resid.dtype == np.float16
        # chunk_bytes=64 / (8 units * 2 bytes) = 4 records per chunk, one layer per chunk
        assert resid.chunks == (4, 1, 8) and resid.compression is None
        assert list(resid.attrs["layers"]) == [0, 2, 5]
        assert (resid.attrs["site"], resid.attrs["position"]) == ("hook_resid_post", "last_prompt")
        assert file["activations/last_prompt/attn.hook_z"].shape == (7, 2, 2, 4)
        assert file["activations/last_prompt/attn.hook_z"].chunks == (4, 1, 2, 4)
        assert file["committed_records"][()] == 7
        assert file.attrs["schema_version"] == 1
        assert file.attrs["config_json"] == '{"lr":1}'
        assert file.attrs["config_sha256"] == hashlib.sha256(b'{"lr":1}').hexdigest()
        assert (file.attrs["model_id"], file.attrs["weights_hash"], file.attrs["seed"]) == ("tiny/llama", "w123", 3)
        assert {"h5py", "hdf5", "numpy", "torch", "transformers"} <= set(json.loads(file.attrs["library_versions"]))
        assert file["records/prompt_sha256"].asstr()[1] == hashlib.sha256("prompt 1 é".encode()).hexdigest()
    with open_cache(path) as reader:
        # layer 5 is slot 2: 100 i + 20 + u
        expected = 100 * np.arange(7)[:, None] + 20 + np.arange(8)[None, :]
        np.testing.assert_array_equal(reader.read("hook_resid_post", 5), expected.astype(np.float32))
        assert reader.read("hook_resid_post", 5).dtype == np.float32
        heads = reader.read("attn.hook_z", 3)
        assert heads.shape == (7, 2, 4) and heads[6, 1, 3] == 600 + 10 + 7
        records = reader.records
        assert records["record_key"].tolist() == [f"k{i}" for i in range(7)]
        assert records["correct"].tolist() == [True, False, True, False, True, False, True]
        assert records["option_probs"].shape == (7, 3) and records["option_probs"][4, 2] == 0.5
        assert records["n_prompt_tokens"].tolist() == list(range(10, 17))


def test_float32_and_lzf_storage(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    write(path, 0, 5, spec=make_spec(dtype="float32", compression="lzf", chunk_bytes=1 << 20))
    with h5py.File(path, "r") as file:
        resid = file["activations/last_prompt/hook_resid_post"]
        assert resid.dtype == np.float32 and resid.compression == "lzf"
        # 1 MiB / (8 * 4 bytes) = 32768 records per chunk
        assert resid.chunks == (32768, 1, 8)
        assert resid[4, 1, 7] == 400 + 10 + 7


def test_resume_after_clean_interrupt_skips_committed_and_matches_uninterrupted(tmp_path: Path) -> None:
    reference, resumed = tmp_path / "ref.h5", tmp_path / "resumed.h5"
    write(reference, 0, 11)
    with pytest.raises(KeyboardInterrupt), CacheWriter.open(resumed, make_spec(), META) as writer:
        writer.submit(make_records(0, 3), make_activations(0, 3))
        writer.submit(make_records(3, 5), make_activations(3, 5))
        raise KeyboardInterrupt
    with CacheWriter.open(resumed, make_spec(), META) as writer:
        assert writer.committed_keys() == {f"k{i}" for i in range(5)}
        writer.submit(make_records(5, 11), make_activations(5, 11))
    with h5py.File(reference, "r") as ref, h5py.File(resumed, "r") as res:
        for name in ("activations/last_prompt/hook_resid_post", "activations/last_prompt/attn.hook_z"):
            np.testing.assert_array_equal(ref[name][:], res[name][:])
        for name in ref["records"]:
            np.testing.assert_array_equal(ref["records"][name][:], res["records"][name][:])
        kept = {name for name in ref.attrs if name not in ("created_at", "resumed_at")}
        assert {name: ref.attrs[name] for name in kept} == {name: res.attrs[name] for name in kept}
        assert len(json.loads(res.attrs["resumed_at"])) == 1


def test_commit_interval_none_commits_whole_chunk_rows_and_the_rest_at_close(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    writer = CacheWriter.open(path, make_spec(), META, commit_interval_s=None)
    writer.submit(make_records(0, 3), make_activations(0, 3))
    writer.submit(make_records(3, 6), make_activations(3, 6))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open_cache(path) as reader:
            if reader.n_records == 4:
                break
        time.sleep(0.01)
    with open_cache(path) as reader:
        # 4 records per chunk: rows 0-3 form the first chunk-row; 4-5 wait for close
        assert reader.n_records == 4
    writer.close()
    with open_cache(path) as reader:
        assert reader.n_records == 6


def test_chunk_rows_are_assembled_layer_major_and_written_whole(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "b.h5", "w") as file:
        dataset = file.create_dataset("d", shape=(0, 2, 3), maxshape=(None, 2, 3), chunks=(4, 1, 3), dtype="f4")
        emitted: list[tuple[int, int, np.ndarray]] = []

        def write_now(job: ChunkRowJob) -> None:  # what the writer thread does with a job
            emitted.append((job.start, job.rows, job.block.copy()))
            write_chunk_row(dataset, job, 4)

        assembler = ChunkRowAssembler(("p", "s"), dataset, 4, blocks=2, emit=write_now, wait_hook=lambda: None)
        assembler.append(np.ones((3, 2, 3), np.float32))
        assert emitted == [] and assembler.held == 3
        assembler.append(np.full((6, 2, 3), 2, np.float32))  # completes rows 0-3 and 4-7
        assert [(start, rows) for start, rows, _ in emitted] == [(0, 4), (4, 4)] and assembler.held == 1
        first = emitted[0][2]
        assert first.shape == (2, 4, 3)  # layer-major: one chunk image per layer
        assert first[:, 2, 0].tolist() == [1, 1] and first[:, 3, 0].tolist() == [2, 2]
        assert dataset.shape[0] == 8 and assembler.pool.qsize() == 1  # one block back, one filling
        partial = assembler.partial()
        assert partial is not None and (partial.start, partial.rows, partial.pool) == (8, 1, None)
        assert not partial.block[:, 1:].any()  # rows past the held ones are zero in the file
        write_chunk_row(dataset, partial, 4)
        assert dataset.shape[0] == 9 and dataset[8, 1, 2] == 2 and dataset[2, 0, 0] == 1
        assert dataset.id.get_chunk_info_by_coord((8, 1, 0)).size == 4 * 3 * 4  # whole chunks


def test_assembler_waiting_for_a_block_asks_the_wait_hook(tmp_path: Path) -> None:
    """With both blocks out (the writer thread dead), the caller's wait ends in the hook's error."""
    with h5py.File(tmp_path / "b.h5", "w") as file:
        dataset = file.create_dataset("d", shape=(0, 1, 2), maxshape=(None, 1, 2), chunks=(2, 1, 2), dtype="f4")

        def writer_failed() -> None:
            raise CacheWriteError("writer thread failed")

        assembler = ChunkRowAssembler(("p", "s"), dataset, 2, blocks=2, emit=lambda job: None, wait_hook=writer_failed)
        assembler.append(np.zeros((4, 1, 2), np.float32))  # two chunk-rows: both blocks handed out
        with pytest.raises(CacheWriteError, match="writer thread failed"):
            assembler.append(np.zeros((1, 1, 2), np.float32))


def test_reopen_refuses_another_run(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    write(path, 0, 2)
    other_config = CacheMetadata("tiny/llama", "w123", "tiny/tok", {"lr": 2}, 3)
    with pytest.raises(
        CacheMismatchError, match=r"cache .*cache.h5 .*config_sha256.*use another run name, or --overwrite"
    ):
        CacheWriter.open(path, make_spec(), other_config)
    other_weights = CacheMetadata("tiny/llama", "w999", "tiny/tok", {"lr": 1}, 3)
    with pytest.raises(CacheMismatchError, match="weights_hash"):
        CacheWriter.open(path, make_spec(), other_weights)
    with pytest.raises(CacheMismatchError, match="cache spec"):
        CacheWriter.open(path, make_spec(dtype="float32"), META)
    with h5py.File(path, "r+") as file:
        file.attrs["schema_version"] = 99
    with pytest.raises(CacheFormatError, match=r"schema version 99, this workbench reads version 1"):
        CacheWriter.open(path, make_spec(), META)
    with CacheWriter.open(path, make_spec(), META, overwrite=True) as writer:
        assert writer.committed_keys() == set()


def test_bad_paths_give_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CachePathError, match="is a directory"):
        CacheWriter.open(tmp_path, make_spec(), META)
    with pytest.raises(CachePathError, match="does not exist"):
        CacheWriter.open(tmp_path / "missing" / "cache.h5", make_spec(), META)
    path = tmp_path / "cache.h5"
    write(path, 0, 1)
    path.chmod(stat.S_IRUSR)
    try:
        with pytest.raises(CachePathError, match="is read-only"):
            CacheWriter.open(path, make_spec(), META)
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    not_hdf5 = tmp_path / "text.h5"
    not_hdf5.write_text("hello")
    with pytest.raises(CacheFormatError, match="cannot be opened even read-only"):
        CacheWriter.open(not_hdf5, make_spec(), META)


def test_second_writer_on_the_same_cache_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    with CacheWriter.open(path, make_spec(), META):
        with pytest.raises(CachePathError, match="being written by another process"):
            CacheWriter.open(path, make_spec(), META)


def test_bad_batches_are_refused_in_the_caller(tmp_path: Path) -> None:
    with CacheWriter.open(tmp_path / "cache.h5", make_spec(), META) as writer:
        with pytest.raises(RecordError, match="empty records list"):
            writer.submit([], make_activations(0, 0))
        with pytest.raises(ActivationShapeError, match=r"shape \(2, 3, 8\), expected \(3, 3, 8\)"):
            writer.submit(make_records(0, 3), {**make_activations(0, 3), RESID: make_activations(0, 2)[RESID]})
        with pytest.raises(ActivationShapeError, match="missing"):
            writer.submit(make_records(0, 3), {RESID: make_activations(0, 3)[RESID]})
        with pytest.raises(ActivationShapeError, match="not floating point"):
            writer.submit(make_records(0, 3), {**make_activations(0, 3), RESID: np.zeros((3, 3, 8), np.int64)})
        missing = make_records(0, 1)
        del missing[0]["predicted"]
        with pytest.raises(RecordError, match=r"record 0 \(record_key='k0'\): missing columns \['predicted'\]"):
            writer.submit(missing, make_activations(0, 1))
        mistyped = make_records(0, 1)
        mistyped[0]["round"] = "1"
        with pytest.raises(RecordError, match="column 'round' must be an int"):
            writer.submit(mistyped, make_activations(0, 1))
        short = make_records(0, 1)
        short[0]["option_probs"] = [0.5, 0.5]
        with pytest.raises(RecordError, match=r"must be 3 floats, got shape \(2,\)"):
            writer.submit(short, make_activations(0, 1))
        wrong_digest = make_records(0, 1)
        wrong_digest[0]["prompt_sha256"] = "0" * 64
        with pytest.raises(RecordError, match="is not the sha256 of its prompt"):
            writer.submit(wrong_digest, make_activations(0, 1))
        writer.submit(make_records(0, 2), make_activations(0, 2))
        with pytest.raises(RecordError, match=r"record_key \['k1'\] already in cache"):
            writer.submit(make_records(1, 3), make_activations(1, 3))
        twice = make_records(2, 3) * 2
        with pytest.raises(RecordError, match=r"\['k2'\]"):
            writer.submit(twice, make_activations(2, 4))
    with open_cache(tmp_path / "cache.h5") as reader:
        assert reader.records["record_key"].tolist() == ["k0", "k1"]


def test_spec_rejects_malformed_declarations() -> None:
    with pytest.raises(CacheSpecError, match="repeats"):
        make_spec(datasets=[DatasetSpec("p", "s", (0,), (2,)), DatasetSpec("p", "s", (1,), (2,))])
    with pytest.raises(CacheSpecError, match="clash with built-in"):
        make_spec(record_columns={"round": ColumnSpec("int64")})
    with pytest.raises(CacheSpecError, match="only float64 columns take a length"):
        ColumnSpec("int64", length=2)
    with pytest.raises(CacheSpecError, match="not a valid HDF5 name"):
        DatasetSpec("last/prompt", "s", (0,), (2,))
    with pytest.raises(CacheSpecError, match="dtype 'bfloat16'"):
        make_spec(dtype="bfloat16")


def test_writer_thread_failure_is_raised_in_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    writer = CacheWriter.open(path, make_spec(), META)
    writer._file.close()  # the writer thread's next HDF5 call fails
    writer.submit(make_records(0, 1), make_activations(0, 1))
    with pytest.raises(CacheWriteError, match="background writer of cache .*cache.h5 failed"):
        for start in range(1, 50):
            time.sleep(0.01)
            writer.submit(make_records(start, start + 1), make_activations(start, start + 1))
    writer.close()  # already failed and reported: closing again is quiet
    assert not (tmp_path / "cache.h5.lock").exists()


def test_a_failed_sync_to_disk_is_reported_at_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_sync(descriptor: int) -> None:
        raise OSError(5, "Input/output error")

    writer = CacheWriter.open(tmp_path / "cache.h5", make_spec(), META)
    writer.submit(make_records(0, 5), make_activations(0, 5))
    monkeypatch.setattr(os, "fdatasync", failing_sync)
    with pytest.raises(
        CacheWriteError, match=r"cache .*cache.h5 was written but could not be synced to disk: .*Input/output"
    ):
        writer.close()
    monkeypatch.undo()
    assert not (tmp_path / "cache.h5.lock").exists()
    with open_cache(tmp_path / "cache.h5") as reader:
        assert reader.n_records == 5


def test_submit_waits_while_the_writer_thread_holds_every_block(tmp_path: Path) -> None:
    """Memory stays bounded: with the writer thread stalled, capture waits once both blocks are out."""
    writer = CacheWriter.open(tmp_path / "cache.h5", make_spec(), META, queue_size=2)
    gate = threading.Event()
    original_add = writer._loop.add

    def slow_add(*args: Any) -> None:
        gate.wait(5)
        original_add(*args)

    writer._loop.add = slow_add  # type: ignore[method-assign]
    writer.submit(make_records(0, 8), make_activations(0, 8))  # 4 records per chunk: both blocks out
    ninth_done = threading.Event()

    def ninth() -> None:
        writer.submit(make_records(8, 9), make_activations(8, 9))
        ninth_done.set()

    thread = threading.Thread(target=ninth)
    thread.start()
    assert not ninth_done.wait(0.3)
    gate.set()
    assert ninth_done.wait(5)
    thread.join()
    writer.close()
    with open_cache(tmp_path / "cache.h5") as reader:
        assert reader.n_records == 9
        assert np.array_equal(
            np.asarray(reader.read("hook_resid_post", 2), np.float64), make_activations(0, 9)[RESID][:, 1]
        )


def test_open_does_not_leave_staging_files(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    (tmp_path / "cache.h5.creating").write_bytes(b"half")
    write(path, 0, 2)
    assert sorted(os.listdir(tmp_path)) == ["cache.h5"]


def _contend_for_the_lock(path: str, parent: Any) -> None:
    """A second writer (in a forked child) that pauses between opening the lock file and locking it."""
    real_flock = fcntl.flock
    paused: list[bool] = []

    def flock_after_the_parent_says_go(descriptor: int, operation: int) -> None:
        if not paused:
            paused.append(True)
            parent.send("opened the lock file")
            assert parent.recv() == "go"
        real_flock(descriptor, operation)

    fcntl.flock = flock_after_the_parent_says_go  # what activations_cache.writer calls
    assert parent.recv() == "start"  # forked before the parent locked: no inherited lock descriptor
    try:
        lock = WriterLock(Path(path))
    except CachePathError as error:
        parent.send(f"refused: {error}")
        return
    parent.send("acquired")
    parent.recv()
    lock.release()


@pytest.mark.parametrize("order", ["third_locks_before_the_waiter", "waiter_locks_before_the_third"])
def test_a_waiter_on_a_released_lock_file_never_makes_a_second_writer(tmp_path: Path, order: str) -> None:
    """Writer A holds the lock; B opens the lock file; A releases (removing it); B locks the removed
    file while C locks the path: before the fix both B and C went on writing."""
    path = tmp_path / "cache.h5"
    context = multiprocessing.get_context("fork")
    to_child, child_end = context.Pipe()
    child = context.Process(target=_contend_for_the_lock, args=(str(path), child_end))
    child.start()
    try:
        first = WriterLock(path)
        to_child.send("start")
        assert to_child.poll(30) and to_child.recv() == "opened the lock file"
        first.release()
        if order == "third_locks_before_the_waiter":
            third = WriterLock(path)
            to_child.send("go")
            assert to_child.poll(30)
            answer = to_child.recv()
            assert answer.startswith(f"refused: cache {path} is being written by another process (pid {os.getpid()} ")
            third.release()
        else:
            to_child.send("go")
            assert to_child.poll(30) and to_child.recv() == "acquired"
            with pytest.raises(CachePathError, match=rf"being written by another process \(pid {child.pid} on host "):
                WriterLock(path)
            to_child.send("release")
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    assert not (tmp_path / "cache.h5.lock").exists()


def test_a_second_writer_process_is_refused_naming_the_first(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    root = Path(__file__).resolve().parents[2]
    program = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "from test_cache_writer import *\n"
        f"writer = CacheWriter.open({str(path)!r}, make_spec(), META)\n"
        "print('writing', flush=True)\n"
        "sys.stdin.readline()\n"
        "writer.close()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    child = subprocess.Popen(
        [sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root, env=env
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        assert child.stdout.readline().strip() == "writing"
        holder = json.loads((tmp_path / "cache.h5.lock").read_text())
        assert holder["pid"] == child.pid and holder["host"] == socket.gethostname()
        with pytest.raises(CachePathError) as refused:
            CacheWriter.open(path, make_spec(), META)
        assert str(refused.value) == (
            f"cache {path} is being written by another process (pid {child.pid} on host {socket.gethostname()}, "
            f"since {holder['started_at']}; lock {path}.lock); wait for it to finish or use another run name"
        )
        assert holder["started_at"].endswith("+00:00")
    finally:
        child.stdin.write("done\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == 0
    assert not (tmp_path / "cache.h5.lock").exists()


def test_gone_writer_tells_a_dead_or_absent_writer_from_a_live_one(tmp_path: Path) -> None:
    import json
    import socket
    import subprocess
    import sys

    from activations_cache import gone_writer, lock_path

    cache = tmp_path / "cache.h5"
    assert gone_writer(cache) == "no process holds its writer lock (cache.h5.lock is absent)"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    holder = {"pid": int(dead.stdout), "host": socket.gethostname(), "started_at": "2026-01-01T00:00:00Z"}
    lock_path(cache).write_text(json.dumps(holder))
    assert gone_writer(cache) == (
        f"its writer (pid {holder['pid']} on host {holder['host']}, since 2026-01-01T00:00:00Z) is no longer running"
    )
    lock_path(cache).write_text(json.dumps({**holder, "pid": os.getpid()}))
    assert gone_writer(cache) is None
    lock_path(cache).write_text(json.dumps({**holder, "host": "another-host"}))
    assert gone_writer(cache) is None  # cannot be checked from here: counts as alive
