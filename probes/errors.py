"""Errors raised on bad probe input; each names the culprit and the fix in one line."""

from __future__ import annotations


class ProbeInputError(ValueError):
    """Base class: the arrays, labels or cache handed to a probe cannot be used as they are."""


class SingleClassError(ProbeInputError):
    """The label set holds only one class, so no boundary between classes can be fitted."""


class DimensionMismatchError(ProbeInputError):
    """A probe and the activations it is applied to have different widths (another model?)."""


class NonFiniteActivationsError(ProbeInputError):
    """Activations contain NaN or infinite values."""


class ConceptSetError(ProbeInputError):
    """A concept-set file or item cannot be turned into contrast statements."""


class ProbeConfigError(ProbeInputError):
    """A ``[probe]`` table with an unknown key or an unusable value."""


class CacheSiteError(ProbeInputError):
    """A cache lacks the site, position or layer a probe needs."""
