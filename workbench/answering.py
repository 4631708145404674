"""One answer round for a batch: generate, score the options and capture, from a single prefill.

The naive way costs five passes over each prompt (generation, three option continuations, a
capture forward). Here the prompt is encoded once: ``generate`` runs with capture hooks that keep
only the prefill call, its key/value cache is cropped back to the prompt, repeated once per
option and reused to score every option continuation in one short forward. Values equal the
separate passes up to float noise (``tests/unit/test_answering.py`` checks it against
:func:`workbench.option_scoring.option_mean_nll` and :func:`workbench.hooks.capture_tokens`).
Positions that need the answer (``last``, ``answer_mean``) fall back to a clean capture forward
over prompt + answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import GenerationConfig

from workbench.hooks import Capture, capture_tokens
from workbench.hooks.layout import layout_for
from workbench.hooks.native import native_hooks
from workbench.hooks.plan import HookPlan
from workbench.hooks.positions import TokenBatch, position_name, select_position
from workbench.hooks.sites import Site, SiteKind
from workbench.models.loading import LoadedModel

PREFILL_POSITIONS = ("last_prompt",)


@dataclass(frozen=True)
class AnsweredBatch:
    """What one answer round produced for each prompt of a batch.

    Attributes:
        answer_ids: generated token ids, up to (not including) the first EOS.
        texts: decoded answers.
        option_nll: per prompt, ``[n_options]`` mean-token NLL (nats) of ``" " + label``.
        activations: ``(kind, position name) -> [batch, layers, *site]`` (CPU tensors).
    """

    answer_ids: list[list[int]]
    texts: list[str]
    option_nll: list[np.ndarray]
    activations: dict[tuple[SiteKind, str], torch.Tensor]


def answer_batch(
    model: LoadedModel,
    prompt_ids: Sequence[list[int]],
    option_labels: Sequence[str],
    sites: Sequence[Site],
    positions: Sequence[str | int],
    max_new_tokens: int,
    *,
    backend: str = "hf",
    dtype: torch.dtype = torch.float32,
) -> AnsweredBatch:
    """Answer one round for every prompt (all prompts share ``option_labels``; may be empty)."""
    tokenizer = model.tokenizer
    batch = TokenBatch.from_sequences(prompt_ids, [len(ids) for ids in prompt_ids], tokenizer.pad_token_id).to(model.device)
    prefill_capture = backend == "hf" and all(p in PREFILL_POSITIONS for p in positions)
    plan, store = _prefill_plan(sites, positions, batch, dtype) if prefill_capture else (HookPlan(), {})
    eos = model.model.generation_config.eos_token_id or tokenizer.eos_token_id
    eos_ids = sorted(set(eos) if isinstance(eos, list) else {eos})
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids,
        return_dict_in_generate=True,
        output_logits=True,
    )
    arch = model.architecture
    with torch.inference_mode(), native_hooks(model.model, layout_for(arch.model_type), arch.n_heads, plan):
        output = model.model.generate(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, generation_config=config
        )
    width = batch.input_ids.shape[1]
    answers = []
    for row in output.sequences[:, width:].tolist():
        cut = next((index for index, token in enumerate(row) if token in eos_ids), len(row))
        answers.append(row[:cut])
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in answers]
    option_nll = (
        _option_nll(model, batch, output.past_key_values, output.logits[0], option_labels)
        if option_labels
        else [np.empty(0) for _ in prompt_ids]
    )
    if prefill_capture:
        activations = {key: torch.stack([by_layer[layer] for layer in sorted(by_layer)], dim=1) for key, by_layer in store.items()}
    else:
        captured: Capture = capture_tokens(
            model, [ids + answer for ids, answer in zip(prompt_ids, answers)], [len(ids) for ids in prompt_ids],
            sites=[site.name for site in sites], positions=tuple(positions), backend=backend,
            batch_size=len(prompt_ids), dtype=dtype,
        )
        activations = dict(captured.values)
    return AnsweredBatch(answer_ids=answers, texts=texts, option_nll=option_nll, activations=activations)


def _prefill_plan(
    sites: Sequence[Site], positions: Sequence[str | int], batch: TokenBatch, dtype: torch.dtype
) -> tuple[HookPlan, dict[tuple[SiteKind, str], dict[int, torch.Tensor]]]:
    """Readers that keep the prefill call of ``generate`` (the first call per site) only."""
    plan = HookPlan()
    store: dict[tuple[SiteKind, str], dict[int, torch.Tensor]] = {}
    for site in sites:
        for position in positions:
            name = position_name(position)
            by_layer = store.setdefault((site.kind, name), {})

            def read(activation: torch.Tensor, site: Site = site, position: str | int = position, by_layer=by_layer) -> None:
                if site.layer in by_layer:
                    return  # a decode step: the prompt's values were kept at the prefill
                values, _ = select_position(activation, batch, position)
                by_layer[site.layer] = values.detach().to("cpu", dtype)

            plan.add_reader(site.layer, site.kind, read)
    return plan, store


def _option_nll(
    model: LoadedModel,
    batch: TokenBatch,
    cache,  # transformers Cache holding prompt + generated tokens
    first_logits: torch.Tensor,
    option_labels: Sequence[str],
) -> list[np.ndarray]:
    """Mean-token NLL of ``" " + label`` after each prompt, reusing the prompt's key/value cache.

    ``first_logits`` ``[batch, vocab]`` are the logits after the prompt (generation's first step);
    the remaining continuation tokens are scored in one forward over the cache repeated per option.
    """
    tokenizer = model.tokenizer
    continuations = [tokenizer(" " + label, add_special_tokens=False)["input_ids"] for label in option_labels]
    n_options, size, width = len(continuations), batch.size, batch.input_ids.shape[1]
    longest = max(len(ids) for ids in continuations)
    first = torch.log_softmax(first_logits.float(), dim=-1)
    nll_sum = torch.zeros(size, n_options, device=first.device)
    for index, ids in enumerate(continuations):
        nll_sum[:, index] = -first[:, ids[0]]
    if longest > 1:
        surplus = cache.get_seq_length() - width  # generated tokens fed back during decoding
        if surplus > 0:
            cache.crop(-surplus)
        cache.batch_repeat_interleave(n_options)
        inputs = torch.full((size * n_options, longest - 1), tokenizer.pad_token_id, device=first.device)
        mask = torch.zeros_like(inputs)
        for row in range(size):
            for index, ids in enumerate(continuations):
                inputs[row * n_options + index, : len(ids) - 1] = torch.as_tensor(ids[:-1], device=first.device)
                mask[row * n_options + index, : len(ids) - 1] = 1
        prefix_mask = batch.attention_mask.repeat_interleave(n_options, dim=0)
        positions = batch.lengths.repeat_interleave(n_options)[:, None] + torch.arange(longest - 1, device=first.device)
        with torch.inference_mode():
            logits = model.model(
                input_ids=inputs,
                attention_mask=torch.cat([prefix_mask, mask], dim=1),
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
            ).logits.float()
        log_probs = torch.log_softmax(logits, dim=-1).view(size, n_options, longest - 1, -1)
        for index, ids in enumerate(continuations):
            for step, token in enumerate(ids[1:]):
                nll_sum[:, index] -= log_probs[:, index, step, token]
    lengths = torch.as_tensor([len(ids) for ids in continuations], device=first.device, dtype=torch.float32)
    return list((nll_sum / lengths).cpu().numpy())
