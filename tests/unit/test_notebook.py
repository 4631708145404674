"""workbench.open_run: records, tables and cached sites of a real run, checked against plain h5py and csv.

The run folder is written by the runner on a tiny random model saved to disk (as tests/unit/test_runner.py
does), then ``workbench results``; every expected value is read straight from the files.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import workbench
from workbench.config import RunConfig
from workbench.experiment.records import NO_INDEX, OPTIONAL_TEXT, RECORD_COLUMNS, RunRecord
from workbench.models import tiny_model
from workbench.notebook import RECORD_COORDINATES, ClosedRunError, open_run
from workbench.pipeline import results_stage, run_stage
from workbench.run_folder import RUN_TABLES, RunFolder, RunFolderError

REPO_ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
name = "notebook"
seed = 0
[model]
spec = "{model}"
[task]
name = "bbq-sample"
categories = ["Age", "Religion"]
limit_per_category = 3
[protocol]
instructions = ["none", "intrinsic"]
rounds = 2
answer_tokens = 4
[capture]
sites = ["blocks.*.hook_resid_post", "blocks.1.attn.hook_z"]
batch_size = 4
[cache]
dtype = "float16"
[results]
n_boot = 50
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("notebook")
    model = tiny_model("llama", n_layers=2)
    model.model.save_pretrained(root / "model")
    model.tokenizer.save_pretrained(root / "model")
    (root / "run.toml").write_text(CONFIG.format(model=root / "model"))
    config = dataclasses.replace(RunConfig.load(root / "run.toml"), output_dir=str(root / "runs"))
    folder = run_stage(config)
    results_stage(folder)
    return folder


def h5py_columns(cache: Path) -> tuple[int, dict[str, np.ndarray]]:
    """(committed records, column -> its committed rows) read with plain h5py (FORMAT.md, "Reading")."""
    with h5py.File(cache, "r", swmr=True) as file:
        n = int(file["committed_records"][()])
        columns = {}
        for name, dataset in file["records"].items():
            is_text = h5py.check_string_dtype(dataset.dtype) is not None
            columns[name] = np.asarray(dataset.asstr()[:n] if is_text else dataset[:n])
    return n, columns


def h5py_sites(cache: Path) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(position, site) -> (its committed rows, its ``layers`` attribute) read with plain h5py."""
    found = {}
    with h5py.File(cache, "r", swmr=True) as file:
        n = int(file["committed_records"][()])
        for position, group in file["activations"].items():
            for site, dataset in group.items():
                found[(position, site)] = (dataset[:n], np.asarray(dataset.attrs["layers"]))
    return found


def test_records_round_trip_every_cache_column(run_dir: Path) -> None:
    n, columns = h5py_columns(run_dir / "cache.h5")
    with open_run(run_dir) as run:
        records = run.records
    assert n == len(records) == 24  # 6 items x 2 conditions x 2 rounds
    assert list(records.index) == list(columns["record_key"])
    assert records.index.name == "record"
    assert list(records.columns) == [field.name for field in dataclasses.fields(RunRecord)][1:]
    for name, stored in columns.items():
        if name == "record_key":
            continue
        kind = RECORD_COLUMNS[name].kind if name in RECORD_COLUMNS else None
        if name == "option_probs":
            for cell, row in zip(records[name], stored):
                present = row[~np.isnan(row)]
                assert cell == (tuple(present) if present.size else None)
        elif kind == "int64":  # -1 stores "no option": <NA> in the frame
            assert [None if value == NO_INDEX else int(value) for value in stored] == [
                None if value is pd.NA else int(value) for value in records[name]
            ], name
        elif stored.dtype.kind == "f":
            np.testing.assert_array_equal(records[name].to_numpy(dtype=float), stored, err_msg=name)
        elif stored.dtype.kind in "iu":
            assert records[name].tolist() == stored.tolist(), name
        else:  # text; the empty string of an optional text column is missing
            expected = [None if value == "" and name in OPTIONAL_TEXT else value for value in stored]
            got = [None if isinstance(value, float) and math.isnan(value) else value for value in records[name]]
            assert got == expected, name


def test_every_site_round_trips_with_named_dimensions_and_coordinates(run_dir: Path) -> None:
    _, columns = h5py_columns(run_dir / "cache.h5")
    stored_sites = h5py_sites(run_dir / "cache.h5")
    with open_run(run_dir) as run:
        assert sorted(run.sites) == sorted(stored_sites)
        for (position, site), (values, layers) in stored_sites.items():
            array = run.activations(site, position)
            expected_dims = ("record", "layer", "head", "d") if values.ndim == 4 else ("record", "layer", "d")
            assert array.dims == expected_dims
            assert array.shape == values.shape
            assert array.dtype == np.float32
            np.testing.assert_array_equal(array.values, values.astype(np.float32))  # float16 -> float32 is exact
            assert array["layer"].values.tolist() == layers.tolist()
            assert list(array["record"].values) == list(columns["record_key"])
            for coordinate, field in RECORD_COORDINATES.items():
                assert list(array[coordinate].values) == list(columns[field]), coordinate
            if "head" in array.dims:
                assert array["head"].values.tolist() == list(range(values.shape[2]))
    assert ("last_prompt", "attn.hook_z") in stored_sites and stored_sites["last_prompt", "attn.hook_z"][0].ndim == 4


