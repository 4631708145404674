"""The capture-correctness oracle: every row of a real cache is its own record's batch-size-1 forward.

Capture tools that read activations inside a serving engine have put rows under the wrong request when
the engine batched, padded, chunked or shared prefixes. The workbench generates first and captures in
its own forward over prompt + answer; this test holds that seam to account for every hook backend and
every generation engine that runs here. Dialogues of two rounds (the second prompt extends the first
prompt and its answer, so the answer round reuses its key/value cache) with prompts of 5 to 300 tokens
are answered in shuffled, ragged batches through :func:`workbench.inference.answering.answer_batch`
(left padding) and, again, captured with right padding (:func:`workbench.hooks.capture_tokens`); both
are written into real caches with the cache writer and read back by record key. Every prompt ends in a
canary token no other prompt has. Then, for every record and dataset:

- the row equals an unpadded batch-size-1 forward of that record (plain PyTorch hooks on the HF model,
  not the hook layer), within float32 precision;
- the row is nearer to its own record's forward than to any other record's (no row sits under another key);
- the engine's answer equals batch-size-1 ``generate``, or differs only at a float tie
  (:mod:`workbench.inference.engine_parity`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from activations_cache import CacheMetadata, CacheSpec, CacheWriter, DatasetSpec, open_cache
from workbench.config import GenerationSettings
from workbench.experiment.records import record_key
from workbench.hooks import capture_tokens, parse_sites
from workbench.hooks.sites import SiteKind
from workbench.inference.answering import DialogueKV, answer_batch
from workbench.inference.engine_parity import first_divergences
from workbench.inference.engines import EngineError, GenerationEngine, build_engine, check_engine_available
from workbench.inference.generation import generate_greedy
from workbench.models import LoadedModel, load_model, tiny_model

LAYERS, HEADS, D_MODEL = 2, 2, 128
VLLM_ARGS = ("--enforce-eager", "--kv-cache-memory-bytes=268435456")
"""No graph capture, and a 256 MiB key/value cache: on the CPU, vLLM otherwise reserves 92 % of the memory."""
SITES = ("blocks.*.hook_resid_post", "blocks.*.attn.hook_z")
POSITIONS = ("last_prompt", "last", "answer_mean")
FIRST_LENGTHS = (5, 23, 61, 140, 219, 299)  # round-0 prompt lengths, canary included
NEW_TOKENS = 6
BATCH = 4
CANARY_BASE = 230  # canary ids 230 .. 241: no prompt body uses them
ENGINES = ("hf", "hf-continuous", "vllm")
CAPTURE_PATHS = {
    "hf-prefill": ("hf", ("last_prompt",)),  # read by hooks on the answer round's own prefill
    "hf": ("hf", POSITIONS),  # the answer positions need the answer: a clean forward over prompt + answer
    "transformer_lens": ("transformer_lens", POSITIONS),
    "nnsight": ("nnsight", POSITIONS),
}


@pytest.fixture(scope="module")
def reference(model: LoadedModel) -> BatchSizeOne:
    return BatchSizeOne(model)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A tiny random Llama with weights (but the norms) scaled by 4, so greedy choices are decisive and
    the rows of different records far apart; saved and loaded back, so that an engine in another
    process (vLLM) reads the very weights the workbench holds. Heads of 64 (vLLM's CPU attention takes 32 up)."""
    built = tiny_model("llama", n_layers=LAYERS, d_model=D_MODEL, n_heads=HEADS, n_kv_heads=1)
    with torch.no_grad():
        for name, parameter in built.model.named_parameters():
            if "norm" not in name:
                parameter.mul_(4.0)
    folder = tmp_path_factory.mktemp("oracle-llama")
    built.model.save_pretrained(folder)
    built.tokenizer.save_pretrained(folder)
    return load_model(str(folder), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def engines(model: LoadedModel) -> Iterator[dict[str, GenerationEngine]]:
    """Each engine built once (a vLLM server starts once), closed after the module."""
    built: dict[str, GenerationEngine] = {}
    yield built
    for engine in built.values():
        engine.close()


def _engine(model: LoadedModel, engines: dict[str, GenerationEngine], name: str) -> GenerationEngine:
    if name not in engines:
        try:
            check_engine_available(name)
        except EngineError as error:
            pytest.skip(f"engine {name} does not run here ({error})")
        settings = GenerationSettings(engine=name, vllm_args=VLLM_ARGS if name == "vllm" else ())  # type: ignore[arg-type]
        engines[name] = build_engine(model, settings, batch_size=BATCH)
    return engines[name]


class Records:
    """The records of a run: key -> prompt ids and answer ids, in the order they were answered."""

    def __init__(self) -> None:
        self.prompts: dict[str, list[int]] = {}
        self.answers: dict[str, list[int]] = {}

    def add(self, key: str, prompt: list[int], answer: list[int]) -> None:
        self.prompts[key], self.answers[key] = prompt, answer

    def row(self, key: str) -> dict[str, Any]:
        prompt, answer = self.prompts[key], self.answers[key]
        condition, item_id, round_index = key.split("|")
        return {
            "record_key": key,
            "item_id": item_id,
            "condition": condition,
            "round": int(round_index),
            "prompt": " ".join(map(str, prompt)),
            "answer": " ".join(map(str, answer)),
            "n_prompt_tokens": len(prompt),
            "n_answer_tokens": len(answer),
        }


def _spec(positions: tuple[str, ...]) -> CacheSpec:
    layers = tuple(range(LAYERS))
    return CacheSpec(
        datasets=tuple(
            DatasetSpec(position=position, site=kind.value, layers=layers, shape=shape)
            for position in positions
            for kind, shape in ((SiteKind.RESID_POST, (D_MODEL,)), (SiteKind.Z, (HEADS, D_MODEL // HEADS)))
        ),
        dtype="float32",
    )


@contextmanager
def _writer(path: Path, positions: tuple[str, ...]) -> Iterator[CacheWriter]:
    metadata = CacheMetadata(model_id="tiny", weights_hash="none", tokenizer="tiny", config={}, seed=0)
    with CacheWriter.open(path, _spec(positions), metadata) as writer:
        yield writer


def _submit(writer: CacheWriter, records: Records, keys: list[str], activations: dict[Any, torch.Tensor]) -> None:
    writer.submit(
        [records.row(key) for key in keys],
        {(position, kind.value): value.numpy() for (kind, position), value in activations.items()},
    )


def _prompt_body(rng: random.Random, length: int) -> list[int]:
    return [rng.randrange(3, CANARY_BASE) for _ in range(length)]


def answer_dialogues(
    model: LoadedModel, backend: str, engine: GenerationEngine, positions: tuple[str, ...], path: Path
) -> Records:
    """Two answer rounds of every dialogue, in shuffled ragged batches, written into a cache at ``path``."""
    rng = random.Random(7)
    sites = parse_sites(list(SITES), LAYERS, HEADS)
    items = [f"item{index}" for index in range(len(FIRST_LENGTHS))]
    prompts = {
        item: [*_prompt_body(rng, length - 1), CANARY_BASE + 2 * index]
        for index, (item, length) in enumerate(zip(items, FIRST_LENGTHS))
    }
    caches: dict[str, DialogueKV] = {}
    records = Records()
    with _writer(path, positions) as writer:
        for round_index in range(2):
            order = list(items)
            rng.shuffle(order)
            for start in range(0, len(order), BATCH):
                batch = order[start : start + BATCH]
                answered = answer_batch(
                    model,
                    [prompts[item] for item in batch],
                    [],
                    sites,
                    positions,
                    NEW_TOKENS,
                    backend=backend,
                    previous=[caches.get(item) for item in batch],
                    keep_caches=True,
                    engine=engine,
                )
                caches.update(zip(batch, answered.caches))
                keys = [record_key("oracle", item, round_index) for item in batch]
                for key, item, answer in zip(keys, batch, answered.answer_ids):
                    records.add(key, prompts[item], answer)
                _submit(writer, records, keys, answered.activations)
            for index, item in enumerate(items):  # the next round: the transcript grows, a new canary ends it
                key = record_key("oracle", item, round_index)
                feedback = [*_prompt_body(rng, rng.randrange(2, 9)), CANARY_BASE + 2 * index + 1]
                prompts[item] = records.prompts[key] + records.answers[key] + feedback
    return records


def capture_right_padded(
    model: LoadedModel, backend: str, records: Records, positions: tuple[str, ...], path: Path
) -> None:
    """The same records captured again with right padding, in another shuffled order, into ``path``."""
    keys = list(records.prompts)
    random.Random(11).shuffle(keys)
    with _writer(path, positions) as writer:
        for start in range(0, len(keys), BATCH):
            batch = keys[start : start + BATCH]
            captured = capture_tokens(
                model,
                [records.prompts[key] + records.answers[key] for key in batch],
                [len(records.prompts[key]) for key in batch],
                sites=list(SITES),
                positions=positions,
                backend=backend,
                batch_size=BATCH,
                padding_side="right",
            )
            _submit(writer, records, batch, dict(captured.stacked))


class BatchSizeOne:
    """The references, computed once per record for every capture path and engine: batch-size-1
    ``generate`` answers, and rows of one unpadded forward with plain forward hooks."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.answers: dict[tuple[int, ...], list[int]] = {}
        self.rows: dict[tuple[tuple[int, ...], tuple[int, ...]], dict[tuple[str, str], np.ndarray]] = {}

    def answer(self, prompt: list[int]) -> list[int]:
        key = tuple(prompt)
        if key not in self.answers:
            self.answers[key] = generate_greedy(self.model, [prompt], NEW_TOKENS).answer_ids[0]
        return self.answers[key]

    def record_rows(self, prompt: list[int], answer: list[int]) -> dict[tuple[str, str], np.ndarray]:
        key = (tuple(prompt), tuple(answer))
        if key not in self.rows:
            self.rows[key] = forward_rows(self.model, prompt, answer)
        return self.rows[key]


def forward_rows(model: LoadedModel, prompt: list[int], answer: list[int]) -> dict[tuple[str, str], np.ndarray]:
    """``(position, site) -> [layers, *shape]`` from one unpadded forward with plain forward hooks:
    each decoder layer's output (``hook_resid_post``) and the input of its ``o_proj`` (``attn.hook_z``)."""
    seen: dict[tuple[str, int], torch.Tensor] = {}
    handles = []
    for layer, block in enumerate(model.model.model.layers):
        handles.append(
            block.register_forward_hook(
                lambda _m, _i, output, layer=layer: seen.__setitem__(
                    ("resid", layer), output[0] if isinstance(output, tuple) else output
                )
            )
        )
        handles.append(
            block.self_attn.o_proj.register_forward_pre_hook(
                lambda _m, inputs, layer=layer: seen.__setitem__(("z", layer), inputs[0])
            )
        )
    try:
        with torch.no_grad():
            model.model(input_ids=torch.as_tensor([prompt + answer]), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    start, end = len(prompt), len(prompt) + len(answer)
    rows = {}
    for site, name, shape in (("hook_resid_post", "resid", (D_MODEL,)), ("attn.hook_z", "z", (HEADS, -1))):
        per_layer = torch.stack([seen[(name, layer)][0] for layer in range(LAYERS)])  # [layers, seq, width]
        picks = {"last_prompt": per_layer[:, start - 1], "last": per_layer[:, end - 1]}
        picks["answer_mean"] = per_layer[:, start:end].mean(dim=1)
        for position, value in picks.items():
            rows[(position, site)] = value.reshape(LAYERS, *shape).double().numpy()
    return rows


def check_cache(path: Path, records: Records, references: dict[str, dict[tuple[str, str], np.ndarray]]) -> None:
    """Every row of the cache at ``path`` is its own record's reference, and nearest to it."""
    keys = list(records.prompts)
    with open_cache(path) as reader:
        stored_keys = list(reader.records["record_key"])
        assert sorted(stored_keys) == sorted(keys)
        for position, site in reader.sites():
            stored = np.stack([reader.read(site, layer, position) for layer in reader.layers(site, position)], axis=1)
            wanted = np.stack([references[key][(position, site)] for key in stored_keys])
            scale = np.abs(wanted).max()
            np.testing.assert_allclose(stored, wanted, rtol=1e-5, atol=1e-5 * scale, err_msg=f"{position}/{site}")
            distances = ((stored.reshape(len(keys), 1, -1) - wanted.reshape(1, len(keys), -1)) ** 2).sum(axis=-1)
            assert (distances.argmin(axis=1) == np.arange(len(keys))).all(), (
                f"{position}/{site}: a row under another key"
            )


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("capture_path", list(CAPTURE_PATHS))
def test_every_row_is_its_own_records_batch_size_one_forward(
    model: LoadedModel,
    reference: BatchSizeOne,
    engines: dict[str, GenerationEngine],
    capture_path: str,
    engine_name: str,
    tmp_path: Path,
) -> None:
    backend, positions = CAPTURE_PATHS[capture_path]
    engine = _engine(model, engines, engine_name)
    records = answer_dialogues(model, backend, engine, positions, tmp_path / "answered.h5")
    keys = list(records.prompts)
    assert min(len(records.prompts[key]) for key in keys) == 5 and max(map(len, records.prompts.values())) >= 300
    assert all(records.answers[key] for key in keys), "answer_mean needs an answer in every record"
    prompts = [records.prompts[key] for key in keys]
    reference_answers = [reference.answer(ids) for ids in prompts]
    divergences = first_divergences(model, prompts, reference_answers, [records.answers[key] for key in keys])
    assert [divergence for divergence in divergences if not divergence.tie] == []
    references = {key: reference.record_rows(records.prompts[key], records.answers[key]) for key in keys}
    check_cache(tmp_path / "answered.h5", records, references)
    capture_right_padded(model, backend, records, positions, tmp_path / "right-padded.h5")
    check_cache(tmp_path / "right-padded.h5", records, references)
