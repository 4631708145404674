"""Vision-language models: which configs have an image tower, and how an image reaches the prompt.

Two families are known, each a transformers image-text model whose language model is a decoder the
hook layer already maps (:mod:`workbench.hooks.module_paths`):

- ``"llava"`` (LLaVA-1.5 style, ``LlavaForConditionalGeneration``): a CLIP vision tower, a
  two-layer projector, one image token per patch;
- ``"idefics3"`` / ``"smolvlm"`` (Idefics3 and SmolVLM, ``Idefics3ForConditionalGeneration``): a
  SigLIP-style vision model, a pixel-shuffle connector, image tiles framed by marker tokens.

The prompt the protocol builds holds one image placeholder (the processor's image token, e.g.
``<image>``) in its first user turn; :meth:`VisionProcessor.expand` replaces it with the image's
full token run just before tokenization, as the family's transformers processor does, and
:meth:`VisionProcessor.model_inputs` gives the pixel tensors the model's forward takes. The
transformers processor classes themselves are not used: building one imports every tokenizer
backend the processor could take (``mistral_common`` among them), and their default image
processors need torchvision. The image processors used are the Pillow ones
(``CLIPImageProcessorPil``, ``Idefics3ImageProcessorPil``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from transformers import PretrainedConfig, PreTrainedTokenizerBase
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.utils.hub import cached_file

VisionFamily = Literal["llava", "idefics3"]
VISION_LANGUAGE_TYPES: dict[str, VisionFamily] = {"llava": "llava", "idefics3": "idefics3", "smolvlm": "idefics3"}
"""``config.model_type`` of each supported vision-language model -> its family."""

IMAGE_PROCESSOR_FILE = "preprocessor_config.json"
"""Where a saved model keeps its image processor's configuration."""
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
"""Where a saved processor keeps its chat template (transformers 5 writes the first; older repositories the second)."""

_IDEFICS3_FAKE_TOKEN = "<fake_token_around_image>"
_IDEFICS3_GLOBAL_TAG = "<global-img>"


class VisionModelError(ValueError):
    """A vision-language model that cannot be set up, or an image input that does not fit it."""


def vision_type(config: PretrainedConfig) -> str | None:
    """The ``model_type`` of a vision-language config (one with a ``vision_config``), else ``None``.

    Raises:
        VisionModelError: a config with a vision tower of a type this workbench does not know.
    """
    if getattr(config, "vision_config", None) is None:
        return None
    if config.model_type not in VISION_LANGUAGE_TYPES:
        raise VisionModelError(
            f"model type {config.model_type!r} has a vision tower the workbench does not know; "
            f"supported vision-language types: {', '.join(VISION_LANGUAGE_TYPES)}"
        )
    return str(config.model_type)


@dataclass(frozen=True)
class ImageInputs:
    """One image as its model reads it.

    Attributes:
        pixel_values: ``[1, 3, H, W]`` (llava) or ``[1, tiles, 3, H, W]`` (idefics3), float32, the
            image processor's normalised pixels.
        pixel_attention_mask: ``[1, tiles, H, W]`` (idefics3: 1 on real pixels), ``None`` for llava.
        token_run: the text that stands for the image in the prompt (its image tokens, framed by
            the family's marker tokens); :meth:`VisionProcessor.expand` puts it in place of the placeholder.
        n_image_tokens: image tokens in ``token_run``: the projected image tokens the model scatters into them.
    """

    pixel_values: torch.Tensor
    pixel_attention_mask: torch.Tensor | None
    token_run: str
    n_image_tokens: int


