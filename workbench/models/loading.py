"""Load any Hugging Face causal LM by spec: embedded name, ``.gguf`` file, local directory, hub id.

The first load of a GGUF file dequantizes it once and stores a safetensors copy (with the chat
template) in the model cache folder; later loads read that copy in a few seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from workbench.models.architecture import ModelArchitecture
from workbench.models.embedded import EMBEDDED_MODELS, file_sha256

MODEL_CACHE_ENV = "WORKBENCH_MODEL_CACHE"
PROVENANCE_FILE = "workbench-provenance.json"


class ModelSpecError(ValueError):
    """A model spec that names nothing loadable."""


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
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: str
    model_id: str
    source: str
    weights_hash: str
    architecture: ModelArchitecture

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

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
        }


def model_cache_dir() -> Path:
    """Where converted models live: ``$WORKBENCH_MODEL_CACHE`` or the platform cache dir."""
    override = os.environ.get(MODEL_CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("workbench")) / "models"


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


def load_model(
    spec: str,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM by spec.

    Args:
        spec: an embedded name (``workbench models``), a path to a ``.gguf`` file, a local
            directory with ``config.json``, or a Hugging Face hub id.
        device: ``"auto"`` (GPU when present), or any torch device string.
        dtype: ``"auto"`` (bf16 on GPU, fp32 on CPU) or a torch dtype name.
        attn_implementation: ``"sdpa"`` (default of transformers), ``"eager"``, ...
        trust_remote_code: passed to transformers; off unless the user asks.

    Raises:
        ModelSpecError: when the spec names nothing loadable (the message says what was tried).
    """
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    if spec in EMBEDDED_MODELS:
        embedded = EMBEDDED_MODELS[spec]
        directory = _converted_gguf(embedded.gguf_path(model_cache_dir() / "gguf"), name=spec)
        model_id, source = embedded.hub_id, "embedded"
    elif spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelSpecError(f"GGUF file {path} does not exist; check the path")
        directory = _converted_gguf(path, name=path.stem)
        model_id, source = str(path.resolve()), "gguf"
    elif Path(spec).expanduser().is_dir():
        directory = Path(spec).expanduser()
        if not (directory / "config.json").is_file():
            raise ModelSpecError(f"{directory} has no config.json; point at a saved Hugging Face model directory")
        model_id, source = str(directory.resolve()), "local"
    else:
        directory, model_id, source = None, spec, "hub"

    location = str(directory) if directory is not None else spec
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            location,
            dtype=resolved_dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
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
    model.to(resolved_device).eval()
    prepare_tokenizer(tokenizer)
    weights_hash = _weights_hash(directory, model)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        model_id=model_id,
        source=source,
        weights_hash=weights_hash,
        architecture=ModelArchitecture.from_config(model.config),
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
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
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


def _weights_hash(directory: Path | None, model: PreTrainedModel) -> str:
    if directory is None:
        revision = getattr(model.config, "_commit_hash", None)
        return f"hub-revision:{revision}" if revision else "hub-revision:unknown"
    provenance = directory / PROVENANCE_FILE
    if provenance.is_file():
        return "sha256:" + json.loads(provenance.read_text())["gguf_sha256"]
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    return "sha256:" + _combined_sha256(files)


def _combined_sha256(files: list[Path]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()
