"""Per-layer probes on cached activations: fit, evaluate with controls, save, concept sets."""

from probes.concept_sets import ConceptExample, contrast_pairs, embedded_concept_examples
from probes.errors import (
    ConceptSetError,
    DimensionMismatchError,
    NonFiniteActivationsError,
    ProbeInputError,
    SingleClassError,
)
from probes.estimators import CCSProbe, LogisticProbe, MeanDifferenceProbe
from probes.evaluation import LayerEvaluation, evaluate_layers
from probes.layerwise import LayerwiseProbe
from probes.persistence import ProbeProvenance, SavedProbe, load_probe, save_probe

__all__ = [
    "CCSProbe",
    "ConceptExample",
    "ConceptSetError",
    "DimensionMismatchError",
    "LayerEvaluation",
    "LayerwiseProbe",
    "LogisticProbe",
    "MeanDifferenceProbe",
    "NonFiniteActivationsError",
    "ProbeInputError",
    "ProbeProvenance",
    "SavedProbe",
    "SingleClassError",
    "contrast_pairs",
    "embedded_concept_examples",
    "evaluate_layers",
    "load_probe",
    "save_probe",
]
