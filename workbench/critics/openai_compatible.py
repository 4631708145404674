"""A critic behind an OpenAI-compatible ``/chat/completions`` endpoint (DeepSeek in the papers).

Only the standard library is used (``urllib.request``). The API key is read from an environment
variable at call time and never stored; with the variable unset no ``Authorization`` header is
sent (local servers such as vLLM or llama.cpp need none).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from workbench.critics.base import CriticUnavailable
from workbench.critics.requests import feedback_request_messages, feedback_target
from workbench.protocols.dialogue import Dialogue
from workbench.tasks.items import Item


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how to reach the endpoint.

    Attributes:
        base_url: e.g. ``"https://api.deepseek.com"`` or ``"http://127.0.0.1:8000/v1"``;
            requests go to ``{base_url}/chat/completions``.
        model: the model name sent in the request, e.g. ``"deepseek-chat"``.
        api_key_env: name of the environment variable holding the key.
        timeout_s: per-request timeout in seconds.
        max_attempts: attempts before giving up (>= 1).
        backoff_s: wait before the second attempt; it doubles after each failure.
    """

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    max_attempts: int = 4
    backoff_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")

    @property
    def url(self) -> str:
        """The chat-completions address."""
        return self.base_url.rstrip("/") + "/chat/completions"


class OpenAICompatibleCritic:
    """Asks an OpenAI-compatible chat endpoint for feedback, with retries and exponential backoff."""

    def __init__(self, endpoint: EndpointConfig, name: str | None = None) -> None:
        self.endpoint = endpoint
        self.name = name or endpoint.model

    def feedback(self, item: Item, dialogue: Dialogue, answer_text: str) -> str:
        """The endpoint's reply to the feedback request for the dialogue's last output."""
        messages = feedback_request_messages(item, answer_text, feedback_target(dialogue))
        return self.complete(messages)

    def complete(self, messages: list[dict[str, str]]) -> str:
        """POST ``messages``; returns ``choices[0].message.content``.

        Raises :class:`CriticUnavailable` after ``max_attempts`` failed attempts (network error,
        timeout, HTTP error status or a malformed reply).
        """
        body = json.dumps({"model": self.endpoint.model, "messages": messages, "stream": False}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.endpoint.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last_error = ""
        for attempt in range(self.endpoint.max_attempts):
            if attempt:
                time.sleep(self.endpoint.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(self.endpoint.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.endpoint.timeout_s) as response:
                    reply = json.loads(response.read().decode("utf-8"))
                return str(reply["choices"][0]["message"]["content"]).strip()
            except urllib.error.HTTPError as error:
                last_error = f"HTTP {error.code}"
            except (urllib.error.URLError, TimeoutError, OSError) as error:
                last_error = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
            except (json.JSONDecodeError, KeyError, IndexError, TypeError) as error:
                last_error = f"malformed reply ({type(error).__name__})"
        raise CriticUnavailable(
            f"critic endpoint {self.endpoint.url} gave no usable reply after "
            f"{self.endpoint.max_attempts} attempts (last: {last_error}); check the server and "
            f"${self.endpoint.api_key_env}"
        )
