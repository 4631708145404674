"""Interventions: edits of a site's value during a forward pass or a generation.

An :class:`Intervention` is data (site name, kind, value); every backend applies it through its
own mechanism (native hooks, TransformerBridge hook points, nnsight assignments) by calling
:meth:`Intervention.apply` on the site's tensor in canonical shape ``[batch, seq, d_model]``
(``[batch, seq, n_heads, d_head]`` for ``attn.hook_z``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

INTERVENTION_KINDS = ("add", "scale", "zero", "mean", "patch")


class InterventionError(ValueError):
    """An intervention that cannot be applied as asked."""


@dataclass(frozen=True, eq=False)
class Intervention:
    """One edit of one site.

    Attributes:
        site: a single-layer site name, e.g. ``"blocks.12.hook_resid_post"`` or
            ``"blocks.3.attn.hook_z"`` (no wildcards; ``hook_pattern`` cannot be edited).
        kind: ``"add"`` (value added; steering), ``"scale"`` (multiplied by value),
            ``"zero"`` (set to 0), ``"mean"`` (set to value, typically a mean activation:
            mean-ablation), ``"patch"`` (set to value, a tensor of the site's full shape
            ``[batch, seq, ...]`` from another run: activation patching).
        value: a float (scale) or a tensor broadcastable to the edited slice: ``[d_model]``
            for residual sites, ``[d_head]`` or ``[len(heads), d_head]`` with ``heads`` on hook_z.
        heads: hook_z only: the heads to edit (``None`` = all heads).
        positions: token positions (indices into the forward's sequence axis) to edit;
            ``None`` edits every position, which is what steering during generation needs.
    """

    site: str
    kind: str
    value: torch.Tensor | float | None = None
    heads: tuple[int, ...] | None = None
    positions: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in INTERVENTION_KINDS:
            raise InterventionError(
                f"intervention on {self.site}: unknown kind {self.kind!r}; use {', '.join(INTERVENTION_KINDS)}"
            )
        if self.kind in ("add", "scale", "mean", "patch") and self.value is None:
            raise InterventionError(f"intervention {self.kind!r} on {self.site} needs a value")
        if self.heads is not None and not self.site.endswith("attn.hook_z"):
            raise InterventionError(f"intervention on {self.site}: heads apply to attn.hook_z only")

    def apply(self, activation: torch.Tensor) -> torch.Tensor:
        """Return the edited activation (a new tensor; the input is left untouched)."""
        mask = self._mask(activation)
        if self.kind == "zero":
            edited = torch.zeros_like(activation)
        elif self.kind == "patch":
            patch = torch.as_tensor(self.value, device=activation.device, dtype=activation.dtype)
            if patch.shape != activation.shape:
                raise InterventionError(
                    f"patch for {self.site}: value shape {tuple(patch.shape)} != site shape "
                    f"{tuple(activation.shape)}; patch from a run over the same tokens"
                )
            edited = patch
        else:
            value = self._broadcast_value(activation)
            if self.kind == "add":
                edited = activation + value
            elif self.kind == "scale":
                edited = activation * value
            else:
                edited = value.expand_as(activation)
        return torch.where(mask, edited, activation)

    def _mask(self, activation: torch.Tensor) -> torch.Tensor:
        shape = [1] * activation.dim()
        mask = torch.ones(1, dtype=torch.bool, device=activation.device).view(shape)
        if self.positions is not None:
            seq = torch.zeros(activation.shape[1], dtype=torch.bool, device=activation.device)
            try:
                seq[list(self.positions)] = True
            except IndexError:
                raise InterventionError(
                    f"intervention on {self.site}: positions {self.positions} outside a sequence of "
                    f"{activation.shape[1]} tokens"
                ) from None
            shape[1] = activation.shape[1]
            mask = mask & seq.view(shape)
        if self.heads is not None:
            heads = torch.zeros(activation.shape[2], dtype=torch.bool, device=activation.device)
            heads[list(self.heads)] = True
            head_shape = [1] * activation.dim()
            head_shape[2] = activation.shape[2]
            mask = mask & heads.view(head_shape)
        return mask

    def _broadcast_value(self, activation: torch.Tensor) -> torch.Tensor:
        value = torch.as_tensor(self.value, device=activation.device, dtype=activation.dtype)
        if self.heads is not None and value.dim() >= 2 and value.shape[-2] == len(self.heads):
            full = torch.zeros(activation.shape[2], activation.shape[3], device=value.device, dtype=value.dtype)
            full[list(self.heads)] = value
            value = full
        try:
            # torch leaves broadcast_shapes unannotated (an error under --strict only)
            torch.broadcast_shapes(value.shape, activation.shape)  # type: ignore[no-untyped-call, unused-ignore]
        except RuntimeError:
            raise InterventionError(
                f"intervention on {self.site}: value shape {tuple(value.shape)} does not broadcast to "
                f"the site's shape {tuple(activation.shape)}"
            ) from None
        return value
