"""Token batches with known prompt/answer boundaries, and position selection over them.

A *position* says which tokens of each sequence a capture keeps:

- ``"last_prompt"``: the last prompt token (where the model decides its answer), one vector;
- ``"last"``: the last token of prompt + answer, one vector;
- ``"answer_mean"``: the mean over the answer tokens, one vector;
- ``"answer_all"``: every answer token, ``[tokens, ...]`` with a mask;
- ``"all"``: every token, ``[tokens, ...]`` with a mask;
- an ``int``: that token of the sequence (0 = first real token, -1 = last), one vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

Position = str | int
VECTOR_POSITIONS = ("last_prompt", "last", "answer_mean")
TOKEN_POSITIONS = ("answer_all", "all")


class PositionError(ValueError):
    """A position that does not exist or does not fit the batch."""


def position_name(position: Position) -> str:
    """The name a position is stored under (``"last_prompt"``, ``"index_-1"``, ...)."""
    if isinstance(position, int):
        return f"index_{position}"
    if position not in VECTOR_POSITIONS + TOKEN_POSITIONS:
        raise PositionError(
            f"unknown position {position!r}; use one of {', '.join(VECTOR_POSITIONS + TOKEN_POSITIONS)} "
            "or a token index"
        )
    return position


def is_token_level(position: Position) -> bool:
    return isinstance(position, str) and position in TOKEN_POSITIONS


@dataclass(frozen=True)
class TokenBatch:
    """Padded token ids of several sequences, each a prompt followed by an (optional) answer.

    Attributes:
        input_ids: ``[batch, seq]`` token ids, padded on ``padding_side``.
        attention_mask: ``[batch, seq]``, 1 on real tokens.
        position_ids: ``[batch, seq]``, counting real tokens only, so that left padding gives
            the same positions (and so the same activations) as no padding.
        prompt_lengths: ``[batch]`` number of prompt tokens.
        lengths: ``[batch]`` number of real tokens (prompt + answer).
        starts: ``[batch]`` index of each sequence's first real token.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    prompt_lengths: torch.Tensor
    lengths: torch.Tensor
    starts: torch.Tensor

    @classmethod
    def from_sequences(
        cls,
        sequences: Sequence[Sequence[int]],
        prompt_lengths: Sequence[int],
        pad_token_id: int,
        padding_side: str = "left",
    ) -> TokenBatch:
        if not sequences:
            raise PositionError("empty batch: give at least one prompt")
        if padding_side not in ("left", "right"):
            raise PositionError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
        lengths = [len(sequence) for sequence in sequences]
        if min(lengths) == 0:
            raise PositionError(f"sequence {lengths.index(0)} is empty; every prompt needs at least one token")
        for index, (length, prompt_length) in enumerate(zip(lengths, prompt_lengths)):
            if not 0 < prompt_length <= length:
                raise PositionError(f"sequence {index}: prompt length {prompt_length} not in 1..{length}")
        width = max(lengths)
        ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        starts = []
        for row, sequence in enumerate(sequences):
            start = width - len(sequence) if padding_side == "left" else 0
            ids[row, start : start + len(sequence)] = torch.as_tensor(list(sequence), dtype=torch.long)
            mask[row, start : start + len(sequence)] = 1
            starts.append(start)
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        return cls(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids,
            prompt_lengths=torch.as_tensor(list(prompt_lengths), dtype=torch.long),
            lengths=torch.as_tensor(lengths, dtype=torch.long),
            starts=torch.as_tensor(starts, dtype=torch.long),
        )

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device) -> TokenBatch:
        return TokenBatch(**{name: getattr(self, name).to(device) for name in self.__dataclass_fields__})


def select_position(
    activation: torch.Tensor, batch: TokenBatch, position: Position
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keep the tokens ``position`` names from a site tensor.

    Args:
        activation: ``[batch, seq, *rest]``, the site over every token.
        batch: the token batch the activation came from.
        position: see the module docstring.

    Returns:
        ``(values, mask)``: for one-vector positions ``values`` is ``[batch, *rest]`` and
        ``mask`` is ``None``; for token positions ``values`` is ``[batch, tokens, *rest]``
        (left-aligned, zero-padded) and ``mask`` is ``[batch, tokens]`` bool.
    """
    device = activation.device
    starts = batch.starts.to(device)
    prompt_lengths = batch.prompt_lengths.to(device)
    lengths = batch.lengths.to(device)
    rows = torch.arange(activation.shape[0], device=device)
    if isinstance(position, int):
        offsets = torch.full_like(lengths, position) if position >= 0 else lengths + position
        if bool(((offsets < 0) | (offsets >= lengths)).any()):
            raise PositionError(f"token index {position} is outside a sequence of the batch")
        return activation[rows, starts + offsets], None
    if position == "last_prompt":
        return activation[rows, starts + prompt_lengths - 1], None
    if position == "last":
        return activation[rows, starts + lengths - 1], None
    if position in ("answer_mean", "answer_all"):
        first, count = starts + prompt_lengths, lengths - prompt_lengths
        if position == "answer_mean" and bool((count == 0).any()):
            raise PositionError("answer_mean needs an answer for every sequence; some have none")
    elif position == "all":
        first, count = starts, lengths
    else:
        raise PositionError(f"unknown position {position!r}")
    width = int(count.max())
    steps = torch.arange(width, device=device)
    mask = steps[None, :] < count[:, None]
    index = (first[:, None] + steps[None, :]).clamp(max=activation.shape[1] - 1)
    gathered = activation[rows[:, None], index]
    gathered = gathered * mask.view(*mask.shape, *([1] * (gathered.dim() - 2))).to(gathered.dtype)
    if position == "answer_mean":
        return gathered.sum(dim=1) / count.view(-1, *([1] * (gathered.dim() - 2))).to(gathered.dtype), None
    return gathered, mask


def in_context_continuation(
    tokenizer: PreTrainedTokenizerBase, prompt: str, continuation: str, *, add_special_tokens: bool
) -> tuple[list[int], list[int]]:
    """``(context ids, continuation ids)`` of ``prompt + continuation`` tokenized as one string.

    The split is at ``len(tokenizer(prompt))``: the rule of HaitaoMao/LLM-self-correction@071c790
    ``analysis/uncerntainty.py`` (``ECEError.get_logit``), which tokenizes ``input + " " + choice`` and
    masks the labels of the first ``len(tokenizer(input))`` tokens. The context ids equal the prompt's
    own ids unless the tokenizer merges across the boundary; the model is then fed the whole string's
    ids, as upstream.

    Args:
        tokenizer: the model's tokenizer.
        prompt: the prompt text exactly as the model sees it.
        continuation: the text appended, e.g. ``" (a)"``.
        add_special_tokens: as the prompt was tokenized (BOS for raw transcripts; chat-templated
            prompts carry their own markers).
    """
    prompt_length = len(tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])
    whole = list(tokenizer(prompt + continuation, add_special_tokens=add_special_tokens)["input_ids"])
    return whole[:prompt_length], whole[prompt_length:]
