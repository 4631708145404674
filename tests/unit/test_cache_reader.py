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

from activations_cache import (
    CacheError,
    CacheFormatError,
    CacheMetadata,
    CacheMismatchError,
    CacheSpec,
    CacheSpecError,
    CacheWriter,
    ColumnSpec,
    DatasetSpec,
    open_cache,
    verify_cache,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cache_writer import META, write


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


CONCEPT_SPEC_COLUMNS = {"label": ColumnSpec("int64"), "group_id": ColumnSpec("str"), "text": ColumnSpec("str")}


CONCEPT_SPEC = CacheSpec(
    datasets=(DatasetSpec("last_prompt", "hook_resid_post", (0, 2, 5), (8,)),), record_columns=CONCEPT_SPEC_COLUMNS
)


def write_concept_cache(path: Path, meta: CacheMetadata = META) -> Path:
    """A cache laid out as the probe stage's concept caches are (declared columns label, group_id, text)."""
    spec = CONCEPT_SPEC
    records = [
        {
            "record_key": f"s{i}",
            "item_id": f"g{i}",
            "condition": "concept",
            "round": 0,
            "prompt": f"statement {i}",
            "answer": "",
            "n_prompt_tokens": 3,
            "n_answer_tokens": 0,
            "label": i % 2,
            "group_id": f"g{i}",
            "text": f"statement {i}",
        }
        for i in range(4)
    ]
    with CacheWriter.open(path, spec, meta) as writer:
        writer.submit(records, {("last_prompt", "hook_resid_post"): np.zeros((4, 3, 8), np.float32)})
    return path


def test_expect_refuses_a_cache_of_the_other_kind(cache: Path, tmp_path: Path) -> None:
    concepts = write_concept_cache(tmp_path / "concepts.h5")
    with pytest.raises(CacheFormatError) as refused:
        open_cache(concepts, expect="run")
    assert str(refused.value) == f"{concepts} is a concept cache, not a run cache; pass runs/<name>/cache.h5"
    with pytest.raises(
        CacheFormatError, match=r"cache.h5 is a run cache, not a concept cache; pass runs/<name>/probes/concepts.h5"
    ):
        open_cache(cache, expect="concept")
    with open_cache(concepts, expect="concept") as reader, open_cache(cache, expect="run") as run:
        assert (reader.kind, run.kind) == ("concept", "run")
    with h5py.File(cache, "r") as file:
        assert file.attrs["kind"] == "run"
    with pytest.raises(CacheError, match=r"open_cache\(expect='runs'\): use one of \('run', 'concept'\) or None"):
        open_cache(cache, expect="runs")


def test_kind_of_a_file_without_the_attribute_is_told_by_its_columns(cache: Path, tmp_path: Path) -> None:
    concepts = write_concept_cache(tmp_path / "concepts.h5")
    for path in (cache, concepts):
        with h5py.File(path, "r+") as file:
            del file.attrs["kind"]  # as in caches written before the attribute existed
    with open_cache(cache) as run, open_cache(concepts) as concept:
        assert (run.kind, concept.kind) == ("run", "concept")
    with pytest.raises(CacheFormatError, match="is a concept cache, not a run cache"):
        open_cache(concepts, expect="run")
    as_run = CacheMetadata("m", "w", "t", {}, 0, kind="run")
    declared = write_concept_cache(tmp_path / "declared.h5", as_run)
    with open_cache(declared) as reader:
        assert reader.kind == "run"
    with pytest.raises(CacheMismatchError, match=r"differs in kind \('run' in the file, 'concept' now\)"):
        CacheWriter.open(declared, CONCEPT_SPEC, CacheMetadata("m", "w", "t", {}, 0))
    with pytest.raises(CacheSpecError, match="CacheMetadata.kind 'probe' is unknown"):
        CacheMetadata("m", "w", "t", {}, 0, kind="probe")


@pytest.mark.parametrize(("count", "shown"), [(-5, r"-5, outside \[0, 12\]"), (13, r"13, outside \[0, 12\]")])
def test_a_committed_count_outside_the_rows_is_refused(cache: Path, count: int, shown: str) -> None:
    with h5py.File(cache, "r+") as file:
        file["committed_records"][()] = count
    with pytest.raises(
        CacheFormatError,
        match=rf"cache.h5 is damaged: committed_records is {shown} \(the rows of .*\); run `workbench cache repair ",
    ):
        open_cache(cache)
    if count < 0:
        assert (
            verify_cache(cache).problems[0].startswith("committed_records is -5, below 0; run `workbench cache repair")
        )


def test_missing_objects_and_bad_json_attributes_are_one_line_format_errors(cache: Path, tmp_path: Path) -> None:
    damaged = {
        "column": lambda file: file["records"].__delitem__("category"),
        "dataset": lambda file: file["activations/last_prompt"].__delitem__("attn.hook_z"),
        "config": lambda file: file.attrs.__setitem__("config_json", "{not json"),
        "config_list": lambda file: file.attrs.__setitem__("config_json", "[1]"),
        "spec": lambda file: file.attrs.__setitem__("cache_spec", '{"datasets": 3}'),
        "count": lambda file: file.__delitem__("committed_records"),
        "attribute": lambda file: file.attrs.__delitem__("weights_hash"),
    }
    expected = {
        "column": "lacks the record column records/category its cache_spec declares",
        "dataset": "lacks the dataset activations/last_prompt/attn.hook_z its cache_spec declares",
        "config": "root attribute config_json is not valid JSON (",
        "config_list": "root attribute config_json is a JSON list, not an object",
        "spec": "root attribute cache_spec is not a valid cache spec (",
        "count": "lacks an integer scalar /committed_records",
        "attribute": "lacks root attribute(s) ['weights_hash']",
    }
    for name, edit in damaged.items():
        path = tmp_path / f"{name}.h5"
        shutil.copyfile(cache, path)
        with h5py.File(path, "r+") as file:
            edit(file)
        with pytest.raises(CacheFormatError) as refused:
            open_cache(path)
        message = str(refused.value)
        assert message.startswith(str(path)) and expected[name] in message and "\n" not in message, message
        assert verify_cache(path).problems == (message,)


def test_edited_record_text_is_refused_on_open_and_listed_by_verify(cache: Path) -> None:
    with h5py.File(cache, "r+") as file:
        file["records/prompt"][4] = "edited"
    with pytest.raises(CacheFormatError) as refused:
        open_cache(cache)
    assert str(refused.value) == (
        f"{cache}: prompt_sha256 does not match the stored prompt of 1 record(s) (first: record_key 'k4'); "
        f"the records were edited or damaged: `workbench cache verify {cache}` lists them, "
        f"`workbench cache repair {cache}` keeps the records before them"
    )
    assert "prompt_sha256 does not match the stored prompt for records ['k4']" in verify_cache(cache).problems[0]
    with open_cache(cache, strict=False) as reader:
        assert reader.records["prompt"][4] == "edited"
