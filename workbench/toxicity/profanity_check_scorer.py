"""The default offline scorer: alt-profanity-check's linear SVM over tf-idf features.

Why this one: Perspective API (the MSU papers' scorer) needs the network, and Detoxify downloads
its checkpoints at run time. ``alt-profanity-check`` ships its model *inside the wheel* (0.76 MB,
``profanity_check/data/{vectorizer,model}.joblib``), runs on CPU in milliseconds, and returns
P(offensive) in [0, 1]. It was trained on offensive-language data, not on Perspective's
TOXICITY labels, so its numbers are **not comparable** with published Perspective numbers: record
the scorer name and version with every score (``score_texts`` does).

Security: importing ``profanity_check`` unpickles (joblib) those two files from the installed
package's own directory. They are package data of a pinned dependency, installed with the
environment and never taken from a user, a dataset or the network, so loading them is as trusted
as importing the package's code. This module never passes a user-supplied path to joblib.
"""

from __future__ import annotations

from importlib import metadata

import numpy as np

DISTRIBUTION = "alt-profanity-check"


class ProfanityCheckScorer:
    """P(offensive) from ``profanity_check.predict_prob``; ``name="alt-profanity-check"``."""

    name = DISTRIBUTION

    def __init__(self) -> None:
        from profanity_check import predict_prob  # loads the packaged model (see module doc)

        self._predict_prob = predict_prob
        self.version = metadata.version(DISTRIBUTION)

    def score(self, texts: list[str]) -> np.ndarray:
        """Shape ``(len(texts),)``, float64 in [0, 1]."""
        if not texts:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self._predict_prob(list(texts)), dtype=np.float64)
