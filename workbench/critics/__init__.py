"""External feedback for self-correction: the critic interface and its implementations."""

from __future__ import annotations

from workbench.critics.base import Critic, CriticUnavailable
from workbench.critics.model import ModelCritic
from workbench.critics.openai_compatible import EndpointConfig, EndpointConfigError, OpenAICompatibleCritic
from workbench.critics.oracle import OracleCritic
from workbench.critics.requests import feedback_request_messages

__all__ = [
    "Critic",
    "CriticUnavailable",
    "EndpointConfig",
    "EndpointConfigError",
    "ModelCritic",
    "OpenAICompatibleCritic",
    "OracleCritic",
    "feedback_request_messages",
]
