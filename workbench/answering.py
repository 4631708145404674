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

from workbench.generation import eos_token_ids, strip_at_eos
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
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_token_ids(model),
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
    answers = strip_at_eos(output.sequences[:, width:].tolist(), config.eos_token_id)
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
        template = next(kv for kv in self.previous if kv is not None)
        layers = []
        for layer in range(model.architecture.n_layers):
            heads, _, width = template.keys[layer].shape
            keys = template.keys[layer].new_zeros((len(self.previous), heads, self.cached_width, width))
            values = torch.zeros_like(keys)
            for row, (kv, length) in enumerate(zip(self.previous, self.reused)):
                if kv is not None and length:
                    keys[row, :, self.cached_width - length :] = kv.keys[layer][:, :length]
                    values[row, :, self.cached_width - length :] = kv.values[layer][:, :length]
            layers.append((keys, values))
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
            result.append(  # indexing with a column list copies, so the batch cache can be dropped
                DialogueKV(
                    token_ids=list(ids) + list(answer[:kept]),
                    keys=[layer.keys[row][:, columns] for layer in cache.layers],
                    values=[layer.values[row][:, columns] for layer in cache.layers],
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

    ``first_logits`` ``[batch, vocab]`` (after the prompt; generation's first step) score every
    option's first token. The later tokens are scored in one forward over a token tree: every
    proper prefix of an option continuation is one node (shared prefixes such as ``" ("`` once),
    placed at its depth's position and attending to the prompt and its own ancestors only, so no
    option sees another's tokens and the prompt's cache is not copied per option.
    """
    tokenizer = model.tokenizer
    continuations = [tokenizer(" " + label, add_special_tokens=False)["input_ids"] for label in option_labels]
    size, width = layout.input_ids.shape
    first = torch.log_softmax(first_logits.float(), dim=-1)
    nll_sum = torch.stack([-first[:, ids[0]] for ids in continuations], dim=1)  # [batch, options]
    nodes: dict[tuple[int, ...], int] = {}
    for ids in continuations:
        for end in range(1, len(ids)):
            nodes.setdefault(tuple(ids[:end]), len(nodes))
    if nodes:
        surplus = cache.get_seq_length() - width  # generated tokens fed back during decoding
        if surplus > 0:
            cache.crop(-surplus)
        prefixes = list(nodes)
        device = layout.input_ids.device
        tokens = torch.as_tensor([prefix[-1] for prefix in prefixes], device=device)
        depths = torch.as_tensor([len(prefix) - 1 for prefix in prefixes], device=device)
        ancestry = torch.as_tensor(
            [[prefix[: len(other)] == other for other in prefixes] for prefix in prefixes], device=device
        )
        allowed = torch.cat(
            [layout.attention_mask.bool()[:, None, :].expand(size, len(prefixes), width),
             ancestry[None].expand(size, -1, -1)],
            dim=2,
        )
        dtype = next(model.model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
        with torch.inference_mode():
            logits = model.model(
                input_ids=tokens.expand(size, -1),
                attention_mask=mask[:, None],
                position_ids=layout.lengths[:, None] + depths[None, :],
                past_key_values=cache,
                use_cache=True,
            ).logits.float()
        log_probs = torch.log_softmax(logits, dim=-1)  # [batch, nodes, vocab]
        for index, ids in enumerate(continuations):
            for end in range(1, len(ids)):
                nll_sum[:, index] -= log_probs[:, nodes[tuple(ids[:end])], ids[end]]
    lengths = torch.as_tensor([len(ids) for ids in continuations], device=nll_sum.device, dtype=torch.float32)
    return list((nll_sum / lengths).cpu().numpy())
