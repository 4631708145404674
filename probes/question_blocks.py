"""Paper 4's input representation: each record's round prompt cut at its first blank line.

HaitaoMao/LLM-self-correction (``analysis/regression_analysis.py::similarity_dist_bias``) takes
``input.split("\\n\\n")[0]`` of a round input, the question block, and reads its last-token
state; ``[probe] concept_input = "question_block"`` compares that state (not the cached state of
the whole round prompt) with the concept state. Records whose blocks coincide (every round of a
dialogue whose transcript starts with its first question, docs/protocols.md §1.4) share one
capture. The blocks are captured into the concept cache as records labelled ``INPUT_LABEL``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from probes.concept_capture import INPUT_LABEL
from probes.concept_sets import ConceptExample
from probes.errors import ProbeInputError

BLOCK_SEPARATOR = "\n\n"
INPUT_GROUP = "input"


def question_block(prompt: str) -> str:
    """The text of ``prompt`` before its first ``"\\n\\n"`` (the whole prompt when it has none)."""
    return prompt.split(BLOCK_SEPARATOR)[0]


@dataclass(frozen=True)
class QuestionBlocks:
    """The distinct question blocks of a run's records, as capturable examples.

    Attributes:
        examples: one per distinct block, id ``input/<sha256 of the block, 16 hex>``, label
            ``INPUT_LABEL``, in order of first use.
        rows: [n records] index into ``examples`` of each record's block.
        templated: ids to tokenize without special tokens (the run's prompts carried a chat
            template's); empty when the run tokenized its prompts with special tokens.
    """

    examples: list[ConceptExample]
    rows: np.ndarray
    templated: frozenset[str]

    @property
    def example_ids(self) -> list[str]:
        return [example.example_id for example in self.examples]


def question_blocks(prompts: Sequence[str], record_keys: Sequence[str], special_tokens: bool) -> QuestionBlocks:
    """The question blocks of records with ``prompts`` (``record_keys`` name them in errors).

    Args:
        prompts: [n] round prompts, as recorded.
        record_keys: [n] their record keys.
        special_tokens: whether the run tokenized its prompts with special tokens (faithful
            transcripts) or not (chat-templated prompts).

    Raises:
        ProbeInputError: a prompt whose block is blank (it opens with a blank line).
    """
    index: dict[str, int] = {}
    examples: list[ConceptExample] = []
    rows = np.empty(len(prompts), dtype=np.int64)
    for row, (prompt, key) in enumerate(zip(prompts, record_keys)):
        block = question_block(str(prompt))
        if not block.strip():
            raise ProbeInputError(
                f"record {key!r}: its prompt opens with a blank line, so its question block is empty; "
                'use [probe] concept_input = "round_prompt"'
            )
        if block not in index:
            index[block] = len(examples)
            digest = hashlib.sha256(block.encode("utf-8")).hexdigest()[:16]
            examples.append(ConceptExample(f"{INPUT_GROUP}/{digest}", INPUT_GROUP, block, INPUT_LABEL))
        rows[row] = index[block]
    templated = frozenset() if special_tokens else frozenset(example.example_id for example in examples)
    return QuestionBlocks(examples, rows, templated)
