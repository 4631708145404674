"""Remote-ready nnsight: one session per capture call, sent to NDIF or simulated in-process.

``[model] remote = true`` (with ``backend = "nnsight"``) runs each capture call, which in a run is
one round of one batch of dialogues, as one nnsight session: every forward of the call is a trace
of that session, so NDIF receives one job for it and sends back only the values the traces saved
(the sites the plan reads, and the logits). ``remote = "local"`` is nnsight's own dry run of that
path: the session is serialized and deserialized with the workbench's modules hidden, as a server
would see it, and then runs against the local model. A passing ``"local"`` run is the evidence,
offline, that the remote path works.

Only the hook layer's forwards go remote: generation and option scoring still run on the local
model (docs/models.md says what that means for a model that does not fit here).
"""

from __future__ import annotations

import os
from typing import Any, Literal
from weakref import WeakKeyDictionary

from torch import nn

RemoteMode = bool | Literal["local"]
"""``False``: in-process traces; ``True``: one NDIF job per capture call; ``"local"``: that session, simulated."""

NDIF_KEY_VARIABLE = "NDIF_API_KEY"

_REMOTABLE: WeakKeyDictionary[nn.Module, Any] = WeakKeyDictionary()


class RemoteExecutionError(ValueError):
    """A remote nnsight session that cannot be sent: no API key, or a model NDIF cannot name."""


def remotable_model(model: nn.Module, tokenizer: Any) -> Any:
    """nnsight's remotable wrapper (``TransformersModel``) around an already loaded model, once per model."""
    if model not in _REMOTABLE:
        from nnsight import TransformersModel

        _REMOTABLE[model] = TransformersModel(model, tokenizer=tokenizer)
    return _REMOTABLE[model]


def check_remote_ready(remote: RemoteMode, model_id: str, source: str) -> None:
    """Refuse, in one line, a session that could not reach NDIF: run before any trace.

    Args:
        remote: the mode; nothing is checked unless it is ``True``.
        model_id: what the model was loaded from (NDIF names models by hub id).
        source: :attr:`workbench.models.LoadedModel.source`; only ``"hub"`` models exist on NDIF.

    Raises:
        RemoteExecutionError: ``NDIF_API_KEY`` unset, or a model that is not a hub id.
    """
    if remote is not True:
        return
    if source != "hub":
        raise RemoteExecutionError(
            f"[model] remote = true sends traces to NDIF, which serves hub models only; {model_id!r} is a "
            f'{source} model: set [model] spec to its hub id, or use remote = "local" to simulate the session here'
        )
    if not os.environ.get(NDIF_KEY_VARIABLE):
        raise RemoteExecutionError(
            f"[model] remote = true needs an NDIF API key: set {NDIF_KEY_VARIABLE} (your NDIF account's key), "
            'or use remote = "local" to simulate the session here'
        )


def ship_workbench_by_value() -> None:
    """Register the workbench for serialization by value, so that a remote session carries its code (NDIF lacks it)."""
    import nnsight

    nnsight.register("workbench")  # its editors (interventions) run inside the session's traces
