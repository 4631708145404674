"""The toxicity scorer protocol and scores that carry the scorer's name and version."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


class ToxicityScoreError(ValueError):
    """A scorer returned something other than one finite score in [0, 1] per text."""


@runtime_checkable
class ToxicityScorer(Protocol):
    """Anything that scores texts for toxicity.

    Attributes:
        name: identifies the scorer, e.g. ``"alt-profanity-check"``, ``"perspective:TOXICITY"``.
        version: identifies the model or word list behind it, so that scores from different
            versions are never mixed (package version, API version, word-list hash).
    """

    name: str
    version: str

    def score(self, texts: list[str]) -> np.ndarray:
        """Scores of shape ``(len(texts),)``, float64, each in [0, 1] (higher = more toxic)."""
        ...


@dataclass(frozen=True)
class ToxicityScores:
    """Scores of some texts with the scorer that made them.

    Attributes:
        scorer: the scorer's ``name``.
        scorer_version: the scorer's ``version``.
        values: shape ``(n_texts,)``, float64 in [0, 1].
    """

    scorer: str
    scorer_version: str
    values: np.ndarray

    def as_rows(self, text_ids: Sequence[str]) -> list[dict[str, str | float]]:
        """Tidy rows ``{text_id, scorer, scorer_version, toxicity}``, one per text, for a CSV."""
        if len(text_ids) != len(self.values):
            raise ValueError(f"{len(text_ids)} text ids for {len(self.values)} scores")
        return [
            {"text_id": text_id, "scorer": self.scorer, "scorer_version": self.scorer_version, "toxicity": float(value)}
            for text_id, value in zip(text_ids, self.values)
        ]


def score_texts(scorer: ToxicityScorer, texts: Sequence[str]) -> ToxicityScores:
    """Score ``texts`` and check the protocol's contract (one finite value in [0, 1] per text)."""
    values = np.asarray(scorer.score(list(texts)), dtype=np.float64)
    if values.shape != (len(texts),):
        raise ToxicityScoreError(f"scorer {scorer.name!r} returned shape {values.shape} for {len(texts)} texts")
    if not np.all(np.isfinite(values)) or np.any((values < 0.0) | (values > 1.0)):
        raise ToxicityScoreError(f"scorer {scorer.name!r} returned scores outside [0, 1]")
    return ToxicityScores(scorer.name, scorer.version, values)
