"""Sentence log-likelihoods under a language model.

Causal LMs: the total log-probability of a sentence's tokens, each conditioned on the tokens
before it (the first token conditioned on BOS when the tokenizer has one). Masked LMs: the
pseudo-log-likelihood of Nangia et al. (2020), summed over the tokens two sentences share.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase


def _encode_with_bos(tokenizer: PreTrainedTokenizerBase, sentence: str) -> list[int]:
    """Token ids of ``sentence`` without special tokens, with BOS prepended when one exists."""
    ids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id, *ids]
    return ids


@torch.no_grad()
def causal_sentence_log_likelihoods(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    batch_size: int = 16,
) -> torch.Tensor:
    """Total log-likelihood (nats) of each sentence under a causal LM.

    Sentences are right-padded within a batch and the padded positions are excluded, so a
    sentence gets the same score alone or in any batch. Without a BOS token the first token is
    not scored (nothing conditions it).

    Returns:
        float64 tensor of shape (len(sentences),).
    """
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores: list[torch.Tensor] = []
    for start in range(0, len(sentences), batch_size):
        encoded = [_encode_with_bos(tokenizer, s) for s in sentences[start : start + batch_size]]
        empty = [s for s, ids in zip(sentences[start:], encoded) if len(ids) < 2]
        if empty:
            raise ValueError(
                f"sentence {empty[0]!r} has fewer than 2 tokens to score; drop it or use a tokenizer with BOS"
            )
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.double()
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = input_ids[:, 1:]
        token_log_probs = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        scores.append((token_log_probs * attention_mask[:, 1:]).sum(dim=1).cpu())
    return torch.cat(scores) if scores else torch.zeros(0, dtype=torch.float64)


def shared_token_positions(ids_a: Sequence[int], ids_b: Sequence[int]) -> tuple[list[int], list[int]]:
    """Positions of the tokens two sentences share (unmodified by the minimal edit).

    The alignment is difflib's longest matching blocks over token ids, as in the CrowS-Pairs
    reference metric. Returns (positions in a, positions in b), of equal length, in order.
    """
    matcher = difflib.SequenceMatcher(None, list(ids_a), list(ids_b), autojunk=False)
    positions_a: list[int] = []
    positions_b: list[int] = []
    for op, a_start, a_end, b_start, b_end in matcher.get_opcodes():
        if op == "equal":
            positions_a.extend(range(a_start, a_end))
            positions_b.extend(range(b_start, b_end))
    return positions_a, positions_b


@torch.no_grad()
def masked_pseudo_log_likelihood(
    model: nn.Module, input_ids: Sequence[int], positions: Sequence[int], mask_token_id: int
) -> float:
    """Pseudo-log-likelihood (nats): Σ over ``positions`` of log P(token | sentence with it masked).

    ``input_ids`` include the tokenizer's special tokens ([CLS] ... [SEP]); one forward pass per
    masked position, batched into one call.
    """
    device = next(model.parameters()).device
    ids = torch.tensor(list(input_ids), dtype=torch.long, device=device)
    if not positions:
        return 0.0
    batch = ids.repeat(len(positions), 1)
    rows = torch.arange(len(positions), device=device)
    cols = torch.tensor(list(positions), device=device)
    batch[rows, cols] = mask_token_id
    log_probs = torch.log_softmax(model(input_ids=batch).logits.double(), dim=-1)
    return float(log_probs[rows, cols, ids[cols]].sum())


def masked_pair_pseudo_log_likelihoods(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, sentence_a: str, sentence_b: str
) -> tuple[float, float]:
    """Nangia et al. scores of a minimal pair under a masked LM: the PLL of each sentence over
    the tokens both share (special tokens excluded). Returns (score of a, score of b) in nats."""
    if tokenizer.mask_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no mask token; use a masked LM's tokenizer")
    ids_a = tokenizer(sentence_a)["input_ids"]
    ids_b = tokenizer(sentence_b)["input_ids"]
    special = set(tokenizer.all_special_ids)
    shared_a, shared_b = shared_token_positions(ids_a, ids_b)
    keep = [(i, j) for i, j in zip(shared_a, shared_b) if ids_a[i] not in special]
    positions_a = [i for i, _ in keep]
    positions_b = [j for _, j in keep]
    return (
        masked_pseudo_log_likelihood(model, ids_a, positions_a, tokenizer.mask_token_id),
        masked_pseudo_log_likelihood(model, ids_b, positions_b, tokenizer.mask_token_id),
    )