@dataclass(frozen=True)
class VisionProcessor:
    """What turns an image and a prompt into a vision-language model's inputs (a processor, less its tokenizer).

    Attributes:
        family: ``"llava"`` or ``"idefics3"``.
        image_processor: the family's Pillow image processor.
        image_token: the placeholder of one image in a prompt (also the token repeated per image token).
        image_token_id: its token id (``config.image_token_id``).
        tokens_per_tile: image tokens per image (llava) or per tile (idefics3), read from the model config.
        chat_template: the processor's chat template (message contents as ``[{"type": "image"}, {"type":
            "text", "text": ...}]``), or ``None`` when the model has none (prompts are then joined text).
    """

    family: VisionFamily
    image_processor: CLIPImageProcessorPil | Idefics3ImageProcessorPil
    image_token: str
    image_token_id: int
    tokens_per_tile: int
    chat_template: str | None

    def encode(self, image: Image.Image) -> ImageInputs:
        """``image`` processed for the model (converted to RGB first)."""
        rgb = image.convert("RGB")
        if self.family == "llava":
            pixels = self.image_processor(images=[rgb], return_tensors="pt")["pixel_values"]
            return ImageInputs(pixels.float(), None, self.image_token * self.tokens_per_tile, self.tokens_per_tile)
        # Idefics3's processor takes images per sample and reports the tile grid; the base class's stub knows neither
        processed = self.image_processor(  # type: ignore[call-arg]
            images=[[rgb]],  # type: ignore[arg-type]
            return_tensors="pt",
            return_row_col_info=True,
        )
        rows, cols = int(processed["rows"][0][0]), int(processed["cols"][0][0])
        pixels = processed["pixel_values"].float()  # [1, tiles, 3, H, W]: rows x cols tiles, then the whole image
        return ImageInputs(
            pixels,
            processed["pixel_attention_mask"],
            self._idefics3_run(rows, cols),
            pixels.shape[1] * self.tokens_per_tile,
        )

    def _idefics3_run(self, rows: int, cols: int) -> str:
        """Idefics3's image prompt string (``Idefics3Processor.replace_image_token``): tiles, then the global image."""
        tile = self.image_token * self.tokens_per_tile
        global_image = f"{_IDEFICS3_FAKE_TOKEN}{_IDEFICS3_GLOBAL_TAG}{tile}{_IDEFICS3_FAKE_TOKEN}"
        if rows == 0 and cols == 0:
            return global_image
        grid = "".join(
            "".join(f"{_IDEFICS3_FAKE_TOKEN}<row_{row + 1}_col_{col + 1}>{tile}" for col in range(cols)) + "\n"
            for row in range(rows)
        )
        return f"{grid}\n{global_image}"

    def expand(self, text: str, image: ImageInputs) -> str:
        """``text`` with its one image placeholder replaced by ``image``'s token run.

        Raises:
            VisionModelError: ``text`` holds no placeholder, or more than one.
        """
        count = text.count(self.image_token)
        if count != 1:
            raise VisionModelError(
                f"a prompt of an image item holds {count} image placeholders {self.image_token!r}; "
                "it needs exactly one (in its first user turn)"
            )
        return text.replace(self.image_token, image.token_run, 1)

    def model_inputs(self, images: Sequence[ImageInputs], device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        """The forward's image arguments for ``images``, in the order their token runs appear in the batch.

        llava: ``pixel_values [n, 3, H, W]``; idefics3: ``pixel_values [n, tiles, 3, H, W]`` with
        ``pixel_attention_mask [n, tiles, H, W]``, images with fewer tiles padded with all-zero tiles
        (which the model drops). Empty when ``images`` is.
        """
        if not images:
            return {}
        if self.family == "llava":
            return {"pixel_values": torch.cat([image.pixel_values for image in images]).to(device, dtype)}
        tiles = max(image.pixel_values.shape[1] for image in images)
        pixels, masks = [], []
        for image in images:
            missing = tiles - image.pixel_values.shape[1]
            assert image.pixel_attention_mask is not None  # always set for the idefics3 family
            pixels.append(
                torch.cat(
                    [image.pixel_values, image.pixel_values.new_zeros((1, missing, *image.pixel_values.shape[2:]))], 1
                )
            )
            masks.append(
                torch.cat(
                    [
                        image.pixel_attention_mask,
                        image.pixel_attention_mask.new_zeros((1, missing, *image.pixel_attention_mask.shape[2:])),
                    ],
                    1,
                )
            )
        return {
            "pixel_values": torch.cat(pixels).to(device, dtype),
            "pixel_attention_mask": torch.cat(masks).to(device),
        }

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the image processor's configuration and the chat template into ``directory``."""
        self.image_processor.save_pretrained(str(directory))
        if self.chat_template is not None:
            (Path(directory) / CHAT_TEMPLATE_FILES[0]).write_text(self.chat_template)


def build_vision_processor(
    config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerBase,
    image_processor: CLIPImageProcessorPil | Idefics3ImageProcessorPil,
    chat_template: str | None,
) -> VisionProcessor:
    """The :class:`VisionProcessor` of a vision-language ``config`` with its tokenizer and image processor.

    Raises:
        VisionModelError: the tokenizer lacks the model's image token, or the image processor is of another family.
    """
    family = VISION_LANGUAGE_TYPES[str(vision_type(config))]
    image_token_id = int(config.image_token_id)
    image_token = tokenizer.convert_ids_to_tokens(image_token_id)
    if not isinstance(image_token, str) or tokenizer.convert_tokens_to_ids(image_token) != image_token_id:
        raise VisionModelError(
            f"the tokenizer has no token for the model's image_token_id {image_token_id}; "
            "load the tokenizer saved with the model"
        )
    vision = config.vision_config
    if family == "llava":
        if not isinstance(image_processor, CLIPImageProcessorPil):
            raise VisionModelError(f"a llava model needs a CLIP image processor, not {type(image_processor).__name__}")
        crop = image_processor.crop_size or {"height": vision.image_size, "width": vision.image_size}
        patches = (crop["height"] // vision.patch_size) * (crop["width"] // vision.patch_size)
        has_class_token = vision.model_type == "clip_vision_model"
        dropped = 1 if config.vision_feature_select_strategy == "default" else 0
        tokens = patches + (1 if has_class_token else 0) - dropped
    else:
        if not isinstance(image_processor, Idefics3ImageProcessorPil):
            raise VisionModelError(
                f"an idefics3 model needs an Idefics3 image processor, not {type(image_processor).__name__}"
            )
        tokens = int((vision.image_size // vision.patch_size) ** 2 / (config.scale_factor**2))
    return VisionProcessor(family, image_processor, image_token, image_token_id, tokens, chat_template)


def load_vision_processor(
    location: str, config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase
) -> VisionProcessor:
    """The image processor and chat template saved with a model (a local directory or a hub id).

    Raises:
        VisionModelError: a local directory without the image processor's configuration.
    """
    family = VISION_LANGUAGE_TYPES[str(vision_type(config))]
    processor_class = CLIPImageProcessorPil if family == "llava" else Idefics3ImageProcessorPil
    if Path(location).is_dir() and not (Path(location) / IMAGE_PROCESSOR_FILE).is_file():
        raise VisionModelError(
            f"vision-language model {location} has no {IMAGE_PROCESSOR_FILE} (its image processor); save it "
            "next to the weights (VisionProcessor.save_pretrained, or the processor the model came with)"
        )
    image_processor = processor_class.from_pretrained(location)
    return build_vision_processor(config, tokenizer, image_processor, _saved_chat_template(location, tokenizer))


def _saved_chat_template(location: str, tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The processor's chat template saved with the model, else the tokenizer's, else ``None``."""
    for name in CHAT_TEMPLATE_FILES:
        path = cached_file(location, name, _raise_exceptions_for_missing_entries=False)
        if path is None:
            continue
        text = Path(path).read_text()
        return str(json.loads(text)["chat_template"]) if name.endswith(".json") else text
    template = tokenizer.chat_template
    return template if isinstance(template, str) else None
