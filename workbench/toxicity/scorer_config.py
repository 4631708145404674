"""The ``[toxicity]`` configuration table and the scorer it builds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.config_tables import check_field_types, dataclass_from_table
from workbench.toxicity.lexicon import LexiconScorer
from workbench.toxicity.perspective import DEFAULT_ENDPOINT, PerspectiveConfig, PerspectiveScorer
from workbench.toxicity.profanity_check_scorer import ProfanityCheckScorer
from workbench.toxicity.scorer import ToxicityScorer

SCORER_KINDS: tuple[str, ...] = ("profanity-check", "perspective", "lexicon")


class ToxicityConfigError(ValueError):
    """A ``[toxicity]`` table with an unknown key or kind, or a missing word list."""


@dataclass(frozen=True)
class ToxicityScorerConfig:
    """Which toxicity scorer to use.

    Attributes:
        kind: ``"profanity-check"`` (default, offline), ``"perspective"`` or ``"lexicon"``.
        word_list: path of the word list (``"lexicon"`` only).
        perspective_api_key: key for ``"perspective"``; ``None`` = ``PERSPECTIVE_API_KEY``.
            Prefer the environment variable: a key in a config file ends up in the run folder.
        perspective_endpoint: the ``comments:analyze`` URL.
        requests_per_minute: Perspective request rate bound.
        max_retries: Perspective retries for 429 / 5xx / network errors.
        timeout_s: total deadline for scoring one text with Perspective, in seconds, retries and
            rate-limit waits included.
    """

    kind: str = "profanity-check"
    word_list: str | None = None
    perspective_api_key: str | None = None
    perspective_endpoint: str = DEFAULT_ENDPOINT
    requests_per_minute: float = 60.0
    max_retries: int = 5
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.kind not in SCORER_KINDS:
            raise ToxicityConfigError(f"toxicity.kind={self.kind!r} is not one of {', '.join(SCORER_KINDS)}")
        check_field_types(self, "toxicity", ToxicityConfigError)
        if self.max_retries < 0 or self.timeout_s <= 0 or self.requests_per_minute <= 0:
            raise ToxicityConfigError(
                f"[toxicity] max_retries = {self.max_retries} must be >= 0, and timeout_s = {self.timeout_s} and "
                f"requests_per_minute = {self.requests_per_minute} positive"
            )
        if self.kind == "lexicon" and self.word_list is None:
            raise ToxicityConfigError(
                "toxicity.kind='lexicon' needs word_list = \"path/to/list.txt\" (one term per line)"
            )

    @classmethod
    def from_dict(cls, table: dict[str, Any]) -> ToxicityScorerConfig:
        """Build from a TOML ``[toxicity]`` table; unknown keys are rejected, naming valid ones."""
        return dataclass_from_table(cls, table, "toxicity", ToxicityConfigError)


def build_toxicity_scorer(config: ToxicityScorerConfig) -> ToxicityScorer:
    """The scorer ``config`` names."""
    if config.kind == "perspective":
        return PerspectiveScorer(
            PerspectiveConfig(
                api_key=config.perspective_api_key,
                endpoint=config.perspective_endpoint,
                requests_per_minute=config.requests_per_minute,
                max_retries=config.max_retries,
                timeout_s=config.timeout_s,
            )
        )
    if config.kind == "lexicon":
        assert config.word_list is not None  # guaranteed by __post_init__
        return LexiconScorer(config.word_list)
    return ProfanityCheckScorer()
