"""Whether a run can answer its image items: checked before the model loads where its config is local.

An image item (:mod:`workbench.tasks.image_questions`) needs a vision-language model on a backend
and engine that take pixels, and a protocol that shows the model the image on every turn it answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from workbench.config import ConfigError, RunConfig
from workbench.hooks.sites import SiteKind
from workbench.hooks.vision import VISION_BACKENDS
from workbench.models.loading import ModelLocation
from workbench.models.vision import vision_type as vision_type_of
from workbench.tasks.image_questions import IMAGE_KEY
from workbench.tasks.items import Item


def check_image_run(config: RunConfig, vision_type: str | None, items: Sequence[Item]) -> None:
    """Refuse, in one line, a run whose model and settings cannot answer its image items (or read its image site).

    Needs only the model's vision-language type (``ModelArchitecture.vision_type``, ``None`` for a
    text-only model), so it can run before the model loads.

    Raises:
        ConfigError: a vision-language model on a backend that cannot run it; image items on a text-only
            model; ``vision.hook_out`` without image items; an engine or protocol setting that would
            answer image items without their image.
    """
    if vision_type is not None and config.model.backend not in VISION_BACKENDS:
        raise ConfigError(
            f'[model] backend = "{config.model.backend}" cannot run the vision-language model {config.model.spec!r} '
            f'({vision_type}): it wraps text-only causal LMs; set backend = "hf"'
        )
    with_images = [item for item in items if IMAGE_KEY in item.metadata]
    sites = [site.strip() for site in config.capture.sites]
    if SiteKind.VISION_OUT.value in sites and (vision_type is None or len(with_images) != len(items)):
        raise ConfigError(
            f"[capture] sites: {SiteKind.VISION_OUT.value} reads each item's image; it needs a vision-language model "
            "and a task whose every item has an image (image-questions), or remove the site"
        )
    if not with_images:
        return
    task = config.task.name
    if vision_type is None:
        raise ConfigError(
            f"[task] {task}: its items carry images, and model {config.model.spec!r} is text-only; "
            "use a vision-language model (llava, idefics3, smolvlm) in [model] spec"
        )
    settings = config.protocol
    refusals = {
        "[generation] engine": (config.generation.engine != "hf", f'"{config.generation.engine}"', '"hf"'),
        "[protocol] uncertainty_samples": (settings.uncertainty_samples > 0, settings.uncertainty_samples, "0"),
        "[protocol] self_distinguish": (settings.self_distinguish, "true", "false"),
        "[protocol] demonstrations": (any(settings.demonstrations), list(settings.demonstrations), "[0]"),
        "[protocol] critic": (
            settings.critic != "oracle" and any(settings.feedback),
            f'"{settings.critic}"',
            '"oracle"',
        ),
    }
    for key, (refused, value, fix) in refusals.items():
        if refused:
            raise ConfigError(
                f"{key} = {value} would answer the image items of [task] {task} without their image; "
                f"set {key.split('] ')[1]} = {fix} for image items"
            )
    if settings.history_mode == "faithful":
        raise ConfigError(
            '[protocol] history_mode = "faithful" writes raw transcripts without a chat template, where image items '
            f'have no image turn; use history_mode = "clean" for [task] {task}'
        )


def check_image_run_before_loading(config: RunConfig, location: ModelLocation, items: Sequence[Item]) -> None:
    """:func:`check_image_run` before the model loads, from its ``config.json`` when that is on this machine.

    A GGUF model (embedded or a file) is a text-only causal LM. Where the configuration cannot be
    read without a download, nothing is checked here: :class:`ExperimentRunner` checks after loading.

    Raises:
        ConfigError: as :func:`check_image_run`.
    """
    if location.source in ("embedded", "gguf"):
        check_image_run(config, None, items)
        return
    model_config = location.read_config()
    if model_config is not None:
        check_image_run(config, vision_type_of(model_config), items)
