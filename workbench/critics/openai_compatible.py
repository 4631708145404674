"""A critic behind an OpenAI-compatible ``/chat/completions`` endpoint (DeepSeek in the papers).

Only the standard library is used (``urllib.request`` through
:mod:`workbench.critics.http_deadline`). The API key is read from an environment variable at call
time and never stored; with the variable unset no ``Authorization`` header is sent (local servers
such as vLLM or llama.cpp need none).

One critic call (:meth:`OpenAICompatibleCritic.complete`) makes at most ``max_attempts`` requests
and returns or fails within ``timeout_s`` seconds in all: the deadline covers connecting, sending,
a server that never answers or answers one byte at a time, and the waits between attempts.
Retried: network errors, HTTP 408 / 409 / 429 / 5xx and malformed replies; other HTTP statuses
(400, 401, 404, ...) fail at once. Every failure is a one-line :class:`CriticUnavailable` (a
``ValueError``) naming the endpoint and what was wrong.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass

from workbench.critics.base import CriticUnavailable
from workbench.critics.http_deadline import (
    DeadlineExceeded,
    HttpTransportError,
    one_line,
    post_with_deadline,
)
from workbench.critics.requests import feedback_request_messages, feedback_target
from workbench.protocols.dialogue import Dialogue
from workbench.tasks.items import Item

RETRIED_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class EndpointConfigError(ValueError):
    """An :class:`EndpointConfig` with a timeout, attempt count or backoff out of range."""


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how to reach the endpoint.

    Attributes:
        base_url: e.g. ``"https://api.deepseek.com"`` or ``"http://127.0.0.1:8000/v1"``;
            requests go to ``{base_url}/chat/completions``.
        model: the model name sent in the request, e.g. ``"deepseek-chat"``.
        api_key_env: name of the environment variable holding the key.
        timeout_s: total deadline of one critic call, in seconds, across all attempts and the
            waits between them (run configuration: ``[protocol] critic_timeout_s``). A call never
            takes much longer, however slowly the server answers.
        max_attempts: requests per critic call at most, >= 1; 1 = no retry (run configuration:
            ``[protocol] critic_attempts``).
        backoff_s: wait before the second attempt, in seconds; it doubles after each failure. A
            wait that would pass the deadline is not started.
    """

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    max_attempts: int = 3
    backoff_s: float = 1.0

    def __post_init__(self) -> None:
        timeout = self.timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout):
            raise EndpointConfigError(
                f"critic timeout_s={timeout!r} must be a number of seconds > 0 ([protocol] critic_timeout_s)"
            )
        if timeout <= 0:
            raise EndpointConfigError(
                f"critic timeout_s={timeout!r} must be a number of seconds > 0 ([protocol] critic_timeout_s)"
            )
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise EndpointConfigError(
                f"critic max_attempts={attempts!r} must be an integer >= 1 ([protocol] critic_attempts)"
            )
        backoff = self.backoff_s
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 0 <= backoff < math.inf:
            raise EndpointConfigError(f"critic backoff_s={backoff!r} must be a number of seconds >= 0")

    @property
    def url(self) -> str:
        """The chat-completions address."""
        return self.base_url.rstrip("/") + "/chat/completions"


