"""CacheReader: selection, reads, torch, schema refusal, live writer, plain h5py and h5dump."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from activations_cache import CacheError, CacheFormatError, open_cache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cache_writer import write


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    path = tmp_path / "cache.h5"
    write(path, 0, 12)
    return path


def test_sites_layers_and_metadata(cache: Path) -> None:
    reader = open_cache(cache)
    assert reader.sites() == [("last_prompt", "hook_resid_post"), ("last_prompt", "attn.hook_z")]
    assert reader.layers("hook_resid_post") == [0, 2, 5]
    assert reader.layers("attn.hook_z", position="last_prompt") == [1, 3]
    assert reader.config == {"lr": 1}
    assert reader.model_id == "tiny/llama"
    assert reader.metadata["seed"] == 3 and reader.metadata["schema_version"] == 1
    reader.close()
    reader.close()


def test_select_and_filtered_reads(cache: Path) -> None:
    with open_cache(cache) as reader:
        # condition is "instruction" when i % 3 == 0, round is i % 2
        assert reader.select(condition="instruction").tolist() == [0, 3, 6, 9]
        assert reader.select(condition="instruction", round=1).tolist() == [3, 9]
        assert reader.select(item_ids=["item1", "item5"]).tolist() == [2, 3, 10, 11]
        assert reader.select(predicted=2, correct=True).tolist() == [2, 8]
        with pytest.raises(CacheError, match="'option_probs' is not a scalar record column"):
            reader.select(option_probs=0.5)
        # layer 2 is slot 1: 100 i + 10 + u
        values = reader.read("hook_resid_post", 2, condition="instruction", round=1)
        np.testing.assert_array_equal(values[:, 0], [310, 910])
        picked = reader.read("hook_resid_post", 0, rows=[11, 0, 5])
        np.testing.assert_array_equal(picked[:, 1], [1101, 1, 501])
        sparse = reader.read("hook_resid_post", 0, rows=[0, 11])  # span 12 > 4 * 2 rows
        np.testing.assert_array_equal(sparse[:, 0], [0, 1100])
        assert reader.read("hook_resid_post", 0, rows=[]).shape == (0, 8)
        assert reader.read("attn.hook_z", 1, dtype="float16").dtype == np.float16
        with pytest.raises(CacheError, match=r"layer 4 is not stored .* stored layers: \[0, 2, 5\]"):
            reader.read("hook_resid_post", 4)
        with pytest.raises(CacheError, match="no dataset for position='last_answer'"):
            reader.read("hook_resid_post", 0, position="last_answer")
        with pytest.raises(CacheError, match=r"rows out of range \[0, 12\)"):
            reader.read("hook_resid_post", 0, rows=[12])


def test_read_as_torch(cache: Path) -> None:
    torch = pytest.importorskip("torch")
    with open_cache(cache) as reader:
        tensor = reader.read("attn.hook_z", 3, as_="torch")
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
        assert tuple(tensor.shape) == (12, 2, 4) and float(tensor[5, 1, 3]) == 500 + 10 + 7


def test_unknown_schema_version_is_refused_with_both_versions(cache: Path) -> None:
    with h5py.File(cache, "r+") as file:
        file.attrs["schema_version"] = 7
    with pytest.raises(CacheFormatError, match=r"cache.h5 has cache schema version 7, this workbench reads version 1"):
        open_cache(cache)


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CacheFormatError, match="does not exist"):
        open_cache(tmp_path / "nope.h5")
    with h5py.File(tmp_path / "other.h5", "w", libver=("v110", "v110")) as file:
        file["x"] = 1
    with pytest.raises(CacheFormatError, match="is not an activations cache"):
        open_cache(tmp_path / "other.h5")


def test_plain_h5py_reads_one_layer(cache: Path) -> None:
    with h5py.File(cache, "r") as file:
        n = int(file["committed_records"][()])
        layers = list(file["activations/last_prompt/hook_resid_post"].attrs["layers"])
        x = file["activations/last_prompt/hook_resid_post"][:n, layers.index(5)]
        conditions = file["records/condition"].asstr()[:n]
    assert x.shape == (12, 8) and x[3, 4] == 300 + 20 + 4
    assert conditions[3] == "instruction"


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="h5dump not installed (apt-get install hdf5-tools)")
def test_h5dump_reads_the_cache(cache: Path) -> None:
    dump = subprocess.run(
        ["h5dump", "-d", "/activations/last_prompt/hook_resid_post", "-s", "1,2,0", "-c", "1,1,3", str(cache)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "16-bit little-endian floating-point" in dump
    assert "120, 121, 122" in dump
    header = subprocess.run(["h5dump", "-H", str(cache)], capture_output=True, text=True, check=True).stdout
    assert 'DATASET "record_key"' in header and 'ATTRIBUTE "config_sha256"' in header


def test_reads_a_cache_whose_writer_is_still_running(tmp_path: Path) -> None:
    path = tmp_path / "cache.h5"
    root = Path(__file__).resolve().parents[2]
    program = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "from test_cache_writer import *\n"
        f"writer = CacheWriter.open({str(path)!r}, make_spec(), META, commit_interval_s=0.0)\n"
        "writer.submit(make_records(0, 5), make_activations(0, 5))\n"
        "import time\n"
        "time.sleep(0.3)\n"
        "print('committed', flush=True)\n"
        "sys.stdin.readline()\n"
        "writer.submit(make_records(5, 6), make_activations(5, 6))\n"
        "writer.close()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    child = subprocess.Popen(
        [sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root, env=env
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "committed"
    with open_cache(path) as reader:
        assert reader.n_records == 5
        np.testing.assert_array_equal(reader.read("hook_resid_post", 0)[:, 0], [0, 100, 200, 300, 400])
        assert reader.records["record_key"].tolist() == ["k0", "k1", "k2", "k3", "k4"]
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.wait(timeout=30) == 0
    with open_cache(path) as reader:
        assert reader.n_records == 6
