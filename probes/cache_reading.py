"""Which cached sites and layers a probe reads, and reading them as [records, layers, width]."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from activations_cache import CacheReader
from probes.errors import CacheSiteError, NonFiniteActivationsError
from workbench.hooks.sites import FINAL_NORM_KINDS, UNPREFIXED_KINDS, SiteKind

DEFAULT_SITE = SiteKind.RESID_POST.value
BAND_SITES = (SiteKind.ATTN_OUT.value, SiteKind.MLP_OUT.value)
FINAL_STATE_SITE = SiteKind.FINAL_OUT.value
"""The final norm's output, Hugging Face's ``hidden_states[-1]``: the papers' last-layer state
(docs/protocols.md §2.4)."""
FINAL_SITES = tuple(kind.value for kind in FINAL_NORM_KINDS)
UNPREFIXED_SITES = tuple(kind.value for kind in UNPREFIXED_KINDS)
"""Sites named without a ``blocks.{l}.`` prefix: the final norm's and a VLM's ``vision.hook_out``."""


@dataclass(frozen=True)
class ProbeSite:
    """One cached site at one position, restricted to the layers a probe reads.

    Attributes:
        site: layer-free site name, e.g. ``hook_resid_post``.
        position: cached token position, e.g. ``last_prompt``.
        layers: model layer numbers, ascending.
        shape: per-layer shape in the cache, ``(d,)`` or ``(heads, d_head)``.
    """

    site: str
    position: str
    layers: tuple[int, ...]
    shape: tuple[int, ...]

    @property
    def width(self) -> int:
        """Features per layer: ``prod(shape)`` (hook_z heads are flattened)."""
        return int(np.prod(self.shape))


def stored_site(reader: CacheReader, site: str, position: str) -> ProbeSite:
    """Every stored layer of ``site`` at ``position``.

    Raises:
        CacheSiteError: the cache has no such dataset (the message lists what it stores).
    """
    for dataset in reader.spec.datasets:
        if (dataset.position, dataset.site) == (position, site):
            return ProbeSite(site, position, tuple(sorted(dataset.layers)), dataset.shape)
    raise CacheSiteError(
        f"{reader.path} has no {site} at position {position!r}; it stores (position, site) "
        f"{reader.sites()}; pick one of those in [probe] sites/position or recapture"
    )


def resolve_probe_sites(reader: CacheReader, names: Sequence[str] | None, position: str) -> list[ProbeSite]:
    """The sites and layers named in ``[probe] sites`` (``None``: every layer of hook_resid_post).

    Names follow the hook layer: ``blocks.{l}.{kind}`` with ``l`` a layer, ``*`` (every stored
    layer) or an inclusive range ``a-b``, or a final-norm site (``ln_final.hook_out``).

    Raises:
        CacheSiteError: a malformed name, or a site or layer the cache does not store.
    """
    if names is None:
        return [stored_site(reader, DEFAULT_SITE, position)]
    layers_by_site: dict[str, set[int]] = {}
    for name in names:
        if name in UNPREFIXED_SITES:
            whole = stored_site(reader, name, position)
            layers_by_site.setdefault(name, set()).update(whole.layers)
            continue
        prefix, _, rest = name.partition(".")
        layer_text, _, kind = rest.partition(".")
        block_kinds = {k.value for k in SiteKind if k is not SiteKind.PATTERN and k not in UNPREFIXED_KINDS}
        if prefix != "blocks" or kind not in block_kinds:
            raise CacheSiteError(
                f"[probe] site {name!r} is not blocks.{{l}}.<kind> with kind one of "
                f"{', '.join(sorted(block_kinds))}, nor one of {', '.join(sorted(UNPREFIXED_SITES))}"
            )
        stored = stored_site(reader, kind, position)
        wanted = _layer_numbers(name, layer_text, stored.layers)
        missing = sorted(set(wanted) - set(stored.layers))
        if missing:
            raise CacheSiteError(
                f"[probe] site {name!r}: layer(s) {missing} are not in {reader.path} "
                f"(stored layers of {kind}: {list(stored.layers)})"
            )
        layers_by_site.setdefault(kind, set()).update(wanted)
    return [
        ProbeSite(kind, position, tuple(sorted(layers)), stored_site(reader, kind, position).shape)
        for kind, layers in layers_by_site.items()
    ]


def _layer_numbers(name: str, text: str, stored: tuple[int, ...]) -> list[int]:
    if text == "*":
        return list(stored)
    first, _, last = text.partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        raise CacheSiteError(f"[probe] site {name!r}: layer {text!r} is not a number, * or a-b")
    return list(range(int(first), int(last or first) + 1))


def band_layers(band: tuple[int, int], stored: Sequence[int]) -> tuple[int, ...]:
    """Stored layers inside ``band`` after clipping it to ``[0, max(stored)]``.

    The papers' band 15-28 (docs/protocols.md §2.5) of a 32-layer model; a smaller model gets the
    part of it that exists, or its last layer when the band lies wholly above it.

    Raises:
        CacheSiteError: no stored layer falls inside the clipped band.
    """
    top = max(stored)
    first, last = min(band[0], top), min(band[1], top)
    inside = tuple(layer for layer in stored if first <= layer <= last)
    if not inside:
        raise CacheSiteError(
            f"[probe] layer_band {list(band)} holds none of the stored layers {list(stored)}; "
            "set layer_band to a range of stored layers"
        )
    return inside


def band_from_fraction(fraction: tuple[float, float], depth: int) -> tuple[int, int]:
    """The inclusive layer band ``(round(first * depth), round(last * depth))``, capped at ``depth - 1``.

    Halves round up (``floor(x + 0.5)``), so the papers' ``(15/32, 28/32)`` of 32 layers is 15-28
    exactly and of 30 layers 14-26.
    """
    first, last = (min(math.floor(part * depth + 0.5), depth - 1) for part in fraction)
    return first, last


def model_depth(reader: CacheReader) -> int:
    """The number of blocks of the model that wrote ``reader``, from what the cache itself proves.

    A cached final-norm site sits at layer ``n_layers``; a ``[capture] sites`` name with ``*``
    stored every layer of its kind, so its last layer is ``n_layers - 1``.

    Raises:
        CacheSiteError: neither holds (the cache stores a chosen subset of layers only).
    """
    for dataset in reader.spec.datasets:
        if dataset.site in FINAL_SITES:
            return int(dataset.layers[0])
    capture_table = reader.config.get("capture", {})
    names = capture_table.get("sites", ()) if isinstance(capture_table, dict) else ()
    wildcard_kinds = {str(name).split(".", 2)[2] for name in names if str(name).startswith("blocks.*.")}
    for dataset in reader.spec.datasets:
        if dataset.site in wildcard_kinds:
            return int(max(dataset.layers)) + 1
    raise CacheSiteError(
        f"{reader.path} does not show the model's depth (no final-norm site, no blocks.*.<kind> capture); "
        "[probe] layer_band_fraction needs it: capture ln_final.hook_out or blocks.*.<kind>, or set layer_band"
    )


def read_layers(
    reader: CacheReader, site: ProbeSite, layers: Sequence[int], rows: np.ndarray | None = None
) -> np.ndarray:
    """Activations [records, len(layers), width] (float32) of ``site`` for ``rows`` (default: all).

    Raises:
        CacheSiteError: a layer is not stored.
        NonFiniteActivationsError: NaN or inf values (naming the cache, site and layer).
    """
    stacked = []
    for layer in layers:
        if layer not in site.layers:
            raise CacheSiteError(
                f"{reader.path}: layer {layer} of {site.site}@{site.position} is not stored "
                f"(stored: {list(site.layers)})"
            )
        values = reader.read(site.site, layer, site.position, rows=rows)
        values = values.reshape(values.shape[0], -1)
        if not np.isfinite(values).all():
            raise non_finite_error(reader, site, layer, int((~np.isfinite(values).all(axis=1)).sum()))
        stacked.append(values)
    return np.stack(stacked, axis=1)


def non_finite_error(reader: CacheReader, site: ProbeSite, layer: int, records: int) -> NonFiniteActivationsError:
    """The one-line error for ``records`` records holding NaN or inf at ``layer`` of ``site``."""
    return NonFiniteActivationsError(
        f"{reader.path}: {site.site}@{site.position} layer {layer} holds NaN or inf in {records} record(s); "
        "recapture those records"
    )
