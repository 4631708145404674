"""Google Perspective API scorer: TOXICITY ``summaryScore.value``, as the MSU papers used.

Request (one per text): ``POST <endpoint>?key=<api key>`` with
``{"comment": {"text": ...}, "requestedAttributes": {"TOXICITY": {}}, "languages": [...],
"doNotStore": true}``; the answer holds ``attributeScores.TOXICITY.summaryScore.value`` in [0, 1].
Requests are spaced to at most ``requests_per_minute`` (the default quota is 60/min, as in the MSU
code), and HTTP 429 / 5xx / network errors are retried with exponential backoff (honouring
``Retry-After``). The API key comes from the configuration or the ``PERSPECTIVE_API_KEY``
environment variable and never appears in error messages.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

API_KEY_ENV = "PERSPECTIVE_API_KEY"
API_VERSION = "v1alpha1"
DEFAULT_ENDPOINT = f"https://commentanalyzer.googleapis.com/{API_VERSION}/comments:analyze"
_RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})


class PerspectiveError(RuntimeError):
    """No API key, a request that failed after all retries, or an answer without a score."""


@dataclass(frozen=True)
class PerspectiveConfig:
    """Settings of :class:`PerspectiveScorer`.

    Attributes:
        api_key: the key; ``None`` = read ``PERSPECTIVE_API_KEY``.
        endpoint: the ``comments:analyze`` URL (a local server in tests).
        languages: sent as ``languages`` so that Perspective does not guess the language.
        requests_per_minute: upper bound on the request rate.
        max_retries: retries after the first try for 429, 5xx and network errors.
        backoff_s: first retry delay in seconds, doubled on each further retry.
        timeout_s: socket timeout per request, seconds.
    """

    api_key: str | None = None
    endpoint: str = DEFAULT_ENDPOINT
    languages: tuple[str, ...] = ("en",)
    requests_per_minute: float = 60.0
    max_retries: int = 5
    backoff_s: float = 2.0
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.requests_per_minute <= 0:
            raise ValueError(f"requests_per_minute={self.requests_per_minute} must be positive")
        if self.max_retries < 0 or self.backoff_s < 0 or self.timeout_s <= 0:
            raise ValueError("max_retries and backoff_s must be >= 0 and timeout_s > 0")


class PerspectiveScorer:
    """TOXICITY summary scores from the Perspective API; ``name="perspective:TOXICITY"``.

    Empty or whitespace-only texts are not sent (the API rejects them) and score 0.0: an empty
    continuation contains nothing toxic.
    """

    name = "perspective:TOXICITY"
    version = API_VERSION

    def __init__(
        self,
        config: PerspectiveConfig = PerspectiveConfig(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        key = config.api_key or os.environ.get(API_KEY_ENV)
        if not key:
            raise PerspectiveError(
                f"no Perspective API key: set the {API_KEY_ENV} environment variable or "
                "perspective_api_key in the [toxicity] configuration"
            )
        self.config = config
        self._key = key
        self._sleep = sleep
        self._next_request_at = 0.0

    def score(self, texts: list[str]) -> np.ndarray:
        """Shape ``(len(texts),)``, float64 in [0, 1]; one request per non-empty text."""
        return np.array([self._score_one(text) if text.strip() else 0.0 for text in texts], dtype=np.float64)

    def _score_one(self, text: str) -> float:
        body = json.dumps(
            {
                "comment": {"text": text},
                "requestedAttributes": {"TOXICITY": {}},
                "languages": list(self.config.languages),
                "doNotStore": True,
            }
        ).encode("utf-8")
        url = f"{self.config.endpoint}?key={self._key}"
        last_problem = ""
        for attempt in range(self.config.max_retries + 1):
            self._wait_for_rate_limit()
            request = urllib.request.Request(
                url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            retry_after: float | None = None
            try:
                with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                    return _toxicity_value(json.loads(response.read()), self.config.endpoint)
            except urllib.error.HTTPError as error:
                detail = error.read().decode("utf-8", errors="replace")[:200]
                last_problem = f"HTTP {error.code} {error.reason}: {detail}"
                if error.code not in _RETRIED_STATUS:
                    break
                header = error.headers.get("Retry-After")
                retry_after = float(header) if header and header.isdigit() else None
            except (urllib.error.URLError, OSError) as error:
                last_problem = str(getattr(error, "reason", error))
            if attempt < self.config.max_retries:
                backoff = self.config.backoff_s * 2**attempt
                self._sleep(retry_after if retry_after is not None else backoff)
        raise PerspectiveError(f"POST {self.config.endpoint} failed after {attempt + 1} attempt(s): {last_problem}")

    def _wait_for_rate_limit(self) -> None:
        now = time.monotonic()
        if now < self._next_request_at:
            self._sleep(self._next_request_at - now)
        interval_s = 60.0 / self.config.requests_per_minute
        self._next_request_at = max(now, self._next_request_at) + interval_s


def _toxicity_value(answer: object, endpoint: str) -> float:
    try:
        summary = answer["attributeScores"]["TOXICITY"]["summaryScore"]  # type: ignore[index]
        value = float(summary["value"])
    except (KeyError, TypeError, ValueError):
        raise PerspectiveError(f"{endpoint}: answer lacks attributeScores.TOXICITY.summaryScore.value") from None
    if not 0.0 <= value <= 1.0:
        raise PerspectiveError(f"{endpoint}: TOXICITY score {value} is outside [0, 1]")
    return value