def test_selections_read_the_same_values_as_h5py(run_dir: Path) -> None:
    values, layers = h5py_sites(run_dir / "cache.h5")["last_prompt", "hook_resid_post"]
    _, columns = h5py_columns(run_dir / "cache.h5")
    with open_run(run_dir) as run:
        resid = run.activations("hook_resid_post")
        layer_slot = layers.tolist().index(1)
        picked = resid.sel(layer=1).isel(record=[7, 2, 2, 19]).values
        np.testing.assert_array_equal(picked, values[[7, 2, 2, 19], layer_slot].astype(np.float32))
        key = str(columns["record_key"][5])
        np.testing.assert_array_equal(resid.sel(record=key).values, values[5].astype(np.float32))
        condition = str(columns["condition"][0])
        mask = columns["condition"] == condition
        chosen = resid.sel(record=run.records.index[run.records["condition"] == condition])
        np.testing.assert_array_equal(chosen.values, values[mask].astype(np.float32))
        means = resid.groupby("round").mean().sel(layer=0).values
        for index, round_index in enumerate(sorted(set(columns["round"].tolist()))):
            rows = values[columns["round"] == round_index, layers.tolist().index(0)].astype(np.float32)
            np.testing.assert_allclose(means[index], rows.mean(axis=0), rtol=1e-5, atol=1e-7)


def test_arrays_are_read_lazily_and_only_the_committed_rows(run_dir: Path, tmp_path: Path) -> None:
    """Rows past committed_records (a running or killed writer's) are never part of an array."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    with h5py.File(copy / "cache.h5", "r+") as file:
        committed = int(file["committed_records"][()])
        for group in file["activations"].values():
            for dataset in group.values():
                dataset.resize(committed + 5, axis=0)
                dataset[committed:] = 1000.0  # uncommitted garbage
    run = open_run(copy)
    resid = run.activations("hook_resid_post")
    assert resid.shape[0] == committed
    assert float(np.abs(resid.values).max()) < 1000.0
    assert float(np.abs(resid.isel(record=slice(None)).values).max()) < 1000.0
    lazy = run.activations("attn.hook_z").sel(layer=1)
    run.close()
    with pytest.raises(ClosedRunError, match=r"the run was closed.*workbench\.open_run\("):
        lazy.values  # noqa: B018 - nothing was read before the file closed


def test_tables_are_every_csv_the_folder_holds(run_dir: Path) -> None:
    folder = RunFolder(run_dir)
    held = [name for name in RUN_TABLES if folder.table(name).is_file()]
    assert "behaviour" in held and "morality" not in held
    with open_run(run_dir) as run:
        tables = run.tables
        assert list(tables) == held
        for name, frame in tables.items():
            with folder.table(name).open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            assert len(frame) == len(rows), name
            for column in frame.columns:
                cells = [row[column] for row in rows]
                for cell, value in zip(cells, frame[column]):
                    if cell == "":
                        assert pd.isna(value), (name, column)
                    elif isinstance(value, str):
                        assert value == cell, (name, column)
                    else:
                        # the same CSV text parsed to float64 twice (pandas vs float()): equal up to rounding
                        assert float(value) == pytest.approx(float(cell), rel=1e-12), (name, column)
        items = run.table("items")
        assert items["item_id"].dtype == "str"  # ids stay text even where they look like numbers
        frame = run.table("behaviour")
        frame["value"] = 0.0  # a caller's edit does not reach the next caller
        assert run.table("behaviour")["value"].ne(0.0).any()


def test_missing_stage_names_the_command_that_writes_it(run_dir: Path) -> None:
    with open_run(run_dir) as run:
        with pytest.raises(RunFolderError) as missing:
            run.table("morality")
        assert str(missing.value) == (
            f"{run_dir / 'probes' / 'morality.csv'} not found: run `workbench probe {run_dir}` first "
            "(it writes probes/morality.csv)"
        )
        with pytest.raises(RunFolderError, match=r"no run table 'moral'; the tables are behaviour, convergence"):
            run.table("moral")


def test_bad_folders_are_one_line_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match=r"no such run folder; run `workbench run CONFIG` first"):
        workbench.open_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match=r"holds neither cache\.h5 nor results/"):
        open_run(tmp_path / "empty")
    (tmp_path / "tables-only" / "results").mkdir(parents=True)
    run = open_run(tmp_path / "tables-only")
    assert run.tables == {}
    with pytest.raises(RunFolderError, match=r"cache\.h5 does not exist; run `workbench run CONFIG` first"):
        run.records  # noqa: B018


def test_open_run_takes_the_cache_file_and_is_exported_by_the_package(run_dir: Path) -> None:
    with workbench.open_run(run_dir / "cache.h5") as run:
        assert run.folder.root == run_dir
        assert run.config is not None and run.config["name"] == "notebook"


def test_docs_notebook_example_runs_on_a_real_run(run_dir: Path) -> None:
    """Every python block of docs/notebook.md, in order, on this run (the doc's assert included)."""
    text = (REPO_ROOT / "docs" / "notebook.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) >= 5
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block.replace('"runs/demo"', repr(str(run_dir))), "docs/notebook.md", "exec"), namespace)
    figure = namespace["figure"]
    comparison = namespace["comparison"]
    assert isinstance(comparison, pd.DataFrame) and len(comparison) == 4  # 2 conditions x 2 rounds
    assert len(figure.data) == 2  # type: ignore[attr-defined]
    assert namespace["by_condition"].shape == (2, 64)  # type: ignore[attr-defined]
