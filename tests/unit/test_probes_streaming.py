"""Streamed probes (probes.streaming, probes.streamed_solvers) against the in-memory fits, on caches
written by the real cache writer with many small chunk-rows."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from activations_cache import CacheMetadata, CacheReader, CacheSpec, CacheWriter, DatasetSpec, open_cache
from probes import ProbeConfig, ProbeConfigError, ProbeProvenance, SavedProbe, load_probe, run_probe_stage
from probes.apply import read_probes
from probes.batched_solvers import calibrate_projections
from probes.cache_reading import read_layers, stored_site
from probes.concept_capture import CONCEPT_COLUMNS
from probes.errors import NonFiniteActivationsError, ProbeInputError
from probes.estimators import CCSProbe, LogisticProbe, MeanDifferenceProbe
from probes.evaluation import evaluate_layers
from probes.layerwise import LayerwiseProbe
from probes.streamed_solvers import StreamingSettings, class_mean, layer_bytes, layer_groups, record_sample
from probes.streaming import StreamedActivations, one_intra_op_thread
from probes.training_sets import streamed_training_set
from workbench.models import tiny_model

N, LAYERS, WIDTH, CHUNK_ROWS = 1500, 3, 16, 64
SITE = "hook_resid_post"


def planted(n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Activations [n, LAYERS, WIDTH] with correlated noise, an offset and a label direction per
    layer (not separable: in-memory accuracy about 0.75-0.85), and labels [n] in {0, 1}."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    mixing = rng.normal(size=(LAYERS, WIDTH, WIDTH)) / np.sqrt(WIDTH) * rng.uniform(0.3, 3.0, WIDTH)
    directions = rng.normal(size=(LAYERS, WIDTH))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    states = np.einsum("nlk,lkd->nld", rng.normal(size=(n, LAYERS, WIDTH)), mixing) + 2.0
    states += rng.normal(size=states.shape)
    states += (labels[:, None, None] - 0.5) * directions * np.array([1.5, 2.0, 2.5])[:, None]
    return states.astype(np.float32), labels


def write_cache(path: Path, states: np.ndarray, dtype: str = "float16", compression: str | None = None) -> Path:
    """A cache of ``states`` at layers 0..LAYERS-1 with CHUNK_ROWS records per chunk."""
    itemsize = np.dtype(dtype).itemsize
    spec = CacheSpec(
        datasets=(DatasetSpec("last_prompt", SITE, tuple(range(LAYERS)), (WIDTH,)),),
        dtype=dtype,
        compression=compression,
        chunk_bytes=CHUNK_ROWS * WIDTH * itemsize,
    )
    records = [
        {
            "record_key": f"r{i}",
            "item_id": f"i{i // 3}",
            "condition": "c",
            "round": 0,
            "prompt": "p",
            "answer": "a",
            "n_prompt_tokens": 1,
            "n_answer_tokens": 1,
        }
        for i in range(len(states))
    ]
    with CacheWriter.open(path, spec, CacheMetadata("m", "sha256:m", "tok", {}, 0)) as writer:
        for start in range(0, len(states), 500):
            writer.submit(records[start : start + 500], {("last_prompt", SITE): states[start : start + 500]})
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: on 16-wide layers the threads only add synchronisation, which on a busy
    2-core machine made a streamed fit of this module 40x slower (8.5 s against 0.2 s, measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return planted()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, data: tuple[np.ndarray, np.ndarray]) -> Path:
    return write_cache(tmp_path_factory.mktemp("stream") / "cache.h5", data[0])


@pytest.fixture
def reader(cache: Path) -> Iterator[CacheReader]:
    with open_cache(cache) as opened:
        yield opened


def whole(reader: CacheReader) -> np.ndarray:
    site = stored_site(reader, SITE, "last_prompt")
    return read_layers(reader, site, site.layers)


def view_of(reader: CacheReader, rows: np.ndarray | None = None) -> StreamedActivations:
    return StreamedActivations(reader, stored_site(reader, SITE, "last_prompt"), rows=rows)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def accuracy(probe: LayerwiseProbe, states: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return ((probe.predict_proba(states) > 0.5) == labels[:, None]).mean(axis=0)


def assemble(view: StreamedActivations) -> np.ndarray:
    out = np.full(view.shape, np.nan, dtype=np.float32)
    for block in view.blocks():
        out[block.positions] = block.values.float().numpy().transpose(1, 0, 2)
    return out


def test_blocks_hold_every_record_once_as_read_layers_reads_it(reader: CacheReader) -> None:
    expected = whole(reader)
    view = view_of(reader)
    assert view.n_chunks == -(-N // CHUNK_ROWS) and view.shape == (N, LAYERS, WIDTH)
    np.testing.assert_array_equal(assemble(view), expected)
    rows = np.random.default_rng(1).permutation(N)[:700]
    picked = view_of(reader, rows)
    np.testing.assert_array_equal(assemble(picked), expected[rows])
    np.testing.assert_array_equal(assemble(picked.with_layers([2, 0])), expected[rows][:, [2, 0]])
    order = np.random.default_rng(2).permutation(picked.n_chunks)
    seen = np.concatenate([block.positions for block in picked.blocks(order)])
    assert sorted(seen) == list(range(700))


def test_compressed_cache_streams_through_hdf5_selections(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    path = write_cache(tmp_path / "lzf.h5", data[0][:300], dtype="float32", compression="lzf")
    with open_cache(path) as compressed:
        np.testing.assert_array_equal(assemble(view_of(compressed).with_layers([1, 2])), data[0][:300, 1:])


def test_streamed_view_refuses_repeated_rows_and_missing_layers(reader: CacheReader) -> None:
    with pytest.raises(ProbeInputError, match="repeats rows"):
        view_of(reader, np.array([1, 1]))
    with pytest.raises(ProbeInputError, match=r"layer\(s\) \[7\]"):
        view_of(reader).with_layers([7])


def test_mean_difference_streamed_equals_in_memory(reader: CacheReader, data: tuple[np.ndarray, np.ndarray]) -> None:
    states, labels = whole(reader), data[1]
    in_memory = LayerwiseProbe(MeanDifferenceProbe(device="cpu")).fit(states, labels)
    streamed = LayerwiseProbe(MeanDifferenceProbe(device="cpu")).fit(view_of(reader), labels)
    # The sample (8192 rows) holds every record: the streamed fit is the in-memory one at float32 precision.
    np.testing.assert_allclose(streamed.coef_, in_memory.coef_, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(streamed.intercept_, in_memory.intercept_, rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(streamed.predict_proba(view_of(reader)), in_memory.predict_proba(states), atol=1e-5)

    # Platt scaling on half the records: the direction stays exact, the two scaling parameters are
    # estimated (here about 1 record in 1500 moves per 0.1 point; the benchmark measures 8192 of 100,000).
    sampled = LayerwiseProbe(MeanDifferenceProbe(device="cpu"), StreamingSettings(sample_rows=750)).fit(
        view_of(reader), labels
    )
    assert cosines(sampled.coef_, in_memory.coef_).min() > 1 - 1e-6
    np.testing.assert_allclose(np.linalg.norm(sampled.coef_, axis=1), np.linalg.norm(in_memory.coef_, axis=1), rtol=0.1)
    assert np.abs(accuracy(sampled, states, labels) - accuracy(in_memory, states, labels)).max() <= 0.01


@pytest.mark.parametrize("permuted", [False, True])
def test_mean_difference_platt_scales_on_the_sampled_records(
    reader: CacheReader, data: tuple[np.ndarray, np.ndarray], permuted: bool
) -> None:
    # The sample's records are copied straight into it (a view in file order) or scattered (rows in
    # another order); either way the Platt scaling is the in-memory one on exactly those records.
    rows = np.random.default_rng(5).permutation(N)[:1200] if permuted else None
    states = whole(reader) if rows is None else whole(reader)[rows]
    labels = data[1] if rows is None else data[1][rows]
    settings = StreamingSettings(sample_rows=400, seed=3)
    streamed = LayerwiseProbe(MeanDifferenceProbe(device="cpu"), settings).fit(view_of(reader, rows), labels)
    features = torch.from_numpy(np.ascontiguousarray(states.transpose(1, 0, 2)))
    positive = torch.from_numpy(labels == 1)
    directions = features[:, positive].mean(dim=1) - features[:, ~positive].mean(dim=1)
    sampled = record_sample(len(labels), settings)
    expected = calibrate_projections(features[:, sampled], directions, torch.from_numpy(labels[sampled]).float())
    np.testing.assert_allclose(streamed.coef_, expected.coef.double().numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(streamed.intercept_, expected.intercept.double().numpy(), rtol=1e-4, atol=1e-5)


def test_passes_run_on_one_intra_op_thread_and_restore_the_callers() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="inside"), one_intra_op_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_logistic_streamed_agrees_with_newton(reader: CacheReader, data: tuple[np.ndarray, np.ndarray]) -> None:
    states, labels = whole(reader), data[1]
    in_memory = LayerwiseProbe(LogisticProbe(device="cpu")).fit(states, labels)
    settings = StreamingSettings()
    streamed = LayerwiseProbe(LogisticProbe(device="cpu"), settings).fit(view_of(reader), labels)
    assert cosines(streamed.coef_, in_memory.coef_).min() > 0.999
    assert np.abs(accuracy(streamed, states, labels) - accuracy(in_memory, states, labels)).max() <= 0.005
    assert list(streamed.n_iter_) == [1 + settings.epochs] * LAYERS
    again = LayerwiseProbe(LogisticProbe(device="cpu"), settings).fit(view_of(reader), labels)
    np.testing.assert_array_equal(again.coef_, streamed.coef_)  # fixed seed: deterministic


def test_layer_groups_follow_the_budget_and_do_not_change_the_fit(
    reader: CacheReader, data: tuple[np.ndarray, np.ndarray]
) -> None:
    view = view_of(reader)
    one_layer = layer_bytes(view, StreamingSettings(), 1, logistic=True)
    tight = StreamingSettings(memory_budget_mb=1.5 * one_layer / 2**20)
    assert layer_groups(view, one_layer, tight) == [(0,), (1,), (2,)]
    assert layer_groups(view, one_layer, StreamingSettings()) == [(0, 1, 2)]
    grouped = LayerwiseProbe(LogisticProbe(device="cpu"), tight).fit(view, data[1])
    together = LayerwiseProbe(LogisticProbe(device="cpu"), StreamingSettings()).fit(view, data[1])
    np.testing.assert_allclose(grouped.coef_, together.coef_, rtol=1e-5, atol=1e-7)


def test_streamed_evaluation_scores_as_in_memory(reader: CacheReader, data: tuple[np.ndarray, np.ndarray]) -> None:
    states, labels = whole(reader), data[1]
    groups = np.arange(N) // 3
    arguments: dict[str, Any] = {"layers": (0, 1, 2), "n_folds": 3, "n_repeats": 1, "seed": 0}
    in_memory = evaluate_layers(states, labels, groups, MeanDifferenceProbe(device="cpu"), **arguments)
    streamed = evaluate_layers(view_of(reader), labels, groups, MeanDifferenceProbe(device="cpu"), **arguments)
    for expected, found in zip(in_memory.scores, streamed.scores, strict=True):
        assert (found.layer, found.arm, found.metric) == (expected.layer, expected.arm, expected.metric)
        assert found.estimate.estimate == pytest.approx(expected.estimate.estimate, abs=1e-3)
    logistic = evaluate_layers(
        view_of(reader),
        labels,
        groups,
        LogisticProbe(device="cpu"),
        streaming=StreamingSettings(),
        **arguments,
    )
    newton = evaluate_layers(states, labels, groups, LogisticProbe(device="cpu"), **arguments)
    for layer in (0, 1, 2):
        assert logistic.score(layer, "probe", "accuracy").estimate == pytest.approx(
            newton.score(layer, "probe", "accuracy").estimate, abs=0.005
        )


def test_class_mean_streams_the_concept_side_mean(reader: CacheReader, data: tuple[np.ndarray, np.ndarray]) -> None:
    states, labels = whole(reader), data[1]
    np.testing.assert_allclose(
        class_mean(view_of(reader), labels, StreamingSettings()), states[labels == 1].mean(axis=0), rtol=1e-5
    )


def test_non_finite_values_and_ccs_are_refused(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    states = data[0][:200].copy()
    states[130, 1, 3] = np.inf
    with open_cache(write_cache(tmp_path / "inf.h5", states)) as bad:
        with pytest.raises(
            NonFiniteActivationsError, match=r"layer 1 holds NaN or inf in 1 record\(s\) of cache rows 128-191"
        ):
            LayerwiseProbe(MeanDifferenceProbe(device="cpu")).fit(view_of(bad), data[1][:200])
        with pytest.raises(ProbeInputError, match="CCSProbe has no streamed fit"):
            LayerwiseProbe(CCSProbe(device="cpu")).fit(view_of(bad), data[1][:200])


def test_applying_probes_streams_every_chunk_row(reader: CacheReader) -> None:
    states = whole(reader)
    coef = np.linspace(-1.0, 1.0, WIDTH)
    provenance = ProbeProvenance("logistic", SITE, "last_prompt", 2, "c.h5", "h", {}, {}, [0, 1])
    readings = read_probes(reader, [SavedProbe(coef, 0.25, None, provenance)])
    layer = states[:, 2].astype(np.float64)
    np.testing.assert_allclose(readings.probability[SITE, 2], 1 / (1 + np.exp(-(layer @ coef + 0.25))), rtol=1e-12)
    expected_cosine = layer @ coef / (np.linalg.norm(layer, axis=1) * np.linalg.norm(coef))
    np.testing.assert_allclose(readings.cosine[SITE, 2], expected_cosine, rtol=1e-12)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"memory": "disk"}, "[probe] memory 'disk' is unknown; use one of auto, in-memory, streaming"),
        ({"memory": "streaming", "kind": "ccs"}, '[probe] memory = "streaming" cannot fit kind "ccs"'),
        ({"memory_budget_mb": 0}, "[probe] memory_budget_mb=0 must be positive"),
        ({"memory_budget_mb": "big"}, '[probe] memory_budget_mb = "big" must be a number'),
        ({"streaming_epochs": 0}, "[probe] streaming_epochs=0 must be at least 1"),
        ({"streaming_batch_size": 0}, "[probe] streaming_batch_size=0 must be at least 1"),
    ],
)
def test_memory_options_are_checked_in_one_line(table: dict[str, object], message: str) -> None:
    with pytest.raises(ProbeConfigError) as raised:
        ProbeConfig.from_dict(table)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_auto_streams_above_the_budget_only() -> None:
    config = ProbeConfig(memory_budget_mb=1.0)
    assert not config.streams(2**20) and config.streams(2**20 + 1)
    assert ProbeConfig(memory="streaming").streams(1) and not ProbeConfig(memory="in-memory").streams(2**40)
    assert ProbeConfig().memory == "auto" and ProbeConfig().memory_budget_mb == 512


def write_run(run_dir: Path, width: int, weights_hash: str) -> Path:
    """A run cache of 2 conditions x 4 items x 2 rounds at hook_resid_post layers 0 and 1."""
    run_dir.mkdir(parents=True)
    spec = CacheSpec(datasets=(DatasetSpec("last_prompt", SITE, (0, 1), (width,)),), chunk_bytes=4 * width * 2)
    records = [
        {
            "record_key": f"{condition}|i{item}|{round_index}",
            "item_id": f"i{item}",
            "condition": condition,
            "round": round_index,
            "prompt": "p",
            "answer": "a",
            "n_prompt_tokens": 1,
            "n_answer_tokens": 1,
        }
        for condition in ("instr=none+cot=off+fb=off", "instr=intrinsic+cot=off+fb=off")
        for item in range(4)
        for round_index in range(2)
    ]
    states = np.random.default_rng(3).normal(size=(len(records), 2, width))
    config = {"model": {"spec": "not-loadable-in-tests"}, "protocol": {"history_mode": "clean"}}
    with CacheWriter.open(run_dir / "cache.h5", spec, CacheMetadata("tiny", weights_hash, "tok", config, 0)) as writer:
        writer.submit(records, {("last_prompt", SITE): states})
    return run_dir


def stage_outputs(
    run_dir: Path,
) -> tuple[dict[int, np.ndarray], list[dict[str, str]], list[dict[str, str]], dict[str, Any]]:
    out = run_dir / "probes"
    probes = {
        layer: load_probe(out / f"{SITE}.last_prompt.L{layer}.mean_difference.safetensors").coef for layer in (0, 1)
    }
    tables = []
    for name in ("layer_scores.csv", "morality.csv"):
        with (out / name).open(newline="", encoding="utf-8") as handle:
            tables.append(list(csv.DictReader(handle)))
    return probes, tables[0], tables[1], json.loads((out / "summary.json").read_text())


def test_stage_streams_a_site_above_the_budget_with_the_same_results(tmp_path: Path) -> None:
    model = tiny_model("llama", n_layers=2)
    run_dir = write_run(tmp_path / "run", model.architecture.d_model, model.weights_hash)
    base: dict[str, Any] = {
        "n_folds": 3,
        "n_repeats": 1,
        "layer_band": (0, 1),
        "kind": "mean_difference",
        "measures": ("probe_probability", "cosine"),
    }
    run_probe_stage(run_dir, ProbeConfig(**base), model=model)
    probes, scores, morality, summary = stage_outputs(run_dir)
    assert [site["fit"] for site in summary["probe_sites"]] == ["in-memory"]
    # 60 statements x 2 layers x 64 floats (30 KiB) exceed a 0.01 MiB budget: the stage streams them.
    run_probe_stage(run_dir, ProbeConfig(**base, memory_budget_mb=0.01))
    streamed, streamed_scores, streamed_morality, streamed_summary = stage_outputs(run_dir)
    assert [site["fit"] for site in streamed_summary["probe_sites"]] == ["streamed"]
    for layer in (0, 1):
        # float32 sums in another order: agreement to a few float32 roundings of the largest weight
        scale = float(np.abs(probes[layer]).max())
        np.testing.assert_allclose(streamed[layer], probes[layer], rtol=1e-4, atol=1e-5 * scale)
    for expected, found in zip(scores + morality, streamed_scores + streamed_morality, strict=True):
        assert {k: v for k, v in found.items() if k not in ("value", "ci_low", "ci_high")} == {
            k: v for k, v in expected.items() if k not in ("value", "ci_low", "ci_high")
        }
        assert float(found["value"]) == pytest.approx(float(expected["value"]), abs=1e-5)


def test_ccs_above_the_budget_is_refused_in_one_line(tmp_path: Path) -> None:
    spec = CacheSpec(
        datasets=(DatasetSpec("last_prompt", SITE, (0,), (WIDTH,)),),
        record_columns=CONCEPT_COLUMNS,
        dtype="float32",
    )
    records = [
        {
            "record_key": f"p{k}/{side}",
            "item_id": f"g{k}",
            "condition": "concept",
            "round": 0,
            "prompt": side,
            "answer": "",
            "n_prompt_tokens": 1,
            "n_answer_tokens": 0,
            "label": int(side == "concept"),
            "group_id": f"g{k}",
            "text": side,
        }
        for k in range(4)
        for side in ("concept", "contrast")
    ]
    with CacheWriter.open(tmp_path / "concepts.h5", spec, CacheMetadata("m", "sha256:m", "tok", {}, 0)) as writer:
        writer.submit(records, {("last_prompt", SITE): np.ones((8, 1, WIDTH), dtype=np.float32)})
    with open_cache(tmp_path / "concepts.h5") as concepts:
        site = stored_site(concepts, SITE, "last_prompt")
        ids = [str(key) for key in concepts.records["record_key"]]
        with pytest.raises(ProbeConfigError, match=r'kind "ccs" fits contrast pairs in memory only, but 8 statements'):
            streamed_training_set(concepts, site, ids, "ccs")
        data = streamed_training_set(concepts, site, ids, "logistic")
        assert isinstance(data.features, StreamedActivations) and list(data.labels) == [1, 0] * 4