class OpenAICompatibleCritic:
    """Asks an OpenAI-compatible chat endpoint for feedback, with retries, backoff and one deadline."""

    def __init__(self, endpoint: EndpointConfig, name: str | None = None) -> None:
        self.endpoint = endpoint
        self.name = name or endpoint.model

    def feedback(self, item: Item, dialogue: Dialogue, answer_text: str) -> str:
        """The endpoint's reply to the feedback request for the dialogue's last output."""
        messages = feedback_request_messages(item, answer_text, feedback_target(dialogue))
        return self.complete(messages)

    def complete(self, messages: list[dict[str, str]]) -> str:
        """POST ``messages``; returns ``choices[0].message.content``, stripped (never empty).

        Returns or raises within ``endpoint.timeout_s`` seconds (plus a few milliseconds).

        Raises:
            CriticUnavailable: no usable reply: the deadline passed, ``max_attempts`` attempts
                failed (network error, retried HTTP status, malformed reply), or the endpoint
                answered an HTTP status that is not retried. One line, naming the endpoint.
        """
        endpoint = self.endpoint
        body = json.dumps({"model": endpoint.model, "messages": messages, "stream": False}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(endpoint.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        started = time.monotonic()
        deadline = started + endpoint.timeout_s
        problem, fix = "no attempt made", "check the server"
        attempts = 0
        while attempts < endpoint.max_attempts:
            if attempts:
                wait = endpoint.backoff_s * 2 ** (attempts - 1)
                if time.monotonic() + wait >= deadline:
                    problem += "; no time left for another attempt"
                    break
                time.sleep(wait)
            attempts += 1
            try:
                reply = post_with_deadline(endpoint.url, body, headers, deadline)
            except DeadlineExceeded:
                problem = "no complete reply before the deadline"
                fix = "check the server, or raise [protocol] critic_timeout_s"
                break
            except HttpTransportError as error:
                problem, fix = f"request failed ({error})", "check that the server is running and reachable"
                continue
            if 200 <= reply.status < 300:
                content, problem = chat_reply_content(reply.body)
                if content is not None:
                    return content
                fix = "check that the server speaks the OpenAI chat-completions API"
                continue
            problem = f"HTTP {reply.status} {reply.reason}" + _error_detail(reply.body)
            fix = _status_fix(reply.status, endpoint)
            if reply.status not in RETRIED_STATUS:
                break
        elapsed = time.monotonic() - started
        raise CriticUnavailable(
            f"critic endpoint {endpoint.url}: {problem} (attempt {attempts} of {endpoint.max_attempts}, "
            f"{elapsed:.1f} s of the {endpoint.timeout_s:g} s deadline); {fix}"
        )


def chat_reply_content(body: bytes) -> tuple[str | None, str]:
    """``(content, "")`` for a usable chat-completions reply body, else ``(None, problem)``.

    Usable: UTF-8 JSON with ``choices[0].message.content`` a non-blank string; ``content`` is
    returned stripped. ``problem`` is a few words on one line, e.g. ``"empty reply body"``.
    """
    if not body.strip():
        return None, "empty reply body"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, f"reply is not UTF-8 text (it starts {body[:40]!r})"
    try:
        reply = json.loads(text)
    except json.JSONDecodeError as error:
        return None, f"reply is not JSON ({error.msg}; it starts {one_line(text, 40)!r})"
    if not isinstance(reply, dict):
        return None, f"reply is JSON {type(reply).__name__}, not an object"
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices:
        return None, "reply has no choices" + _error_detail(body)
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    if not isinstance(message, dict):
        return None, "reply has no choices[0].message"
    content = message.get("content")
    if content is None:
        finish = choices[0].get("finish_reason")
        return None, "reply has choices[0].message.content null" + (
            f" (finish_reason {finish!r})" if finish is not None else ""
        )
    if not isinstance(content, str):
        return None, f"reply has choices[0].message.content of type {type(content).__name__}, not a string"
    if not content.strip():
        return None, "reply has an empty choices[0].message.content"
    return content.strip(), ""


def _error_detail(body: bytes) -> str:
    """``": <error message>"`` from an OpenAI-style ``{"error": {"message": ...}}`` body, else ``""``."""
    try:
        error = json.loads(body.decode("utf-8")).get("error")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        text = body.decode("utf-8", errors="replace").strip()
        return f": {one_line(text, 120)}" if text else ""
    if isinstance(error, dict):
        error = error.get("message", error)
    return f": {one_line(str(error), 120)}" if error else ""


def _status_fix(status: int, endpoint: EndpointConfig) -> str:
    """What to change for an HTTP error status."""
    if status in (401, 403):
        return f"check the API key in ${endpoint.api_key_env}"
    if status == 404:
        return f"check the base URL (requests go to {endpoint.url}) and the model name {endpoint.model!r}"
    if status in RETRIED_STATUS:
        return "check the server, or raise [protocol] critic_attempts / critic_timeout_s"
    return "check the endpoint's documentation for this status"
