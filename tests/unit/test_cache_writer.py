"""CacheWriter: round trip, storage choices, validation errors, resume checks, thread errors."""

from __future__ import annotations

import hashlib
import json
import os
import stat
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
from activations_cache.chunk_rows import ChunkRowBuffer

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
    with pytest.raises(KeyboardInterrupt):
        with CacheWriter.open(resumed, make_spec(), META) as writer:
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


def test_chunk_row_buffer_writes_only_complete_chunk_rows(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "b.h5", "w") as file:
        dataset = file.create_dataset("d", shape=(0, 2, 3), maxshape=(None, 2, 3), chunks=(4, 1, 3), dtype="f4")
        buffer = ChunkRowBuffer(dataset, chunk_rows=4)
        assert buffer.rows.shape == (2, 4, 3)  # layer-major: one chunk image per layer
        buffer.append(np.ones((3, 2, 3), np.float32))
        assert dataset.shape[0] == 0 and buffer.durable_rows == 0
        buffer.append(np.full((6, 2, 3), 2, np.float32))
        assert dataset.shape[0] == 8 and buffer.durable_rows == 8 and buffer.held == 1
        buffer.write_held_rows()
        assert dataset.shape[0] == 9 and dataset[8, 1, 2] == 2 and dataset[2, 0, 0] == 1


def test_reopen_refuses_another_run(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    write(path, 0, 2)
    other_config = CacheMetadata("tiny/llama", "w123", "tiny/tok", {"lr": 2}, 3)
    with pytest.raises(CacheMismatchError, match=r"cache .*cache.h5 .*config_sha256.*use another run name, or --overwrite"):
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


def test_submit_blocks_while_the_queue_is_full(tmp_path: Path) -> None:
    writer = CacheWriter.open(tmp_path / "cache.h5", make_spec(), META, queue_size=1)
    gate = threading.Event()
    original_add = writer._loop.add

    def slow_add(*args: Any) -> None:
        gate.wait(5)
        original_add(*args)

    writer._loop.add = slow_add  # type: ignore[method-assign]
    writer.submit(make_records(0, 1), make_activations(0, 1))  # taken by the thread, held at the gate
    time.sleep(0.05)
    writer.submit(make_records(1, 2), make_activations(1, 2))  # fills the queue
    third_done = threading.Event()

    def third() -> None:
        writer.submit(make_records(2, 3), make_activations(2, 3))
        third_done.set()

    thread = threading.Thread(target=third)
    thread.start()
    assert not third_done.wait(0.3)
    gate.set()
    assert third_done.wait(5)
    thread.join()
    writer.close()
    with open_cache(tmp_path / "cache.h5") as reader:
        assert reader.n_records == 3


def test_open_does_not_leave_staging_files(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    (tmp_path / "cache.h5.creating").write_bytes(b"half")
    write(path, 0, 2)
    assert sorted(os.listdir(tmp_path)) == ["cache.h5"]
