"""Google Perspective API scorer: TOXICITY ``summaryScore.value``, as the MSU papers used.

Request (one per text): ``POST <endpoint>?key=<api key>`` with
``{"comment": {"text": ...}, "requestedAttributes": {"TOXICITY": {}}, "languages": [...],
"doNotStore": true}``; the answer holds ``attributeScores.TOXICITY.summaryScore.value`` in [0, 1].
Requests are spaced to at most ``requests_per_minute`` (the default quota is 60/min, as in the MSU
code), and HTTP 429 / 5xx / network errors are retried with exponential backoff (honouring
``Retry-After``). Scoring one text returns or fails within ``timeout_s`` seconds of its first
request, whatever the server does (no answer, an answer one byte at a time, retries). The API key
comes from the configuration or the ``PERSPECTIVE_API_KEY`` environment variable and never appears
in error messages, which are one line each.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from workbench.critics.http_deadline import DeadlineExceeded, HttpTransportError, one_line, post_with_deadline

API_KEY_ENV = "PERSPECTIVE_API_KEY"
API_VERSION = "v1alpha1"
DEFAULT_ENDPOINT = f"https://commentanalyzer.googleapis.com/{API_VERSION}/comments:analyze"
_RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})


class PerspectiveError(ValueError):
    """No API key, a request that failed after all retries or the deadline, or an answer without a score.

    A ``ValueError`` with a one-line message, so that the CLI prints it as ``error: ...``.
    """


@dataclass(frozen=True)
class PerspectiveConfig:
    """Settings of :class:`PerspectiveScorer`.

    Attributes:
        api_key: the key; ``None`` = read ``PERSPECTIVE_API_KEY``.
        endpoint: the ``comments:analyze`` URL (a local server in tests).
        languages: sent as ``languages`` so that Perspective does not guess the language.
        requests_per_minute: upper bound on the request rate.
        max_retries: retries after the first try for 429, 5xx and network errors.
        backoff_s: first retry delay in seconds, doubled on each further retry (``Retry-After``
            replaces it when the server sends one).
        timeout_s: total deadline for scoring one text, in seconds, from its first request: every
            attempt (however slowly the server answers), backoff and rate-limit wait must fit in
            it. A retry whose wait would pass the deadline is not made.
    """

    api_key: str | None = None
    endpoint: str = DEFAULT_ENDPOINT
    languages: tuple[str, ...] = ("en",)
    requests_per_minute: float = 60.0
    max_retries: int = 5
    backoff_s: float = 2.0
    timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.requests_per_minute <= 0:
            raise ValueError(f"requests_per_minute={self.requests_per_minute} must be positive")
        if self.max_retries < 0 or self.backoff_s < 0:
            raise ValueError(
                f"max_retries={self.max_retries} and backoff_s={self.backoff_s} must be >= 0 (Perspective settings)"
            )
        if not (isinstance(self.timeout_s, (int, float)) and 0 < self.timeout_s < math.inf):
            raise ValueError(f"timeout_s={self.timeout_s!r} must be a number of seconds > 0 (Perspective settings)")


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
        """One text's score, within ``config.timeout_s`` seconds of its first request."""
        body = json.dumps(
            {
                "comment": {"text": text},
                "requestedAttributes": {"TOXICITY": {}},
                "languages": list(self.config.languages),
                "doNotStore": True,
            }
        ).encode("utf-8")
        url = f"{self.config.endpoint}?key={self._key}"
        headers = {"Content-Type": "application/json"}
        self._wait_for_rate_limit()
        deadline = time.monotonic() + self.config.timeout_s
        last_problem = "no attempt made"
        fix = "check the endpoint and your network"
        wait: float | None = None
        attempts = 0
        while attempts <= self.config.max_retries:
            if wait is not None:
                if time.monotonic() + wait >= deadline:
                    last_problem += f"; waiting {wait:g} s for another attempt would pass the deadline"
                    break
                self._sleep(wait)
                self._wait_for_rate_limit()
            attempts += 1
            try:
                reply = post_with_deadline(url, body, headers, deadline)
            except DeadlineExceeded:
                last_problem = f"no complete answer within the {self.config.timeout_s:g} s deadline"
                fix = "check the endpoint, or raise PerspectiveConfig.timeout_s"
                break
            except HttpTransportError as error:
                last_problem = str(error)
                wait = self.config.backoff_s * 2 ** (attempts - 1)
                continue
            if reply.status == 200:
                return _toxicity_value(reply.body, self.config.endpoint)
            detail = one_line(reply.body.decode("utf-8", errors="replace"), 200)
            last_problem = f"HTTP {reply.status} {reply.reason}: {detail}"
            if reply.status not in _RETRIED_STATUS:
                fix = "check the API key, the endpoint and the request languages"
                break
            fix = "wait for the quota to recover or lower requests_per_minute"
            header = reply.headers.get("Retry-After")
            wait = float(header) if header and header.isdigit() else self.config.backoff_s * 2 ** (attempts - 1)
        message = f"POST {self.config.endpoint} failed after {attempts} attempt(s): {last_problem}; {fix}"
        raise PerspectiveError(one_line(message.replace(self._key, "<key>"), 400))

    def _wait_for_rate_limit(self) -> None:
        now = time.monotonic()
        if now < self._next_request_at:
            self._sleep(self._next_request_at - now)
        interval_s = 60.0 / self.config.requests_per_minute
        self._next_request_at = max(now, self._next_request_at) + interval_s


def _toxicity_value(body: bytes, endpoint: str) -> float:
    """``attributeScores.TOXICITY.summaryScore.value`` of an answer body, checked to be in [0, 1]."""
    try:
        answer = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PerspectiveError(
            f"{endpoint}: answer is not JSON (it starts {body[:40]!r}); check perspective_endpoint"
        ) from None
    try:
        summary = answer["attributeScores"]["TOXICITY"]["summaryScore"]
        value = float(summary["value"])
    except (KeyError, TypeError, ValueError):
        raise PerspectiveError(
            f"{endpoint}: answer lacks attributeScores.TOXICITY.summaryScore.value; check perspective_endpoint"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise PerspectiveError(f"{endpoint}: TOXICITY score {value} is outside [0, 1]")
    return value
