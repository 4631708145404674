"""Prompts and multi-round self-correction protocols: pure functions from (item, condition, dialogue) to prompts."""

from __future__ import annotations

from workbench.protocols.conditions import (
    INSTRUCTIONS,
    Condition,
    ConditionError,
    factorial_conditions,
    parse_condition_name,
)
from workbench.protocols.demonstrations import (
    DEMONSTRATION_LABELS,
    Demonstration,
    DemonstrationError,
    DemonstrationLabels,
    DemonstrationPool,
)
from workbench.protocols.dialogue import Dialogue, PendingTurn, Turn, feedback_turn
from workbench.protocols.dialogue_interventions import (
    MASKING_FRACTIONS,
    WeakEvidence,
    add_weak_evidence,
    mask_turn_responses,
    mask_words,
)
from workbench.protocols.prompts import (
    RoundPrompt,
    complete_turn,
    demonstration_block,
    dialogue_complete,
    feedback_due,
    item_slots,
    next_prompt,
    transcript_rule,
)
from workbench.protocols.schedule import UnsupportedConditionError, dialogue_schedule
from workbench.protocols.templates import TEMPLATES, PromptTemplate, fill_template, get_template
from workbench.protocols.transcript_rules import TranscriptRuleError, TranscriptRules

__all__ = [
    "DEMONSTRATION_LABELS",
    "INSTRUCTIONS",
    "MASKING_FRACTIONS",
    "TEMPLATES",
    "Condition",
    "ConditionError",
    "Demonstration",
    "DemonstrationError",
    "DemonstrationLabels",
    "DemonstrationPool",
    "Dialogue",
    "PendingTurn",
    "PromptTemplate",
    "RoundPrompt",
    "TranscriptRuleError",
    "TranscriptRules",
    "Turn",
    "UnsupportedConditionError",
    "WeakEvidence",
    "add_weak_evidence",
    "complete_turn",
    "demonstration_block",
    "dialogue_complete",
    "dialogue_schedule",
    "factorial_conditions",
    "feedback_due",
    "feedback_turn",
    "fill_template",
    "get_template",
    "item_slots",
    "mask_turn_responses",
    "mask_words",
    "next_prompt",
    "parse_condition_name",
    "transcript_rule",
]
