"""Load any Hugging Face causal LM by spec: embedded name, ``.gguf`` file, local directory, hub id.

A vision-language model (a config with a ``vision_config`` of a type in
:data:`workbench.models.vision.VISION_LANGUAGE_TYPES`, e.g. ``llava-hf/llava-1.5-7b-hf`` or
``HuggingFaceTB/SmolVLM-256M-Instruct``) loads as its image-text-to-text class with its image
processor and chat template (:class:`workbench.models.vision.VisionProcessor`).

A spec is resolved first (:func:`resolve_model_spec`, no weights read, a hub id answered in
seconds even offline), the device checked (:func:`check_device`), and only then is the model
loaded. The first load of a GGUF file dequantizes it once and stores a safetensors copy (with the
chat template) in the model cache folder; later loads read that copy in a few seconds.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from workbench.models.architecture import ModelArchitecture
from workbench.models.embedded import EMBEDDED_MODELS, file_sha256
from workbench.models.placement import DeviceMap, DeviceMapError, plan_device_map
from workbench.models.vision import VisionProcessor, load_vision_processor, vision_type

MODEL_CACHE_ENV = "WORKBENCH_MODEL_CACHE"
PROVENANCE_FILE = "workbench-provenance.json"


class ModelSpecError(ValueError):
    """A model spec that names nothing loadable, or weights that are not the expected ones."""


class DeviceError(ValueError):
    """A device this machine does not have."""


HUB_TIMEOUT_S = 10.0
"""Seconds one hub look-up of :func:`resolve_model_spec` may take before the spec is refused."""

ModelSource = Literal["embedded", "gguf", "local", "hub"]


@dataclass(frozen=True)
class ModelLocation:
    """Where a spec's weights are, found without loading them.

    Attributes:
        spec: the spec as the user gave it.
        source: ``"embedded"``, ``"gguf"``, ``"local"`` or ``"hub"``.
        model_id: the canonical name recorded in caches (hub id when known).
        path: the GGUF file (embedded, gguf), the model directory (local), or ``None`` (hub).
    """

    spec: str
    source: ModelSource
    model_id: str
    path: Path | None

    def weights_hash(self) -> str | None:
        """The weights hash a load would record, computed from the files alone (no code runs).

        ``None`` for a hub id, whose hash (the revision) is known only after download.
        """
        if self.path is None:
            return None
        if self.source in ("embedded", "gguf"):
            return "sha256:" + file_sha256(self.path)
        return _directory_weights_hash(self.path)

    def read_config(self) -> PretrainedConfig | None:
        """The model's configuration, read without weights or downloads (no code runs).

        ``None`` where it is not on this machine as a ``config.json``: a GGUF file (embedded or not;
        its configuration comes with the conversion), a hub id not in the local Hugging Face cache,
        or a configuration transformers cannot read without the repository's own code.
        """
        if self.source in ("embedded", "gguf"):
            return None
        if self.source == "hub":
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(self.spec, "config.json")
            if not isinstance(cached, str):
                return None
            directory = Path(cached).parent
        else:
            assert self.path is not None  # a local directory
            directory = self.path
        try:
            config: PretrainedConfig = AutoConfig.from_pretrained(directory)
        except (OSError, ValueError):
            return None
        return config


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and the facts the workbench records about it.

    Attributes:
        model: the Hugging Face model, in eval mode.
        tokenizer: its tokenizer, with a pad token set.
        spec: the spec as the user gave it.
        model_id: the canonical name recorded in caches (hub id when known).
        source: ``"embedded"``, ``"gguf"``, ``"local"``, ``"hub"`` or ``"in-memory"``.
        weights_hash: a content hash of the weights (``sha256:...``) or the hub revision.
        architecture: layer/head/width facts.
        device_map: module -> device of a model placed by a device map (accelerate moves each
            module's inputs to its device); ``None`` when the whole model sits on ``device``.
        processor: a vision-language model's image processor and chat template; ``None`` for a text-only model.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: str
    model_id: str
    source: str
    weights_hash: str
    architecture: ModelArchitecture
    device_map: dict[str, int | str] | None = None
    processor: VisionProcessor | None = None

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the first parameter (the token embedding) that is not offloaded
        (accelerate leaves an offloaded module's parameters on the meta device between forwards)."""
        return next(
            (parameter.device for parameter in self.model.parameters() if parameter.device.type != "meta"),
            torch.device("cpu"),
        )

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def describe(self) -> dict[str, str | int]:
        """Provenance fields written into every cache."""
        return {
            "spec": self.spec,
            "model_id": self.model_id,
            "source": self.source,
            "weights_hash": self.weights_hash,
            "tokenizer": type(self.tokenizer).__name__,
            "tokenizer_name_or_path": str(self.tokenizer.name_or_path),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            **({"device_map": json.dumps(self.device_map)} if self.device_map is not None else {}),
        }


