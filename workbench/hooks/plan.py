"""A hook plan: what to read and what to edit at each (layer, site kind), backend-neutral."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from workbench.hooks.interventions import Intervention, InterventionError
from workbench.hooks.sites import SiteKind, parse_sites

Reader = Callable[[torch.Tensor], None]
SiteKey = tuple[int, SiteKind]


@dataclass
class HookPlan:
    """Readers and editors keyed by ``(layer, kind)``.

    Every backend calls :meth:`edit` first and then :meth:`read` with the site's tensor in
    canonical shape (``[batch, seq, d_model]``; hook_z ``[batch, seq, n_heads, d_head]``;
    hook_pattern ``[batch, n_heads, query, key]``), so a reader sees the edited value, as
    TransformerLens hooks registered in that order would.
    """

    readers: dict[SiteKey, list[Reader]] = field(default_factory=lambda: defaultdict(list))
    editors: dict[SiteKey, list[Intervention]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def for_interventions(
        cls, interventions: Sequence[Intervention], n_layers: int, n_heads: int
    ) -> HookPlan:
        plan = cls()
        for intervention in interventions:
            sites = parse_sites(intervention.site, n_layers, n_heads)
            if len(sites) != 1:
                raise InterventionError(
                    f"intervention site {intervention.site!r} names {len(sites)} sites; name exactly one layer"
                )
            site = sites[0]
            if site.kind is SiteKind.PATTERN:
                raise InterventionError(f"{intervention.site}: attention patterns are read-only; edit hook_z instead")
            plan.editors[(site.layer, site.kind)].append(intervention)
        return plan

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
        for intervention in self.editors.get((layer, kind), ()):
            activation = intervention.apply(activation)
        return activation

    def read(self, layer: int, kind: SiteKind, activation: torch.Tensor) -> None:
        for reader in self.readers.get((layer, kind), ()):
            reader(activation)
