"""A hook plan: what to read and what to edit at each (layer, site kind), backend-neutral."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from workbench.hooks.interventions import Intervention, InterventionError
from workbench.hooks.sites import SiteKind, parse_sites

Reader = Callable[[torch.Tensor], None]
Editor = Callable[[torch.Tensor], torch.Tensor]
SiteKey = tuple[int, SiteKind]


@dataclass
class HookPlan:
    """Readers and editors keyed by ``(layer, kind)``.

    Every backend calls :meth:`edit` first and then :meth:`read` with the site's tensor in
    canonical shape (``[batch, seq, d_model]``, also at the final-norm sites, keyed by layer
    ``n_layers``; hook_z ``[batch, seq, n_heads, d_head]``; hook_pattern ``[batch, n_heads, query,
    key]``), so a reader sees the edited value, as TransformerLens hooks registered in that order would.

    An edit of ``hook_resid_mid`` is lowered here, once for every backend: resid_mid =
    resid_pre + attn_out is formed inside the block, so the plan keeps resid_pre (an editor that
    returns its input, after the site's other editors) and edits the attention output as
    ``attn_out' = f(resid_pre + attn_out) - resid_pre``, after any edit of attn_out itself.
    Backends therefore only ever read resid_mid, and readers only observe: no edit depends on a
    reader, so a backend may call the readers after the forward (the remote-ready nnsight session).
    """

    readers: dict[SiteKey, list[Reader]] = field(default_factory=lambda: defaultdict(list))
    editors: dict[SiteKey, list[Editor]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def for_interventions(cls, interventions: Sequence[Intervention], n_layers: int, n_heads: int) -> HookPlan:
        plan = cls()
        mid_edits: list[tuple[int, Intervention]] = []
        for intervention in interventions:
            if intervention.site.strip() == SiteKind.VISION_OUT.value:
                raise InterventionError(
                    f"{intervention.site} is read-only; edit the language model's sites (e.g. blocks.0.hook_resid_pre)"
                )
            sites = parse_sites(intervention.site, n_layers, n_heads)
            if len(sites) != 1:
                raise InterventionError(
                    f"intervention site {intervention.site!r} names {len(sites)} sites; name exactly one layer"
                )
            site = sites[0]
            if site.kind is SiteKind.PATTERN:
                raise InterventionError(f"{intervention.site}: attention patterns are read-only; edit hook_z instead")
            if site.kind is SiteKind.FINAL_NORMALIZED:
                raise InterventionError(f"{intervention.site} is read-only; edit ln_final.hook_out instead")
            if site.kind is SiteKind.RESID_MID:
                mid_edits.append((site.layer, intervention))
            else:
                plan.editors[(site.layer, site.kind)].append(intervention.apply)
        for layer, intervention in mid_edits:
            plan._add_resid_mid_edit(layer, intervention)
        return plan

    def _add_resid_mid_edit(self, layer: int, intervention: Intervention) -> None:
        kept: dict[str, torch.Tensor] = {}

        def keep_resid_pre(resid_pre: torch.Tensor) -> torch.Tensor:
            kept["resid_pre"] = resid_pre
            return resid_pre

        def edit_through_attn_out(attn_out: torch.Tensor) -> torch.Tensor:
            resid_pre = kept["resid_pre"]
            return intervention.apply(resid_pre + attn_out) - resid_pre

        self.editors[(layer, SiteKind.RESID_PRE)].append(keep_resid_pre)  # after the site's own edits
        self.editors[(layer, SiteKind.ATTN_OUT)].append(edit_through_attn_out)

    def add_reader(self, layer: int, kind: SiteKind, reader: Reader) -> None:
        self.readers[(layer, kind)].append(reader)

    def keys(self) -> list[SiteKey]:
        order = list(SiteKind)
        return sorted({*self.readers, *self.editors}, key=lambda key: (key[0], order.index(key[1])))

    @property
    def reads_patterns(self) -> bool:
        return any(kind is SiteKind.PATTERN for _, kind in self.readers)

    def has_editors(self, layer: int, kind: SiteKind) -> bool:
        return bool(self.editors.get((layer, kind)))

    def edit(self, layer: int, kind: SiteKind, activation: torch.Tensor) -> torch.Tensor:
        for editor in self.editors.get((layer, kind), ()):
            activation = editor(activation)
        return activation

    def read(self, layer: int, kind: SiteKind, activation: torch.Tensor) -> None:
        for reader in self.readers.get((layer, kind), ()):
            reader(activation)
