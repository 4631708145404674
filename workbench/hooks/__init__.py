"""The hook layer: TransformerLens site names over native hooks, TransformerBridge and nnsight."""

from workbench.hooks.capture import (
    BACKENDS,
    BackendError,
    Capture,
    capture,
    capture_tokens,
    hooked,
    intervene,
    run_forward,
    site_reader,
    tokenize_prompts,
)
from workbench.hooks.interventions import Intervention, InterventionError
from workbench.hooks.plan import HookPlan
from workbench.hooks.positions import Position, PositionError, TokenBatch
from workbench.hooks.sites import Site, SiteError, SiteKind, parse_sites

__all__ = [
    "BACKENDS",
    "BackendError",
    "Capture",
    "HookPlan",
    "Intervention",
    "InterventionError",
    "Position",
    "PositionError",
    "Site",
    "SiteError",
    "SiteKind",
    "TokenBatch",
    "capture",
    "capture_tokens",
    "hooked",
    "intervene",
    "parse_sites",
    "run_forward",
    "site_reader",
    "tokenize_prompts",
]
