"""One model over several devices: an accelerate device map, planned before any weight is read.

``[model] device_map = "auto"`` (or ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``, the
strategies transformers passes to accelerate) places whole decoder blocks on the process's GPUs, the
CPU taking what they cannot hold; accelerate's hooks then move each block's inputs to its device, so
the hook layer's sites, interventions and attribution read and edit the same tensors as on one device.

The map is computed here, on an empty (meta-device) copy of the model built from its config, so that
a model that does not fit is refused in one line before its weights are read, and the map actually
used can be recorded. Offloading to disk is refused: every forward would read the offloaded blocks
back from disk, which makes a capture run orders of magnitude slower than the user expects.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

from workbench.models.vision import vision_type

DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
"""The device-map strategies accelerate computes (transformers' ``from_pretrained(device_map=...)``)."""

DeviceMap = str | dict[str, int | str]
"""A strategy of :data:`DEVICE_MAP_STRATEGIES`, or module name -> device (GPU index, ``"cuda:1"``, ``"cpu"``)."""


class DeviceMapError(ValueError):
    """A device map that names no strategy, leaves modules without a device, or does not fit."""


def plan_device_map(
    location: str,
    device_map: DeviceMap,
    dtype: torch.dtype,
    *,
    max_memory: dict[int | str, int | str] | None = None,
    trust_remote_code: bool = False,
) -> dict[str, int | str]:
    """The module -> device map that loading ``location`` with ``device_map`` will use.

    Args:
        location: what ``from_pretrained`` reads (a model directory or a hub id); only its config is read.
        device_map: a strategy name, or an explicit map (checked, then returned as given).
        dtype: the dtype the weights will be loaded in (it sets each block's size in bytes).
        max_memory: device -> bytes (or ``"20GiB"``) the map may use; ``None`` = what is free now.
        trust_remote_code: passed to transformers, as for the load itself.

    Raises:
        DeviceMapError: an unknown strategy, a device this machine lacks, an explicit map that leaves
            parameters without a device, or a model that fits only with blocks offloaded to disk.
    """
    from accelerate import infer_auto_device_map, init_empty_weights
    from accelerate.utils import check_device_map, compute_module_sizes, get_balanced_memory, get_max_memory

    if isinstance(device_map, str) and device_map not in DEVICE_MAP_STRATEGIES:
        raise DeviceMapError(
            f'[model] device_map = "{device_map}" is not a strategy; use one of {", ".join(DEVICE_MAP_STRATEGIES)}'
        )
    config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
    model_class = AutoModelForImageTextToText if vision_type(config) is not None else AutoModelForCausalLM
    with init_empty_weights():
        skeleton = model_class.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    if not isinstance(device_map, str):
        for module, device in device_map.items():
            check_mapped_device(module, device)
        try:
            check_device_map(skeleton, device_map)
        except ValueError as error:
            missing = str(error).rsplit(": ", 1)[-1].split(", ")
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise DeviceMapError(
                f"[model] device_map gives no device to {shown}; map their modules too, or use a strategy "
                f"({', '.join(DEVICE_MAP_STRATEGIES)})"
            ) from None
        return dict(device_map)
    no_split: list[str] = list(skeleton._no_split_modules or [])
    if device_map == "sequential":
        memory = get_max_memory(max_memory)
    else:
        memory = get_balanced_memory(
            skeleton,
            max_memory=max_memory,
            no_split_module_classes=no_split,
            dtype=dtype,
            low_zero=device_map == "balanced_low_0",
        )
    placed: dict[str, Any] = infer_auto_device_map(
        skeleton, max_memory=memory, no_split_module_classes=no_split, dtype=dtype
    )
    if "disk" in placed.values():
        needed = compute_module_sizes(skeleton, dtype=dtype)[""]
        offered = sum(int(size) for device, size in memory.items() if device != "disk")
        devices = ", ".join(f"cuda:{device}" if isinstance(device, int) else str(device) for device in memory)
        raise DeviceMapError(
            f'[model] device_map = "{device_map}": the weights need {_size(needed)} in '
            f"{str(dtype).removeprefix('torch.')} but {devices} can hold {_size(offered)}; "
            "use a smaller dtype, more GPUs or a smaller model (disk offload is not supported)"
        )
    return dict(placed)


def _size(n_bytes: int) -> str:
    """Bytes as GiB, or MiB below one GiB."""
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.2f} MiB"


def check_mapped_device(module: str, device: int | str) -> None:
    """Refuse a device of an explicit map that this machine lacks (or ``"disk"``), in one line."""
    if device == "disk":
        raise DeviceMapError(f'[model] device_map puts {module!r} on "disk"; disk offload is not supported')
    name = f"cuda:{device}" if isinstance(device, int) else str(device)
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise DeviceMapError(
            f"[model] device_map puts {module!r} on {device!r}, which is not a device; use a GPU index, cuda:<i> or cpu"
        ) from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if resolved.type == "cuda" and (resolved.index or 0) >= count:
        raise DeviceMapError(
            f"[model] device_map puts {module!r} on {name}, but this machine has {count} CUDA device(s); "
            'map it to an existing GPU or "cpu"'
        )
    if resolved.type not in ("cuda", "cpu"):
        raise DeviceMapError(f"[model] device_map puts {module!r} on {name}; map modules to GPUs or cpu")
