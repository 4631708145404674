"""Per-layer probes on cached activations: fit, evaluate with controls, save, apply, steer."""

from __future__ import annotations

from probes.concept_sets import ConceptExample, contrast_pairs, embedded_concept_examples
from probes.config import ProbeConfig
from probes.errors import (
    CacheSiteError,
    ConceptSetError,
    DimensionMismatchError,
    NonFiniteActivationsError,
    ProbeConfigError,
    ProbeInputError,
    SingleClassError,
)
from probes.estimators import CCSProbe, LogisticProbe, MeanDifferenceProbe
from probes.evaluation import LayerEvaluation, evaluate_layers
from probes.layerwise import LayerwiseProbe
from probes.persistence import ProbeProvenance, SavedProbe, load_probe, save_probe
from probes.stage import run_probe_stage

__all__ = [
    "CCSProbe",
    "CacheSiteError",
    "ConceptExample",
    "ConceptSetError",
    "DimensionMismatchError",
    "LayerEvaluation",
    "LayerwiseProbe",
    "LogisticProbe",
    "MeanDifferenceProbe",
    "NonFiniteActivationsError",
    "ProbeConfig",
    "ProbeConfigError",
    "ProbeInputError",
    "ProbeProvenance",
    "SavedProbe",
    "SingleClassError",
    "contrast_pairs",
    "embedded_concept_examples",
    "evaluate_layers",
    "load_probe",
    "run_probe_stage",
    "save_probe",
]
