"""Score multiple-choice options by log-probability (protocols.md section 2.3).

For a prompt and option label ``c`` (``"(a)"``, ``"(b)"``, ...) the score is the mean token
negative log-likelihood of the continuation ``" " + c`` given the prompt; probabilities follow
as ``exp(-NLL)`` normalised over the options (:func:`workbench.metrics.options.option_probabilities`).
Small models' free text is often muddled; their option log-probabilities still carry the answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from workbench.hooks.positions import TokenBatch
from workbench.models.loading import LoadedModel


def option_mean_nll(
    model: LoadedModel,
    prompt_ids: Sequence[Sequence[int]],
    option_labels: Sequence[Sequence[str]],
    batch_size: int = 8,
) -> list[np.ndarray]:
    """Mean-token NLL (nats) of ``" " + label`` after each prompt, for every label of that prompt.

    Returns:
        one array ``[n_options]`` per prompt.
    """
    tokenizer = model.tokenizer
    pairs: list[tuple[int, list[int], list[int]]] = []
    for index, (ids, labels) in enumerate(zip(prompt_ids, option_labels)):
        for label in labels:
            continuation = tokenizer(" " + label, add_special_tokens=False)["input_ids"]
            pairs.append((index, list(ids), continuation))
    nll = np.empty(len(pairs))
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = TokenBatch.from_sequences(
            [prompt + continuation for _, prompt, continuation in chunk],
            [len(prompt) for _, prompt, _ in chunk],
            tokenizer.pad_token_id,
        ).to(model.device)
        with torch.inference_mode():
            logits = model.model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
                use_cache=False,
            ).logits.float()
        log_probs = torch.log_softmax(logits, dim=-1)
        for row, (_, prompt, continuation) in enumerate(chunk):
            first = int(batch.starts[row]) + len(prompt)
            positions = torch.arange(first - 1, first - 1 + len(continuation), device=log_probs.device)
            targets = torch.as_tensor(continuation, device=log_probs.device)
            nll[start + row] = float(-log_probs[row, positions, targets].mean())
    per_prompt: list[list[float]] = [[] for _ in prompt_ids]
    for (index, _, _), value in zip(pairs, nll):
        per_prompt[index].append(value)
    return [np.asarray(values) for values in per_prompt]
