"""Images in the hook layer: the ``vision.hook_out`` site, the image inputs of a batch, and which backends run them.

``vision.hook_out`` is read by a forward hook on the model's projector (``ModuleLayout.vision_out``)
while the vision tower and the projector run on the images alone: the projected image tokens depend
on the pixels only, never on the text around them, so one pass per batch gives every round's value,
whether or not the round's forward re-encodes the image tokens (it does not when the key/value
cache of the previous round is reused).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from workbench.hooks.module_paths import layout_for
from workbench.models.loading import LoadedModel
from workbench.models.vision import ImageInputs, VisionModelError, VisionProcessor

VISION_BACKENDS = ("hf",)
"""Hook backends that run a vision-language model (TransformerBridge and nnsight wrap text-only causal LMs here)."""


def check_vision_backend(model: LoadedModel, backend: str) -> None:
    """Refuse a backend that cannot run ``model`` when it is a vision-language model.

    Raises:
        VisionModelError: ``backend`` is not one of :data:`VISION_BACKENDS` and ``model`` has a vision tower.
    """
    vision_type = model.architecture.vision_type
    if vision_type is not None and backend not in VISION_BACKENDS:
        raise VisionModelError(
            f'backend "{backend}" cannot run the vision-language model {model.model_id} ({vision_type}): '
            'it wraps text-only causal LMs; use [model] backend = "hf"'
        )


def vision_processor(model: LoadedModel) -> VisionProcessor:
    """``model.processor``, or one line saying that ``model`` reads no images.

    Raises:
        VisionModelError: a text-only model.
    """
    if model.processor is None:
        raise VisionModelError(
            f"model {model.model_id} ({model.architecture.model_type}) is text-only and reads no images; "
            "load a vision-language model (llava, idefics3, smolvlm) for image items"
        )
    return model.processor


def image_forward_inputs(
    model: LoadedModel, input_ids: torch.Tensor, images: Sequence[ImageInputs | None]
) -> dict[str, Any]:
    """The forward's image arguments for a batch whose row ``i`` holds ``images[i]``'s token run, or none of it.

    A row's image is passed when its ``input_ids`` hold the image tokens; a row whose image tokens
    are all in a reused key/value cache (none in ``input_ids``) passes none.

    Args:
        input_ids: ``[batch, seq]`` the token ids the forward reads.
        images: per row, its image or ``None``.

    Raises:
        VisionModelError: a row with some but not all of its image's tokens, or image tokens without an image.
    """
    if not any(image is not None for image in images):
        return {}
    processor = vision_processor(model)
    counts = (input_ids == processor.image_token_id).sum(dim=1).tolist()
    passed = []
    for row, (count, image) in enumerate(zip(counts, images)):
        expected = 0 if image is None else image.n_image_tokens
        if count not in (0, expected):
            raise VisionModelError(
                f"row {row} holds {count} image tokens, but its image has {expected}; expand the prompt's one "
                f"{processor.image_token!r} placeholder with VisionProcessor.expand"
            )
        if count and image is not None:
            passed.append(image)
    return processor.model_inputs(passed, model.device, model.dtype)


def read_vision_site(model: LoadedModel, images: Sequence[ImageInputs], dtype: torch.dtype) -> torch.Tensor:
    """``vision.hook_out`` of each image: ``[len(images), d_model]``, the mean of its projected tokens, on the CPU.

    Runs the vision tower and the projector on ``images`` in one batch, reading the projector's output
    (llava ``[images, tokens, d_model]``; idefics3 ``[real tiles, tokens, d_model]``) through a forward hook.
    """
    processor = vision_processor(model)
    arch = model.architecture
    layout = layout_for(arch.model_type, arch.vision_type)
    assert layout.vision_out is not None  # every vision-language layout names its projector
    projector = model.model.get_submodule(layout.vision_out)
    outputs: list[torch.Tensor] = []

    def keep(_module: nn.Module, _args: Any, output: torch.Tensor) -> None:
        outputs.append(output)

    handle = projector.register_forward_hook(keep)
    try:
        with torch.inference_mode():
            image_features: Any = model.model.get_image_features  # typed on each model class only
            image_features(**processor.model_inputs(images, model.device, model.dtype))
    finally:
        handle.remove()
    flat = torch.cat([output.reshape(-1, output.shape[-1]) for output in outputs])  # [image tokens, d_model]
    per_image = torch.split(flat.float(), [image.n_image_tokens for image in images])
    return torch.stack([tokens.mean(dim=0) for tokens in per_image]).to("cpu", dtype)