def model_cache_dir() -> Path:
    """Where converted models live: ``$WORKBENCH_MODEL_CACHE`` or the platform cache dir."""
    override = os.environ.get(MODEL_CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("workbench")) / "models"


def check_device(device: str | torch.device | None) -> torch.device:
    """The resolved device, refused in one line when this machine does not have it.

    Raises:
        DeviceError: not a device name, no CUDA / MPS, or a CUDA index past the GPUs present.
    """
    try:
        resolved = resolve_device(device)
    except RuntimeError:
        raise DeviceError(f"device {device!r} is not a device; use auto, cpu, cuda, cuda:<index> or mps") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(
                f'device "{device}": CUDA is not available here (torch {torch.__version__}); '
                'use device = "auto" or "cpu"'
            )
        if resolved.index is not None and resolved.index >= count:
            raise DeviceError(f'device "{device}": this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}')
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f'device "{device}": Apple MPS is not available here; use device = "auto" or "cpu"')
    return resolved


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` picks CUDA, then Apple MPS, then the CPU."""
    if device not in (None, "auto"):
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``"auto"``/``None`` is bfloat16 on a GPU that supports it, else float16 on GPU, float32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in (None, "auto"):
        resolved = getattr(torch, str(dtype), None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use float32, float16, bfloat16 or auto")
        return resolved
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def resolve_model_spec(spec: str) -> ModelLocation:
    """Find what ``spec`` names without loading it: an embedded model, a ``.gguf`` file, a local
    directory, or a hub id that the local Hugging Face cache or the hub knows (one look-up of at
    most :data:`HUB_TIMEOUT_S` seconds, none with ``HF_HUB_OFFLINE=1``).

    Raises:
        ModelSpecError: nothing loadable; the message says what was tried and suggests a close
            embedded name.
        EmbeddedModelMissing: an embedded model whose wheel is not installed (with the command).
    """
    if spec in EMBEDDED_MODELS:
        embedded = EMBEDDED_MODELS[spec]
        return ModelLocation(spec, "embedded", embedded.hub_id, embedded.gguf_path(model_cache_dir() / "gguf"))
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelSpecError(f"GGUF file {path} does not exist; check the path")
        return ModelLocation(spec, "gguf", str(path.resolve()), path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSpecError(f"{path} has no config.json; point at a saved Hugging Face model directory")
        return ModelLocation(spec, "local", str(path.resolve()), path)
    _check_hub_id(spec)
    return ModelLocation(spec, "hub", spec, None)


def _check_hub_id(spec: str) -> None:
    """Refuse ``spec`` unless it is a well-formed hub id that is cached locally or on the hub."""
    from huggingface_hub import constants, model_info, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined, unused-ignore]  # lazy re-export

    close = difflib.get_close_matches(spec, list(EMBEDDED_MODELS), n=1, cutoff=0.8)
    hint = f"did you mean {close[0]!r}? " if close else ""
    tried = f"model {spec!r} is not an embedded model ({', '.join(EMBEDDED_MODELS)}), a .gguf file or a local directory"
    looks_like_path = spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1)
    if looks_like_path:
        raise ModelSpecError(f"{tried}; {hint}no such file or folder")
    try:
        validate_repo_id(spec)
    except HFValidationError:
        raise ModelSpecError(f"{tried}, nor a valid hub id; {hint}check the name or run `workbench models`") from None
    if isinstance(try_to_load_from_cache(spec, "config.json"), str):
        return
    if constants.HF_HUB_OFFLINE:
        raise ModelSpecError(f"{tried}, and HF_HUB_OFFLINE is set with no local copy of it; {hint}check the name")
    try:
        model_info(spec, timeout=HUB_TIMEOUT_S)
    except Exception as error:  # any failure of the look-up: not found, gated, no network, timeout
        raise ModelSpecError(
            f"{tried}, and the hub could not confirm it ({type(error).__name__}); {hint}"
            "check the name, the network, or run `workbench models`"
        ) from None


def load_model(
    spec: str,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    expected_weights_hash: str | None = None,
    device_map: DeviceMap | None = None,
    max_memory: dict[int | str, int | str] | None = None,
) -> LoadedModel:
    """Load a causal LM by spec.

    Args:
        spec: an embedded name (``workbench models``), a path to a ``.gguf`` file, a local
            directory with ``config.json``, or a Hugging Face hub id.
        device: ``"auto"`` (GPU when present), or any torch device string.
        dtype: ``"auto"`` (bf16 on GPU, fp32 on CPU) or a torch dtype name.
        attn_implementation: ``"sdpa"`` (default of transformers), ``"eager"``, ...
        trust_remote_code: passed to transformers; off unless the user asks.
        expected_weights_hash: refuse weights with another hash; for files (embedded, GGUF,
            local directory) this is checked before anything is loaded, for a hub id after.
        device_map: place the model over several devices (:mod:`workbench.models.placement`):
            ``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"`` or module -> device;
            ``device`` must then stay ``"auto"``. ``None``: the whole model on ``device``.
        max_memory: device -> bytes (or ``"20GiB"``) a device-map strategy may use; ``None`` = what is free.

    Raises:
        ModelSpecError: when the spec names nothing loadable (the message says what was tried),
            or the weights are not ``expected_weights_hash``.
        DeviceError: a device this machine does not have.
        DeviceMapError: a device map that is unknown, incomplete or does not fit (before weights are read).
    """
    if device_map is not None and device not in (None, "auto"):
        raise DeviceMapError(
            f'[model] device_map places the model itself; leave [model] device = "auto" (not "{device}") '
            "or remove device_map"
        )
    resolved_device = check_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    found = resolve_model_spec(spec)
    if expected_weights_hash is not None and found.path is not None:
        _check_weights(found, found.weights_hash(), expected_weights_hash)
    model_id, source = found.model_id, found.source
    if found.source in ("embedded", "gguf"):
        assert found.path is not None
        directory: Path | None = _converted_gguf(found.path, name=spec if source == "embedded" else found.path.stem)
    else:
        directory = found.path

    location = str(directory) if directory is not None else spec
    try:
        placement = (
            plan_device_map(
                location, device_map, resolved_dtype, max_memory=max_memory, trust_remote_code=trust_remote_code
            )
            if device_map is not None
            else None
        )
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
        is_vision_language = vision_type(config) is not None
        model_class = AutoModelForImageTextToText if is_vision_language else AutoModelForCausalLM
        processor = load_vision_processor(location, config, tokenizer) if is_vision_language else None
        model = model_class.from_pretrained(
            location,
            dtype=resolved_dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            device_map=placement,
        )
    except OSError as error:
        if source != "hub":
            raise
        embedded_names = ", ".join(EMBEDDED_MODELS)
        raise ModelSpecError(
            f"model {spec!r} is not an embedded model ({embedded_names}), a .gguf file or a local "
            f"directory, and the hub could not provide it ({type(error).__name__}); check the name "
            f"or run `workbench models`"
        ) from None
    if placement is None:
        # PreTrainedModel.to is wrapped with functools.wraps, whose type hides the bound ``self`` from mypy
        model.to(resolved_device)  # type: ignore[arg-type]
    model.eval()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in transformers
    prepare_tokenizer(tokenizer)
    weights_hash = _weights_hash(directory, model)
    if expected_weights_hash is not None:
        _check_weights(found, weights_hash, expected_weights_hash)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        model_id=model_id,
        source=source,
        weights_hash=weights_hash,
        architecture=ModelArchitecture.from_config(model.config),
        device_map=placement,
        processor=processor,
    )


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the tokenizer a pad token (its EOS when it has none) and left padding for generation."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


def _converted_gguf(gguf: Path, name: str) -> Path:
    """Dequantize ``gguf`` once into a safetensors directory in the model cache; return it."""
    digest = file_sha256(gguf)
    target = model_cache_dir() / f"{name}-{digest[:12]}"
    if (target / PROVENANCE_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers keeps a GGUF quantizer attached to already-dense weights, which blocks saving.
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        provenance = {"gguf_file": str(gguf), "gguf_sha256": digest, "converted_by": "workbench"}
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2))
        if target.exists():  # a half-finished earlier conversion without provenance
            shutil.rmtree(target)
        staging.replace(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def _check_weights(found: ModelLocation, actual: str | None, expected: str) -> None:
    if actual is not None and actual != expected:
        raise ModelSpecError(
            f"model {found.spec!r} has weights {actual} but {expected} were expected (the run cache's); "
            "pass the model that wrote the run"
        )


def _weights_hash(directory: Path | None, model: PreTrainedModel) -> str:
    if directory is None:
        revision = getattr(model.config, "_commit_hash", None)
        return f"hub-revision:{revision}" if revision else "hub-revision:unknown"
    return _directory_weights_hash(directory)


def _directory_weights_hash(directory: Path) -> str:
    """``sha256:`` of the GGUF a converted directory came from, else of its weight files."""
    provenance = directory / PROVENANCE_FILE
    if provenance.is_file():
        gguf_sha256: str = json.loads(provenance.read_text())["gguf_sha256"]
        return "sha256:" + gguf_sha256
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    return "sha256:" + _combined_sha256(files)


def _combined_sha256(files: list[Path]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()
