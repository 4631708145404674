"""Models: load any Hugging Face causal LM by spec, and describe its shape."""

from workbench.models.architecture import ModelArchitecture
from workbench.models.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, EmbeddedModel, EmbeddedModelMissing
from workbench.models.loading import LoadedModel, ModelSpecError, load_model, model_cache_dir
from workbench.models.placement import DEVICE_MAP_STRATEGIES, DeviceMapError
from workbench.models.tiny import TINY_FAMILIES, tiny_model

__all__ = [
    "DEFAULT_MODEL",
    "DEVICE_MAP_STRATEGIES",
    "EMBEDDED_MODELS",
    "TINY_FAMILIES",
    "DeviceMapError",
    "EmbeddedModel",
    "EmbeddedModelMissing",
    "LoadedModel",
    "ModelArchitecture",
    "ModelSpecError",
    "load_model",
    "model_cache_dir",
    "tiny_model",
]
