"""One answer round for a batch: generate, score the options and capture, from a single prefill.

The naive way costs five passes over each prompt (generation, three option continuations, a
capture forward). Here the prompt is encoded once: ``generate`` runs with capture hooks that keep
only the prefill call, its key/value cache is cropped back to the prompt, repeated once per
option and reused to score every option continuation in one short forward. Values equal the
separate passes up to float noise (``tests/unit/test_answering.py`` checks it against
:func:`workbench.option_scoring.option_mean_nll` and :func:`workbench.hooks.capture_tokens`).
Positions that need the answer (``last``, ``answer_mean``) fall back to a clean capture forward
over prompt + answer.

Across rounds the transcript only grows, so each dialogue can keep its key/value cache
(:class:`DialogueKV`): the next round's prompt shares a token prefix with the previous prompt and
answer, and only the tokens after that prefix are encoded. Rows of a batch keep different cached
lengths; the batch lays each row out as ``[pad | cached | pad | new]`` with an attention mask over
the real tokens and positions counted on real tokens, so values equal a fresh encoding up to float
noise (``tests/unit/test_answering.py``; ``tests/benchmarks/bench_kv_reuse.py`` for the speed-up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache, GenerationConfig

from workbench.hooks import Capture, capture_tokens
from workbench.hooks.layout import layout_for
from workbench.hooks.native import native_hooks
from workbench.hooks.plan import HookPlan
from workbench.hooks.positions import TokenBatch, position_name, select_position
from workbench.hooks.sites import Site, SiteKind
from workbench.models.loading import LoadedModel

PREFILL_POSITIONS = ("last_prompt",)


@dataclass(frozen=True)
class DialogueKV:
    """One dialogue's key/value cache after its last answer round.

    Attributes:
        token_ids: the tokens the cache covers (prompt, then the answer tokens fed back while decoding).
        keys, values: per layer ``[kv_heads, len(token_ids), d_head]``.
    """

    token_ids: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    def reusable_prefix(self, prompt_ids: Sequence[int]) -> int:
        """Length of the common token prefix with ``prompt_ids``, leaving at least one new token."""
        limit = min(len(self.token_ids), len(prompt_ids) - 1)
        length = 0
        while length < limit and self.token_ids[length] == prompt_ids[length]:
            length += 1
        return length


@dataclass(frozen=True)
class AnsweredBatch:
    """What one answer round produced for each prompt of a batch.

    Attributes:
        answer_ids: generated token ids, up to (not including) the first EOS.
        texts: decoded answers.
        option_nll: per prompt, ``[n_options]`` mean-token NLL (nats) of ``" " + label``.
        activations: ``(kind, position name) -> [batch, layers, *site]`` (CPU tensors).
        caches: each dialogue's key/value cache after this round (empty when reuse is off).
        encoded_tokens: prompt tokens actually encoded (the rest came from reused caches).
    """

    answer_ids: list[list[int]]
    texts: list[str]
    option_nll: list[np.ndarray]
    activations: dict[tuple[SiteKind, str], torch.Tensor]
    caches: list[DialogueKV]
    encoded_tokens: int


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
    previous: Sequence[DialogueKV | None] | None = None,
    keep_caches: bool = False,
) -> AnsweredBatch:
    """Answer one round for every prompt (all prompts share ``option_labels``; may be empty).

    ``previous`` gives each dialogue's cache from its last round (``None`` for a first round);
    ``keep_caches`` returns the caches for the next round.
    """
    tokenizer = model.tokenizer
    layout = _Layout.build(prompt_ids, previous, tokenizer.pad_token_id, model.device)
    cache = layout.cache(model) if layout.cached_width else None
    prefill_capture = backend == "hf" and all(p in PREFILL_POSITIONS for p in positions)
    plan, store = _prefill_plan(sites, positions, layout.segment, dtype) if prefill_capture else (HookPlan(), {})
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
            input_ids=layout.input_ids, attention_mask=layout.attention_mask, past_key_values=cache,
            generation_config=config,
        )
    width = layout.input_ids.shape[1]
    answers = []
    for row in output.sequences[:, width:].tolist():
        cut = next((index for index, token in enumerate(row) if token in eos_ids), len(row))
        answers.append(row[:cut])
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in answers]
    caches = layout.split_cache(output.past_key_values, prompt_ids, answers) if keep_caches else []
    option_nll = (
        _option_nll(model, layout, output.past_key_values, output.logits[0], option_labels)
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
    return AnsweredBatch(
        answer_ids=answers, texts=texts, option_nll=option_nll, activations=activations, caches=caches,
        encoded_tokens=int(layout.segment.lengths.sum()),
    )


@dataclass(frozen=True)
class _Layout:
    """A batch laid out as ``[pad | cached | pad | new]`` per row.

    Attributes:
        input_ids, attention_mask: ``[batch, cached_width + new_width]``.
        cached_width: columns held by the reused caches (0 when nothing is reused).
        reused: per row, the number of cached tokens reused.
        previous: per row, the cache reused (or ``None``).
        segment: the new tokens alone as a :class:`TokenBatch` (left-padded), for position selection.
        lengths: ``[batch]`` real tokens per row (reused + new).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    cached_width: int
    reused: list[int]
    previous: list[DialogueKV | None]
    segment: TokenBatch
    lengths: torch.Tensor

    @classmethod
    def build(
        cls, prompt_ids: Sequence[list[int]], previous: Sequence[DialogueKV | None] | None, pad_id: int,
        device: torch.device,
    ) -> _Layout:
        previous = list(previous) if previous is not None else [None] * len(prompt_ids)
        reused = [kv.reusable_prefix(ids) if kv is not None else 0 for kv, ids in zip(previous, prompt_ids)]
        new = [ids[length:] for ids, length in zip(prompt_ids, reused)]
        segment = TokenBatch.from_sequences(new, [len(ids) for ids in new], pad_id).to(device)
        cached_width = max(reused)
        cached_ids = torch.full((len(prompt_ids), cached_width), pad_id, dtype=torch.long, device=device)
        cached_mask = torch.zeros_like(cached_ids)
        for row, (ids, length) in enumerate(zip(prompt_ids, reused)):
            if length:
                cached_ids[row, cached_width - length :] = torch.as_tensor(ids[:length], device=device)
                cached_mask[row, cached_width - length :] = 1
        return cls(
            input_ids=torch.cat([cached_ids, segment.input_ids], dim=1),
            attention_mask=torch.cat([cached_mask, segment.attention_mask], dim=1),
            cached_width=cached_width,
            reused=reused,
            previous=previous,
            segment=segment,
            lengths=torch.as_tensor([len(ids) for ids in prompt_ids], device=device),
        )

    def cache(self, model: LoadedModel) -> DynamicCache:
        """The reused caches stacked into one left-padded ``DynamicCache``."""
        n_layers = model.architecture.n_layers
        layers = []
        for layer in range(n_layers):
            keys, values = [], []
            for kv, length in zip(self.previous, self.reused):
                template = next(k for k in self.previous if k is not None)
                shape = (template.keys[layer].shape[0], self.cached_width, template.keys[layer].shape[2])
                key = template.keys[layer].new_zeros(shape)
                value = template.values[layer].new_zeros(shape)
                if kv is not None and length:
                    key[:, self.cached_width - length :] = kv.keys[layer][:, :length]
                    value[:, self.cached_width - length :] = kv.values[layer][:, :length]
                keys.append(key)
                values.append(value)
            layers.append((torch.stack(keys), torch.stack(values)))
        return DynamicCache(ddp_cache_data=layers, config=model.model.config)

    def split_cache(
        self, cache: DynamicCache, prompt_ids: Sequence[list[int]], answers: Sequence[list[int]]
    ) -> list[DialogueKV]:
        """Each row's real columns of ``cache`` after generation (prompt + fed-back answer tokens)."""
        width = self.input_ids.shape[1]
        fed = cache.get_seq_length() - width  # generated tokens fed back while decoding
        result = []
        for row, (ids, answer) in enumerate(zip(prompt_ids, answers)):
            kept = min(len(answer), fed)
            columns = torch.cat([
                self.attention_mask[row].nonzero().flatten(),
                torch.arange(width, width + kept, device=self.attention_mask.device),
            ])
            result.append(
                DialogueKV(
                    token_ids=list(ids) + list(answer[:kept]),
                    keys=[layer.keys[row][:, columns].clone() for layer in cache.layers],
                    values=[layer.values[row][:, columns].clone() for layer in cache.layers],
                )
            )
        return result


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
    layout: _Layout,
    cache: DynamicCache,
    first_logits: torch.Tensor,
    option_labels: Sequence[str],
) -> list[np.ndarray]:
    """Mean-token NLL of ``" " + label`` after each prompt, reusing the prompt's key/value cache.

    ``first_logits`` ``[batch, vocab]`` are the logits after the prompt (generation's first step);
    the remaining continuation tokens are scored in one forward over the cache repeated per option.
    """
    tokenizer = model.tokenizer
    continuations = [tokenizer(" " + label, add_special_tokens=False)["input_ids"] for label in option_labels]
    n_options, size, width = len(continuations), layout.input_ids.shape[0], layout.input_ids.shape[1]
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
        prefix_mask = layout.attention_mask.repeat_interleave(n_options, dim=0)
        positions = layout.lengths.repeat_interleave(n_options)[:, None] + torch.arange(longest - 1, device=first.device)
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
