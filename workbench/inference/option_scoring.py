"""Score multiple-choice options by log-probability (docs/protocols.md section 2.3).

For a prompt and option label ``c`` (``"(a)"``, ``"(b)"``, ...) the score is the mean token
negative log-likelihood of the continuation ``" " + c`` given the prompt; probabilities follow
as ``exp(-NLL)`` normalised over the options (:func:`workbench.metrics.options.option_probabilities`).
Small models' free text is often muddled; their option log-probabilities still carry the answer.

The continuation's tokens are those of the whole string ``prompt + " " + c``, never of ``" " + c``
tokenized alone: a SentencePiece tokenizer splits ``" (a)"`` alone as ``▁ ▁( a )`` (raw) or
``▁▁ ( a )`` (the legacy ``Prepend`` + ``Replace`` normalizer of many Llama-2 / Mistral
``tokenizer.json`` files), but as ``▁( a )`` after a prompt. After a prompt that ends in a space,
Metaspace tokenizers (transformers' ``LlamaTokenizer``, Gemma 3's) merge the two spaces into the
prompt's last token ``▁▁`` and leave the option ``( a )``. Byte-level BPE (GPT-2, SmolLM2) splits
``" (a)"`` the same either way. :func:`workbench.hooks.positions.in_context_continuation` splits
the whole string where the prompt's own tokenization ends, as the papers' scripts do, so the score
does not depend on any of this.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from workbench.hooks.positions import TokenBatch, in_context_continuation
from workbench.models.loading import LoadedModel


def option_mean_nll(
    model: LoadedModel,
    prompts: Sequence[str],
    option_labels: Sequence[Sequence[str]],
    *,
    add_special_tokens: bool,
    batch_size: int = 8,
) -> list[np.ndarray]:
    """Mean-token NLL (nats) of ``" " + label`` after each prompt, for every label of that prompt.

    Args:
        model: the model.
        prompts: prompt texts as the model sees them.
        option_labels: per prompt, its option labels (``"(a)"``, ...).
        add_special_tokens: as the prompts are tokenized (see
            :func:`workbench.hooks.positions.in_context_continuation`).
        batch_size: sequences per forward.

    Returns:
        one array ``[n_options]`` per prompt.
    """
    pairs: list[tuple[list[int], list[int]]] = []
    owners: list[int] = []
    for index, (prompt, labels) in enumerate(zip(prompts, option_labels)):
        for label in labels:
            pairs.append(
                in_context_continuation(model.tokenizer, prompt, " " + label, add_special_tokens=add_special_tokens)
            )
            owners.append(index)
    nll = continuation_mean_nll(model, pairs, batch_size)
    per_prompt: list[list[float]] = [[] for _ in prompts]
    for index, value in zip(owners, nll):
        per_prompt[index].append(float(value))
    return [np.asarray(values) for values in per_prompt]


def continuation_mean_nll(
    model: LoadedModel, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int = 8
) -> np.ndarray:
    """Mean-token NLL (nats) of each ``continuation`` given its ``prompt``; ``[n_pairs]``.

    An empty continuation scores NaN.
    """
    tokenizer = model.tokenizer
    nll = np.full(len(pairs), np.nan)
    scored = [index for index, (_, continuation) in enumerate(pairs) if len(continuation)]
    for start in range(0, len(scored), batch_size):
        chunk = [pairs[index] for index in scored[start : start + batch_size]]
        batch = TokenBatch.from_sequences(
            [list(prompt) + list(continuation) for prompt, continuation in chunk],
            [len(prompt) for prompt, _ in chunk],
            tokenizer.pad_token_id,
        ).to(model.device)
        # left padding puts every continuation at the end: only the last `keep` positions predict it
        keep = max(len(continuation) for _, continuation in chunk) + 1
        offset = batch.input_ids.shape[1] - keep
        with torch.inference_mode():
            logits = model.model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
                use_cache=False,
                logits_to_keep=keep,
            ).logits.float()
        log_probs = torch.log_softmax(logits, dim=-1)  # [batch, keep, vocab]
        for row, (prompt, continuation) in enumerate(chunk):
            first = int(batch.starts[row]) + len(prompt) - offset
            positions = torch.arange(first - 1, first - 1 + len(continuation), device=log_probs.device)
            targets = torch.as_tensor(list(continuation), device=log_probs.device)
            nll[scored[start + row]] = float(-log_probs[row, positions, targets].mean())
    return nll
