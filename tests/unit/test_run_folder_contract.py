"""The contract between stages: every CSV a stage writes is read back by its registered row type, every
writer's header is its row type's fields, RUN_FOLDER.md lists those columns, and no module but
workbench/run_folder.py spells a file or folder name of the run folder.

The writers are the real ones, fed cheap inputs: record rows for ``workbench results``, a hand-built
run cache and a tiny random Llama for ``workbench probe`` (with steering), hand-made effect tables
and bias levels for ``workbench attribute`` / ``bias``.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from test_probes_stage import write_run_cache

from probes import ProbeConfig, run_probe_stage
from reports.tables import read_table
from workbench.attribution.attribute import write_head_effects, write_selected_heads
from workbench.attribution.selection import select_debiased_heads
from workbench.bias.levels import write_bias_levels
from workbench.metrics.tables import ResultsConfig, compute_results, write_results
from workbench.models import LoadedModel, tiny_model
from workbench.protocols import factorial_conditions
from workbench.run_folder import (
    ATTRIBUTE_STAGE,
    BIAS_STAGE,
    PROBE_STAGE,
    RESULTS_STAGE,
    RUN_TABLES,
    SELECT_STAGE,
    RunFolder,
    RunFolderError,
    RunTable,
    tables_written_by,
)
from workbench.run_tables import BiasLevel, HeadEffect

REPOSITORY = Path(__file__).resolve().parents[2]
OWNER = REPOSITORY / "workbench" / "run_folder.py"
PACKAGES = ("workbench", "probes", "reports")
PATH_CALL = re.compile(r"(\w+\.)*(Path|PurePath|PurePosixPath|joinpath)")


def header_of(path: Path) -> tuple[str, ...]:
    with path.open(newline="", encoding="utf-8") as handle:
        return tuple(next(csv.reader(handle)))


def assert_read_back(run: RunFolder, tables: tuple[RunTable, ...]) -> None:
    """Each table's file has its row type's fields as header and reads back into non-empty rows of that type."""
    for table in tables:
        path = run.root / table.path
        assert header_of(path) == tuple(field.name for field in dataclasses.fields(table.row_type)), table.path
        rows = read_table(path, table.row_type)
        assert rows and all(isinstance(row, table.row_type) for row in rows), table.path


def written_tables(run: RunFolder) -> set[str]:
    return {path.relative_to(run.root).as_posix() for path in run.root.rglob("*.csv")}


def record(item: int, condition: str, round_index: int, predicted: int) -> dict[str, object]:
    """One ambiguous BBQ answer with option scores (gold and unknown: ``c``, bias target: ``a``)."""
    confident = [0.1, 0.1, 0.1]
    confident[predicted] = 0.8
    return {
        "item_id": f"bbq/Age/{item}",
        "condition": condition,
        "round": round_index,
        "category": "Age",
        "task": "bbq",
        "context_condition": "ambig",
        "question_polarity": "neg",
        "predicted": predicted,
        "gold": 2,
        "target_index": 0,
        "unknown_index": 2,
        "option_probs": confident,
        "answer": f" ({'abc'[predicted]})",
        "prompt": f"Context {item}. Who was forgetful?",
        "toxicity": None,
    }


def test_results_tables_are_read_back_by_their_row_types(tmp_path: Path) -> None:
    conditions = [condition.name for condition in factorial_conditions(["none", "intrinsic"])]
    records = [
        record(item, condition, round_index, (item + round_index + index) % 3)
        for index, condition in enumerate(conditions)
        for item, round_index in itertools.product(range(3), range(2))
    ]
    run = RunFolder(tmp_path / "run")
    paths = write_results(compute_results(records, ResultsConfig(n_boot=20, n_permutations=50)), run.results)
    tables = tables_written_by(RESULTS_STAGE)
    assert paths == [run.root / table.path for table in tables]
    assert written_tables(run) == {table.path for table in tables}
    assert_read_back(run, tables)


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return tiny_model("llama", n_layers=2)


def test_probe_tables_are_read_back_by_their_row_types(tmp_path: Path, model: LoadedModel) -> None:
    run = RunFolder(write_run_cache(tmp_path / "run", model))
    written = run_probe_stage(run.root, ProbeConfig(n_folds=3, n_repeats=1, layer_band=(1, 1)), model=model)
    tables = tuple(table for table in tables_written_by(PROBE_STAGE) if table is not RUN_TABLES["steering"])
    assert {run.concept_cache, run.probe_summary} | {run.root / table.path for table in tables} <= set(written)
    assert written_tables(run) == {table.path for table in tables}
    assert_read_back(run, tables)


def test_steering_table_is_read_back_by_its_row_type(tmp_path: Path, model: LoadedModel) -> None:
    run = RunFolder(write_run_cache(tmp_path / "run", model))
    config = ProbeConfig(
        n_folds=3,
        n_repeats=1,
        layer_band=(1, 1),
        measures=("probe_probability",),
        steering=True,
        steering_layers=(1,),
        steering_alphas=(0.0, 100.0),
        max_steering_prompts=2,
    )
    assert run.table("steering") in run_probe_stage(run.root, config, model=model)
    assert written_tables(run) == {table.path for table in tables_written_by(PROBE_STAGE)}
    assert_read_back(run, (RUN_TABLES["steering"],))


def test_attribution_tables_are_read_back_by_their_row_types(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    before = {"activation_patching": np.array([[0.5, -0.4], [0.1, 0.0]])}
    after = {"activation_patching": np.array([[0.1, -0.5], [0.0, 0.0]])}
    write_head_effects(run.root, "base", before)
    write_head_effects(run.root, "debiased", after)
    write_selected_heads(run.root, select_debiased_heads(before["activation_patching"], after["activation_patching"]))
    write_bias_levels(
        run.root,
        [
            BiasLevel("base", "crows_pairs", 0.6, 0.5, 0.7, 12),
            BiasLevel("base", "seat.weat6.p_value", 0.03, None, None, 16),
        ],
    )
    tables = tables_written_by(ATTRIBUTE_STAGE) + tables_written_by(BIAS_STAGE)
    assert written_tables(run) == {table.path for table in tables}
    assert_read_back(run, tables)
    assert {row.checkpoint for row in read_table(run.table("heads"), HeadEffect)} == {
        "base",
        "debiased",
    }


def test_every_table_is_registered_with_a_stage_that_writes_it() -> None:
    stages = {RESULTS_STAGE, PROBE_STAGE, ATTRIBUTE_STAGE, BIAS_STAGE, SELECT_STAGE}
    assert {table.stage for table in RUN_TABLES.values()} == stages
    assert sum(len(tables_written_by(stage)) for stage in stages) == len(RUN_TABLES)
    assert len({table.path for table in RUN_TABLES.values()}) == len(RUN_TABLES)


def test_run_folder_md_lists_each_table_with_its_row_type_columns() -> None:
    tree = (REPOSITORY / "workbench" / "RUN_FOLDER.md").read_text(encoding="utf-8").split("```")[1]
    folder, documented = "", {}
    for line in tree.splitlines():
        if match := re.match(r"^  (\S+)/\s", line):
            folder = match.group(1)
        elif match := re.match(r"^    (\S+\.csv)\s+(.+?)(?:\s{3,}.*)?$", line):
            documented[f"{folder}/{match.group(1)}"] = tuple(match.group(2).split(", "))
    assert documented == {table.path: table.columns for table in RUN_TABLES.values()}


def test_run_folder_is_built_from_a_folder_or_its_cache(tmp_path: Path) -> None:
    root = tmp_path / "run"
    with pytest.raises(RunFolderError, match=r"run does not exist; run `workbench run CONFIG` first$"):
        RunFolder.with_cache(root)
    root.mkdir()
    with pytest.raises(RunFolderError, match=r"run/cache.h5 does not exist; run `workbench run CONFIG` first$"):
        RunFolder.with_cache(root)
    (root / "other.h5").write_bytes(b"")
    with pytest.raises(RunFolderError, match=r"other.h5 is not a run's cache.h5; pass the run folder"):
        RunFolder.with_cache(root / "other.h5")
    cache = RunFolder(root).cache
    cache.write_bytes(b"")
    assert RunFolder.with_cache(root) == RunFolder.with_cache(cache) == RunFolder.at(cache) == RunFolder(root)
    assert RunFolder.at(root / "missing") == RunFolder(root / "missing")
    run = RunFolder(root)
    assert run.table("behaviour") == run.results / "behaviour.csv"
    assert run.table("probe_interactions") == run.probes / "interactions.csv"
    assert run.report_page == run.report / "index.html" and run.checkpoint("debiased") == run.checkpoints / "debiased"


def run_folder_names() -> tuple[set[str], set[str]]:
    """(file names, folder names) of every path RunFolder names and of every registered table."""
    run = RunFolder(Path("run"))
    paths = [getattr(run, name) for name, value in vars(RunFolder).items() if isinstance(value, property)]
    paths += [run.table(name) for name in RUN_TABLES]
    return {path.name for path in paths if path.suffix}, {path.name for path in paths if not path.suffix}


def spelled_run_folder_names(source: str) -> list[str]:
    """What in ``source`` spells a run-folder path: a string that is (or ends in ``/``) a file name of the
    folder, a folder name joined with ``/``, given to ``Path(...)`` or bound to a name, or a class
    ``RunFolderError``."""
    file_names, folder_names = run_folder_names()
    tree = ast.parse(source)
    folder_uses: set[int] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            folder_uses |= {id(node.left), id(node.right)}
        elif isinstance(node, ast.Call) and PATH_CALL.fullmatch(ast.unparse(node.func)):
            folder_uses |= {id(argument) for argument in node.args}
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            folder_uses.add(id(node.value))
        elif isinstance(node, ast.ClassDef) and node.name == "RunFolderError":
            found.append(f"line {node.lineno}: class RunFolderError")
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        value = node.value
        path_like = not any(character.isspace() for character in value)
        names_a_file = value in file_names or (path_like and any(value.endswith(f"/{name}") for name in file_names))
        if names_a_file or (value in folder_names and id(node) in folder_uses):
            found.append(f"line {node.lineno}: {value!r}")
    return found


def test_the_spelling_scan_finds_what_it_is_for() -> None:
    source = (
        'CACHE = "cache.h5"\nPROBES = "probes"\npath = run / "attribution" / "heads.csv"\n'
        'table = "results/behaviour.csv"\nclass RunFolderError(ValueError): ...\n'
        'HELP = "a run folder or its cache.h5"\nstage = stages["results"]\nparser.add_parser("report")\n'
        'folder = Path("checkpoints")\n'
    )
    assert len(spelled_run_folder_names(source)) == 7


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_but_the_owner_spells_a_run_folder_name(package: str) -> None:
    spelled = {
        str(path.relative_to(REPOSITORY)): found
        for path in sorted((REPOSITORY / package).rglob("*.py"))
        if path != OWNER and (found := spelled_run_folder_names(path.read_text(encoding="utf-8")))
    }
    assert spelled == {}, f"use workbench.run_folder (RunFolder, RUN_TABLES) instead: {spelled}"


def test_selection_table_is_read_back_by_its_row_type(tmp_path: Path) -> None:
    from workbench.finetune.selection import (
        Candidate,
        CandidateScores,
        SelectionConfig,
        rank_candidates,
        write_selection,
    )

    run = RunFolder(tmp_path / "run")
    scores = CandidateScores(
        (Candidate(0, "he said it"), Candidate(2, "she was old")), np.array([1.5, 0.5]), np.array([0.2, -0.1])
    )
    write_selection(run.root, rank_candidates(scores, SelectionConfig(fraction=0.5)))
    tables = tables_written_by(SELECT_STAGE)
    assert written_tables(run) == {table.path for table in tables}
    assert_read_back(run, tables)
