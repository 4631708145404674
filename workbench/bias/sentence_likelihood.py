"""Sentence log-likelihoods under a language model.

Causal LMs: the total log-probability of a sentence's tokens, each conditioned on the tokens
before it. What conditions the first token is the ``prefix`` convention: ``"bos"`` (ours, the
default) prepends BOS when the tokenizer has one and otherwise leaves the first token unscored;
``"bos-or-eos"`` prepends BOS, else EOS, as lm-evaluation-harness's ``prefix_token_id`` does for
an empty context (``lm_eval/api/model.py`` ``loglikelihood``). Masked LMs: the
pseudo-log-likelihood of Nangia et al. (2020), summed over the tokens two sentences share.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

PREFIXES = ("bos", "bos-or-eos")


def prefix_token_id(tokenizer: PreTrainedTokenizerBase, prefix: str) -> int | None:
    """The token that conditions a sentence's first token under ``prefix`` (module docstring), or None.

    Raises:
        ValueError: ``prefix`` is unknown, or ``"bos-or-eos"`` on a tokenizer with neither token.
    """
    if prefix not in PREFIXES:
        raise ValueError(f"prefix is {prefix!r}; use one of {PREFIXES}")
    if tokenizer.bos_token_id is not None:
        return int(tokenizer.bos_token_id)
    if prefix == "bos":
        return None
    if tokenizer.eos_token_id is None:
        raise ValueError(f"prefix 'bos-or-eos': tokenizer {type(tokenizer).__name__} has neither BOS nor EOS")
    return int(tokenizer.eos_token_id)


def _encode_with_prefix(tokenizer: PreTrainedTokenizerBase, sentence: str, prefix_id: int | None) -> list[int]:
    """Token ids of ``sentence`` without special tokens, after ``prefix_id`` when it is not None."""
    ids: list[int] = tokenizer(sentence, add_special_tokens=False)["input_ids"]
    return ids if prefix_id is None else [prefix_id, *ids]


@torch.no_grad()
def causal_sentence_log_likelihoods(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    batch_size: int = 16,
    prefix: str = "bos",
) -> torch.Tensor:
    """Total log-likelihood (nats) of each sentence under a causal LM.

    Sentences are right-padded within a batch and the padded positions are excluded, so a
    sentence gets the same score alone or in any batch. ``prefix`` says what conditions the first
    token (module docstring); with ``"bos"`` and no BOS token the first token is not scored.

    Returns:
        float64 tensor of shape (len(sentences),).
    """
    prefix_id = prefix_token_id(tokenizer, prefix)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores: list[torch.Tensor] = []
    for start in range(0, len(sentences), batch_size):
        encoded = [_encode_with_prefix(tokenizer, s, prefix_id) for s in sentences[start : start + batch_size]]
        empty = [s for s, ids in zip(sentences[start:], encoded) if len(ids) < 2]
        if empty:
            raise ValueError(
                f"sentence {empty[0]!r} has fewer than 2 tokens to score; drop it, or use a tokenizer with BOS "
                "or prefix 'bos-or-eos'"
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
