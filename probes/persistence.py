"""Fitted probes on disk: safetensors for the weights, JSON for provenance (never pickle).

File names follow RUN_FOLDER.md: ``<site>.<position>.L<layer>.<kind>.safetensors`` plus ``.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from scipy.special import expit

from probes.errors import DimensionMismatchError, ProbeInputError

FORMAT_VERSION = 1
PROBE_KINDS = ("logistic", "mean_difference", "ccs")


@dataclass(frozen=True)
class ProbeProvenance:
    """Where a probe came from.

    Attributes:
        kind: ``logistic``, ``mean_difference`` or ``ccs``.
        site: site name without layer, e.g. ``hook_resid_post``.
        position: token position, e.g. ``last_prompt``.
        layer: model layer number.
        cache_path: the cache the training activations were read from.
        cache_config_hash: sha256 of the cache's run configuration (its ``config_sha256`` attribute).
        probe_config: the ``ProbeConfig`` (as a dict) that fitted it.
        hyperparameters: the estimator's ``get_params()``.
        classes: label values; the second is the positive class.
        scores: optional evaluation summary (e.g. accuracy, selectivity) of this layer.
    """

    kind: str
    site: str
    position: str
    layer: int
    cache_path: str
    cache_config_hash: str
    probe_config: dict[str, Any]
    hyperparameters: dict[str, Any]
    classes: list[Any]
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SavedProbe:
    """A probe read back from disk.

    Attributes:
        coef: [d] weights (logits per activation unit); ``direction`` is its unit vector.
        intercept: bias (logits).
        pair_means: [2, d] CCS centring means, or ``None`` for other kinds.
        provenance: the JSON side.
    """

    coef: np.ndarray
    intercept: float
    pair_means: np.ndarray | None
    provenance: ProbeProvenance

    @property
    def direction(self) -> np.ndarray:
        """Unit vector [d] along ``coef``."""
        return self.coef / np.linalg.norm(self.coef)

    def probability(self, activations: np.ndarray, source: str) -> np.ndarray:
        """Positive-class probability [n] of single activations [n, d] from ``source``.

        Raises:
            DimensionMismatchError: ``d`` differs from the probe's width.
        """
        check_width(self, activations, source)
        return expit(activations.astype(np.float64) @ self.coef + self.intercept)


def check_width(probe: SavedProbe, activations: np.ndarray, source: str) -> None:
    """Raise ``DimensionMismatchError`` when activations [n, d] do not match the probe's d."""
    check_probe_width(probe, activations.shape[-1], source)


def check_probe_width(probe: SavedProbe, width: int, source: str) -> None:
    """Raise ``DimensionMismatchError`` when activations ``width`` wide do not match the probe's d."""
    if width != probe.coef.shape[0]:
        raise DimensionMismatchError(
            f"{source}: activations are {width} wide but the probe "
            f"{probe.provenance.site}.{probe.provenance.position}.L{probe.provenance.layer} was "
            f"fitted on {probe.coef.shape[0]} (a different model?); fit a probe on this cache"
        )


def probe_stem(site: str, position: str, layer: int, kind: str) -> str:
    """``<site>.<position>.L<layer>.<kind>`` (RUN_FOLDER.md)."""
    return f"{site}.{position}.L{layer}.{kind}"


def save_probe(
    directory: Path,
    coef: np.ndarray,
    intercept: float,
    provenance: ProbeProvenance,
    pair_means: np.ndarray | None = None,
) -> Path:
    """Write one probe as ``<stem>.safetensors`` + ``<stem>.json``; returns the safetensors path.

    Args:
        coef: [d] weights; intercept: bias; pair_means: [2, d] for CCS.
    """
    if provenance.kind not in PROBE_KINDS:
        raise ProbeInputError(f"save_probe: kind {provenance.kind!r} is not one of {PROBE_KINDS}")
    directory.mkdir(parents=True, exist_ok=True)
    stem = probe_stem(provenance.site, provenance.position, provenance.layer, provenance.kind)
    tensors = {
        "coef": np.ascontiguousarray(coef, dtype=np.float32),
        "intercept": np.array([intercept], dtype=np.float32),
    }
    if pair_means is not None:
        tensors["pair_means"] = np.ascontiguousarray(pair_means, dtype=np.float32)
    weights_path = directory / f"{stem}.safetensors"
    save_file(tensors, str(weights_path), metadata={"format_version": str(FORMAT_VERSION)})
    record = {"format_version": FORMAT_VERSION, **asdict(provenance)}
    (directory / f"{stem}.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return weights_path


def load_probe(weights_path: Path) -> SavedProbe:
    """Read a probe written by ``save_probe`` (its ``.json`` must sit next to it)."""
    json_path = weights_path.with_suffix(".json")
    if not weights_path.is_file() or not json_path.is_file():
        raise ProbeInputError(f"load_probe: {weights_path} needs both it and {json_path.name}; re-run workbench probe")
    record = json.loads(json_path.read_text(encoding="utf-8"))
    version = record.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise ProbeInputError(f"load_probe: {json_path} has format_version {version!r}, expected {FORMAT_VERSION}")
    tensors = load_file(str(weights_path))
    return SavedProbe(
        coef=tensors["coef"].astype(np.float64),
        intercept=float(tensors["intercept"][0]),
        pair_means=tensors["pair_means"].astype(np.float64) if "pair_means" in tensors else None,
        provenance=ProbeProvenance(**record),
    )
