"""Site names: TransformerLens' hook-name contract, parsed once and validated against a model.

Grammar (``{l}`` is a layer number, ``*`` for every layer, or an inclusive range ``a-b``)::

    blocks.{l}.hook_resid_pre      residual stream entering block l          [d_model]
    blocks.{l}.hook_resid_mid      after attention, before the MLP           [d_model]
    blocks.{l}.hook_resid_post     leaving block l                           [d_model]
    blocks.{l}.hook_attn_out       what attention adds to the residual       [d_model]
    blocks.{l}.hook_mlp_out        what the MLP adds to the residual         [d_model]
    blocks.{l}.attn.hook_z         per-head attention output before W_O      [n_heads, d_head]
    blocks.{l}.attn.hook_pattern[h,...]  attention probabilities of chosen heads [heads, key_pos]
    ln_final.hook_normalized       final norm's input, normalized, before its gain/bias [d_model]
    ln_final.hook_out              final norm's output: Hugging Face hidden_states[-1]  [d_model]
    vision.hook_out                vision-language models only: the image's projected tokens,
                                   averaged over them                                   [d_model]

``hook_pattern`` is quadratic in sequence length, so it must name its heads.

``vision.hook_out`` is the output of the module that maps the vision tower's features into the
language model's embedding space (LLaVA's ``multi_modal_projector``, Idefics3's ``connector``): the
vectors that replace the image tokens of the prompt, ``[image tokens, d_model]`` per image (576 for
LLaVA-1.5 at 336 px). The site keeps their mean, one ``[d_model]`` vector per sequence, the same at
every one-vector position (an image is not placed by text positions); token-level positions do not
apply to it. Its ``layer`` is 0: the projected image tokens are the embedding layer's output at the
image positions (``hidden_states[0]`` there). It exists only on a model with a vision tower.

The final-norm sites belong to no block; their ``layer`` is ``n_layers`` (one past the last
block, the index of ``hidden_states`` they equal), so they sort after every block and are cached
like any site (one layer, numbered ``n_layers``). ``ln_final.hook_normalized`` means what it means
in TransformerLens (``(x - mean) / scale`` or ``x / scale``, no gain: in HookedTransformer the gain
is folded into ``W_U``); ``ln_final.hook_out`` is the state after the gain, the one the papers read
as ``hidden_states[-1]`` (the TransformerBridge's name for the norm's output).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class SiteKind(str, Enum):  # noqa: UP042 (str() of a StrEnum member differs)
    """What a site holds; the value is the name's suffix after ``blocks.{l}.`` (block sites) or the
    whole name (final-norm sites, see :data:`FINAL_NORM_KINDS`)."""

    RESID_PRE = "hook_resid_pre"
    RESID_MID = "hook_resid_mid"
    RESID_POST = "hook_resid_post"
    ATTN_OUT = "hook_attn_out"
    MLP_OUT = "hook_mlp_out"
    Z = "attn.hook_z"
    PATTERN = "attn.hook_pattern"
    FINAL_NORMALIZED = "ln_final.hook_normalized"
    FINAL_OUT = "ln_final.hook_out"
    VISION_OUT = "vision.hook_out"


FINAL_NORM_KINDS = frozenset({SiteKind.FINAL_NORMALIZED, SiteKind.FINAL_OUT})
"""Site kinds of the final norm, after the last block (no ``blocks.{l}.`` prefix)."""
UNPREFIXED_KINDS = FINAL_NORM_KINDS | {SiteKind.VISION_OUT}
"""Site kinds whose name is the kind alone (no ``blocks.{l}.`` prefix)."""


class SiteError(ValueError):
    """A site name that does not exist or does not fit the model."""


@dataclass(frozen=True, order=True)
class Site:
    """One hook point in one block.

    Attributes:
        layer: block index, 0-based; ``n_layers`` for the final-norm sites.
        kind: which activation of the block (or of the final norm).
        heads: for ``attn.hook_pattern`` only, the query heads to keep.
    """

    layer: int
    kind: SiteKind
    heads: tuple[int, ...] | None = None

    @property
    def name(self) -> str:
        if self.kind in UNPREFIXED_KINDS:
            return self.kind.value
        suffix = f"[{','.join(map(str, self.heads))}]" if self.heads is not None else ""
        return f"blocks.{self.layer}.{self.kind.value}{suffix}"

    def __str__(self) -> str:
        return self.name


_SITE_PATTERN = re.compile(r"^blocks\.(?P<layers>\*|\d+|\d+-\d+)\.(?P<kind>[a-z_.]+?)(?:\[(?P<heads>[\d,\s]+)\])?$")
_KINDS = {kind.value: kind for kind in SiteKind if kind not in UNPREFIXED_KINDS}
VALID_SITE_FORMS = tuple(kind.value if kind in UNPREFIXED_KINDS else f"blocks.{{l}}.{kind.value}" for kind in SiteKind)


def parse_sites(
    names: str | list[str] | tuple[str, ...], n_layers: int, n_heads: int, *, vision_type: str | None = None
) -> list[Site]:
    """Expand site names (wildcards, ranges) into sorted, de-duplicated :class:`Site` objects.

    ``vision_type`` is the model's vision-language type (``ModelArchitecture.vision_type``); without
    one, ``vision.hook_out`` is refused.

    Raises:
        SiteError: unknown name (the message lists the valid forms), layer or head out of range,
            a ``hook_pattern`` without heads, or ``vision.hook_out`` on a text-only model.
    """
    if isinstance(names, str):
        names = [names]
    if not names:
        raise SiteError("no sites requested; name at least one, e.g. blocks.*.hook_resid_post")
    sites: set[Site] = set()
    for raw in names:
        name = raw.strip()
        if name in {kind.value for kind in FINAL_NORM_KINDS}:
            sites.add(Site(layer=n_layers, kind=SiteKind(name)))
            continue
        if name == SiteKind.VISION_OUT.value:
            if vision_type is None:
                raise SiteError(
                    f"site {raw!r} is the image tokens of a vision-language model, and this model is text-only; "
                    "remove the site or load a vision-language model (llava, idefics3, smolvlm)"
                )
            sites.add(Site(layer=0, kind=SiteKind.VISION_OUT))
            continue
        match = _SITE_PATTERN.match(name)
        if match is None or match["kind"] not in _KINDS:
            raise SiteError(
                f"unknown site {raw!r}; valid forms: {', '.join(VALID_SITE_FORMS)} "
                "({l} = a layer, * or a-b; hook_pattern needs heads, e.g. [0,3])"
            )
        kind = _KINDS[match["kind"]]
        heads = _parse_heads(raw, match["heads"], kind, n_heads)
        for layer in _parse_layers(raw, match["layers"], n_layers):
            sites.add(Site(layer=layer, kind=kind, heads=heads))
    return sorted(sites, key=lambda site: (site.layer, list(SiteKind).index(site.kind)))


def _parse_layers(raw: str, text: str, n_layers: int) -> range | list[int]:
    if text == "*":
        return range(n_layers)
    if "-" in text:
        first, last = (int(part) for part in text.split("-"))
        if first > last:
            raise SiteError(f"site {raw!r}: empty layer range {text}; write low-high")
        layers = list(range(first, last + 1))
    else:
        layers = [int(text)]
    bad = [layer for layer in layers if layer >= n_layers]
    if bad:
        raise SiteError(f"site {raw!r}: layer {bad[0]} out of range; the model has layers 0-{n_layers - 1}")
    return layers


def _parse_heads(raw: str, text: str | None, kind: SiteKind, n_heads: int) -> tuple[int, ...] | None:
    if kind is SiteKind.PATTERN and text is None:
        raise SiteError(f"site {raw!r}: attention patterns are quadratic in length; name the heads, e.g. {raw}[0,3]")
    if text is None:
        return None
    if kind is not SiteKind.PATTERN:
        raise SiteError(f"site {raw!r}: only attn.hook_pattern takes a head list")
    heads = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    bad = [head for head in heads if head >= n_heads]
    if bad:
        raise SiteError(f"site {raw!r}: head {bad[0]} out of range; the model has heads 0-{n_heads - 1}")
    return heads
