"""Models: load any Hugging Face causal LM or LLaVA / Idefics3-style vision-language model by spec; its shape."""

from workbench.models.architecture import ModelArchitecture
from workbench.models.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, EmbeddedModel, EmbeddedModelMissing
from workbench.models.loading import LoadedModel, ModelSpecError, load_model, model_cache_dir
from workbench.models.placement import DEVICE_MAP_STRATEGIES, DeviceMapError
from workbench.models.tiny import TINY_FAMILIES, TINY_VISION_FAMILIES, tiny_model, tiny_vision_model
from workbench.models.vision import VISION_LANGUAGE_TYPES, ImageInputs, VisionModelError, VisionProcessor

__all__ = [
    "DEFAULT_MODEL",
    "DEVICE_MAP_STRATEGIES",
    "EMBEDDED_MODELS",
    "TINY_FAMILIES",
    "TINY_VISION_FAMILIES",
    "VISION_LANGUAGE_TYPES",
    "DeviceMapError",
    "EmbeddedModel",
    "EmbeddedModelMissing",
    "ImageInputs",
    "LoadedModel",
    "ModelArchitecture",
    "ModelSpecError",
    "VisionModelError",
    "VisionProcessor",
    "load_model",
    "model_cache_dir",
    "tiny_model",
    "tiny_vision_model",
]
