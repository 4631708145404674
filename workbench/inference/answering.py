"""One answer round for a batch: generate, score the options and capture, from a single prefill.

The naive way costs five passes over each prompt (generation, three option continuations, a
capture forward). Here one forward encodes the prompts followed by the options' token tree
(every proper prefix of an option continuation, attending to the prompt and its own ancestors
only): it yields the first answer token, every option's log-probabilities and, through capture
hooks, the prompt's activations. The tree's cache columns are then dropped and ``generate``
decodes the rest of the answer from the prompt's cache. Values equal the separate passes up to
float noise (``tests/unit/test_answering.py`` checks them against
:func:`workbench.inference.option_scoring.option_mean_nll`, :func:`workbench.inference.generation.generate_greedy` and
:func:`workbench.hooks.capture_tokens`). Positions that need the answer (``last``,
``answer_mean``) fall back to a clean capture forward over prompt + answer.

Across rounds the transcript only grows, so each dialogue can keep its key/value cache
(:class:`DialogueKV`): the next round's prompt shares a token prefix with the previous prompt and
answer, and only the tokens after that prefix are encoded. Rows of a batch keep different cached
lengths; the batch lays each row out as ``[pad | cached | pad | new]`` with an attention mask over
the real tokens and positions counted on real tokens, so values equal a fresh encoding up to float
noise (``tests/unit/test_answering.py``; ``tests/benchmarks/bench_kv_reuse.py`` for the speed-up).
The batch cache is preallocated (:func:`workbench.inference.generation.preallocated_cache`), so decoding
writes in place instead of copying the cache at every step.

Another generation engine (:mod:`workbench.inference.engines`, ``[generation] engine``) replaces the
decoding only: the prefill still scores the options and captures, and the engine answers the
prompts from their token ids; the kept caches then cover the prompts (the next round re-encodes the
answer tokens).

A vision-language model answers image items the same way (``images``): the prefill passes the pixels
of every row whose image tokens it encodes (a row whose image tokens sit in a reused cache passes
none), decoding and option scoring read the image through the cache, and ``vision.hook_out`` is
read from the images themselves (:func:`workbench.hooks.vision.read_vision_site`). Only the ``hf``
engine decodes them (the others take token ids alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from transformers import Cache, GenerationConfig
from transformers.cache_utils import CacheLayerMixin, DynamicLayer, StaticLayer

from workbench.hooks import Capture, HookPlan, capture_tokens, hooked, site_reader
from workbench.hooks.nnsight_remote import RemoteMode
from workbench.hooks.positions import TokenBatch, in_context_continuation, position_name
from workbench.hooks.sites import Site, SiteKind
from workbench.hooks.vision import check_vision_backend, image_forward_inputs, read_vision_site
from workbench.inference.engines import GenerationEngine
from workbench.inference.generation import decode_text, eos_token_ids, generate_ids, preallocated_cache, strip_at_eos
from workbench.inference.option_scoring import continuation_mean_nll
from workbench.models.loading import LoadedModel
from workbench.models.vision import ImageInputs, VisionModelError

PREFILL_POSITIONS = ("last_prompt",)


@dataclass(frozen=True)
class DialogueKV:
    """One dialogue's key/value cache after its last answer round: its row of that round's batch cache.

    The batch cache is shared by the dialogues answered with it (it is freed with the last of
    them), so keeping a dialogue's cache copies nothing; the next round gathers the columns it
    reuses straight into its own batch cache.

    Attributes:
        token_ids: the tokens the cache covers (prompt, then the answer tokens fed back while decoding).
        batch_cache: the cache of the batch this dialogue was answered in.
        row: this dialogue's row in ``batch_cache``.
        columns: ``[len(token_ids)]`` the columns of ``batch_cache`` holding ``token_ids``, in order.
    """

    token_ids: list[int]
    batch_cache: Cache
    row: int
    columns: torch.Tensor

    def keys_values(self, layer: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the first ``length`` tokens at ``layer``, each ``[kv_heads, length, d_head]``."""
        keys, values = _buffers(self.batch_cache.layers[layer])
        columns = self.columns[:length]
        return keys[self.row][:, columns], values[self.row][:, columns]

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
    prompt_texts: Sequence[str] | None = None,
    add_special_tokens: bool = False,
    engine: GenerationEngine | None = None,
    remote: RemoteMode = False,
    images: Sequence[ImageInputs | None] | None = None,
) -> AnsweredBatch:
    """Answer one round for every prompt (all prompts share ``option_labels``; may be empty).

    ``previous`` gives each dialogue's cache from its last round (``None`` for a first round);
    ``keep_caches`` returns the caches for the next round. Options are scored on the tokens of
    ``prompt_text + " " + label`` tokenized as one string (see
    :func:`workbench.hooks.positions.in_context_continuation`), so ``prompt_texts`` (the texts
    ``prompt_ids`` were tokenized from, with ``add_special_tokens``) is required with options.
    ``engine`` decodes the answers unless it is ``None`` or ``"hf"`` (then ``generate`` decodes from
    the prefill's cache); it is called outside inference mode, which continuous batching refuses.
    ``remote`` (nnsight backend): the round's capture runs as one nnsight session, sent to NDIF or
    simulated (:mod:`workbench.hooks.nnsight_remote`).
    ``images`` (vision-language models): per prompt the image whose tokens it holds (expanded), or ``None``.
    """
    if max_new_tokens < 1:
        raise ValueError(f"an answer needs at least one new token, not max_new_tokens={max_new_tokens}")
    row_images = list(images) if images is not None else [None] * len(prompt_ids)
    with_images = any(image is not None for image in row_images)
    decode_here = engine is None or engine.name == "hf"
    if with_images:
        check_vision_backend(model, backend)
        if not decode_here:
            assert engine is not None
            raise VisionModelError(
                f'[generation] engine = "{engine.name}" decodes token ids alone and cannot see images; '
                'use engine = "hf" for image items'
            )
    tokenizer = model.tokenizer
    layout = _Layout.build(prompt_ids, previous, tokenizer.pad_token_id, model.device)
    scored = _option_continuations(model, prompt_ids, option_labels, prompt_texts, add_special_tokens)
    outside = [row for row, (pairs, in_tree) in enumerate(scored) if pairs and not in_tree]
    if with_images and any(row_images[row] is not None for row in outside):
        raise VisionModelError(
            f"the options of prompt {outside[0]} merge with the prompt's last tokens, so they would be scored "
            "without the image; end the prompt (chat template or assistant prefix) so that ' (a)' starts new tokens"
        )
    tree = _OptionTree.build([continuations for continuations, in_tree in scored if in_tree])
    cache = layout.cache(model, room=max(max_new_tokens if decode_here else 0, len(tree.prefixes)))
    prefill_capture = backend == "hf" and all(p in PREFILL_POSITIONS for p in positions)
    plan, store = _prefill_plan(sites, positions, layout.segment, dtype) if prefill_capture else (HookPlan(), {})
    image_inputs = image_forward_inputs(model, layout.segment.input_ids, row_images)
    eos_ids = eos_token_ids(model)
    width = layout.input_ids.shape[1]
    with torch.inference_mode():
        with hooked(model, plan):
            first_log_probs, node_log_probs = _prefill(model, layout, cache, tree, image_inputs)
        first_tokens = first_log_probs.argmax(dim=-1, keepdim=True)  # greedy, as generate would choose
        _rewind(cache, width)  # drop the option tree's columns; decoding continues after the prompt
        sequences = first_tokens
        if decode_here and max_new_tokens > 1 and not all(int(token) in eos_ids for token in first_tokens):
            config = GenerationConfig(  # type: ignore[no-untyped-call, unused-ignore]  # untyped in transformers
                max_new_tokens=max_new_tokens - 1,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos_ids,
                disable_compile=True,
            )
            output = generate_ids(
                model,
                input_ids=torch.cat([layout.input_ids, first_tokens], dim=1),
                attention_mask=torch.cat([layout.attention_mask, torch.ones_like(first_tokens)], dim=1),
                past_key_values=cache,
                generation_config=config,
            )
            sequences = output[:, width:]
    if decode_here:
        answers = strip_at_eos(sequences.tolist(), eos_ids)
        texts = [decode_text(tokenizer, ids) for ids in answers]
    else:
        assert engine is not None
        generation = engine.generate(prompt_ids, max_new_tokens)
        answers, texts = generation.answer_ids, generation.texts
    caches = layout.split_cache(cache, prompt_ids, answers) if keep_caches else []
    option_nll = (
        _option_nll(model, scored, tree, first_log_probs, node_log_probs)
        if option_labels
        else [np.empty(0) for _ in prompt_ids]
    )
    if prefill_capture:
        activations = {
            key: torch.stack([by_layer[layer] for layer in sorted(by_layer)], dim=1) for key, by_layer in store.items()
        }
        if any(site.kind is SiteKind.VISION_OUT for site in sites):
            activations.update(_vision_activations(model, row_images, positions, dtype))
    else:
        captured: Capture = capture_tokens(
            model,
            [ids + answer for ids, answer in zip(prompt_ids, answers)],
            [len(ids) for ids in prompt_ids],
            sites=[site.name for site in sites],
            positions=tuple(positions),
            backend=backend,
            batch_size=len(prompt_ids),
            dtype=dtype,
            remote=remote,
            images=images,
        )
        activations = dict(captured.stacked)
    return AnsweredBatch(
        answer_ids=answers,
        texts=texts,
        option_nll=option_nll,
        activations=activations,
        caches=caches,
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
        cls,
        prompt_ids: Sequence[list[int]],
        previous: Sequence[DialogueKV | None] | None,
        pad_id: int,
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

    def cache(self, model: LoadedModel, room: int) -> Cache:
        """A cache for the whole batch, with ``room`` columns after the input: the reused caches,
        left-padded into the first ``cached_width`` columns (see :func:`preallocated_cache`)."""
        cache = preallocated_cache(model, self.input_ids.shape[1] + room)
        if not self.cached_width:
            return cache
        size, width = len(self.previous), self.cached_width
        template, _ = _buffers(next(kv for kv in self.previous if kv is not None).batch_cache.layers[0])
        static = isinstance(cache.layers[0], StaticLayer)
        if static:  # write straight into the preallocated buffers
            cache.early_initialization(size, template.shape[1], template.shape[3], template.dtype, template.device)
        for index, layer in enumerate(cache.layers):
            if static:
                layer_keys, layer_values = _buffers(layer)
                keys, values = layer_keys[:, :, :width], layer_values[:, :, :width]
            else:
                keys = template.new_zeros((size, template.shape[1], width, template.shape[3]))
                values = torch.zeros_like(keys)
            for row, (kv, length) in enumerate(zip(self.previous, self.reused)):
                if kv is not None and length:
                    keys[row, :, width - length :], values[row, :, width - length :] = kv.keys_values(index, length)
            if static:
                cast(StaticLayer, layer).cumulative_length.fill_(width)
            else:  # a DynamicCache (see preallocated_cache)
                cast(DynamicLayer, layer).update(keys, values)
        return cache

    def split_cache(
        self, cache: Cache, prompt_ids: Sequence[list[int]], answers: Sequence[list[int]]
    ) -> list[DialogueKV]:
        """Each row's real columns of ``cache`` after generation (prompt + fed-back answer tokens)."""
        width = self.input_ids.shape[1]
        fed = int(cache.get_seq_length()) - width  # generated tokens fed back while decoding
        result = []
        for row, (ids, answer) in enumerate(zip(prompt_ids, answers)):
            kept = min(len(answer), fed)
            columns = torch.cat(
                [
                    self.attention_mask[row].nonzero().flatten(),
                    torch.arange(width, width + kept, device=self.attention_mask.device),
                ]
            )
            result.append(
                DialogueKV(token_ids=list(ids) + list(answer[:kept]), batch_cache=cache, row=row, columns=columns)
            )
        return result


def _vision_activations(
    model: LoadedModel, images: Sequence[ImageInputs | None], positions: Sequence[str | int], dtype: torch.dtype
) -> dict[tuple[SiteKind, str], torch.Tensor]:
    """``vision.hook_out`` of every row at every position: ``[batch, 1, d_model]`` (one layer, numbered 0).

    Raises:
        VisionModelError: a row without an image.
    """
    if any(image is None for image in images):
        raise VisionModelError("vision.hook_out reads each prompt's image; every item of the batch needs one")
    values = read_vision_site(model, [image for image in images if image is not None], dtype)[:, None]
    return {(SiteKind.VISION_OUT, position_name(position)): values for position in positions}


def _prefill_plan(
    sites: Sequence[Site], positions: Sequence[str | int], batch: TokenBatch, dtype: torch.dtype
) -> tuple[HookPlan, dict[tuple[SiteKind, str], dict[int, torch.Tensor]]]:
    """Readers of the prefill forward: ``(kind, position name) -> layer -> [batch, *site]`` values
    (``vision.hook_out`` is read from the images, not the prefill: :func:`_vision_activations`)."""
    plan = HookPlan()
    store: dict[tuple[SiteKind, str], dict[int, torch.Tensor]] = {}
    for site in sites:
        if site.kind is SiteKind.VISION_OUT:
            continue
        for position in positions:
            by_layer = store.setdefault((site.kind, position_name(position)), {})
            plan.add_reader(site.layer, site.kind, site_reader(site, position, batch, by_layer, dtype))
    return plan, store


_RowContinuations = tuple[list[tuple[list[int], list[int]]], bool]
"""Per option ``(context ids, continuation ids)``, and whether the row's options ride in the option tree."""


def _option_continuations(
    model: LoadedModel,
    prompt_ids: Sequence[list[int]],
    option_labels: Sequence[str],
    prompt_texts: Sequence[str] | None,
    add_special_tokens: bool,
) -> list[_RowContinuations]:
    """Each row's in-context option tokens; a row rides in the tree when its context is its prompt.

    The context differs from the prompt's ids only when the tokenizer merges the prompt's last
    characters with the option's first (or a continuation is empty): such a row is scored by its
    own forward over the whole string's ids, as the papers' scripts do.
    """
    if not option_labels:
        return [([], False) for _ in prompt_ids]
    if prompt_texts is None or len(prompt_texts) != len(prompt_ids):
        raise ValueError("answer_batch: options are scored in context, so pass prompt_texts (one per prompt)")
    rows: list[_RowContinuations] = []
    for ids, text in zip(prompt_ids, prompt_texts):
        pairs = [
            in_context_continuation(model.tokenizer, text, " " + label, add_special_tokens=add_special_tokens)
            for label in option_labels
        ]
        in_tree = all(context == list(ids) and continuation for context, continuation in pairs)
        rows.append((pairs, in_tree))
    return rows


def _option_nll(
    model: LoadedModel,
    scored: Sequence[_RowContinuations],
    tree: _OptionTree,
    first_log_probs: torch.Tensor,
    node_log_probs: torch.Tensor,
) -> list[np.ndarray]:
    """Per row ``[options]`` mean-token NLL: from the tree's forward, or a forward of the row's own."""
    in_tree = [row for row, (_, rides) in enumerate(scored) if rides]
    from_tree = tree.mean_nll(first_log_probs[in_tree], node_log_probs[in_tree]) if in_tree else []
    by_row = dict(zip(in_tree, from_tree))
    outside = [(row, pairs) for row, (pairs, rides) in enumerate(scored) if not rides]
    if outside:
        flat = [pair for _, pairs in outside for pair in pairs]
        values = continuation_mean_nll(model, flat, batch_size=len(flat))
        width = len(outside[0][1])
        for position, (row, _) in enumerate(outside):
            by_row[row] = values[position * width : (position + 1) * width]
    return [np.asarray(by_row[row]) for row in range(len(scored))]


@dataclass(frozen=True)
class _OptionTree:
    """Every row's option continuations (in-context token ids of ``" " + label``) as one token tree.

    Every proper prefix of a continuation is one node (shared ones such as ``" ("`` once). A node
    is placed at its depth's position after the prompt and attends to the prompt and its own
    ancestors only, so one forward scores every option's later tokens without any option seeing
    another's, and without copying the prompt's cache per option.

    Rows may split an option differently (the in-context tokens depend on the prompt's end): the
    tree holds the union of their prefixes, and each row reads its own.

    Attributes:
        continuations: per row, the token ids of each option's continuation.
        prefixes: the nodes, in order.
        tokens, depths: ``[nodes]`` each node's last token and its depth (0 = first continuation token).
        ancestry: ``[nodes, nodes]`` bool, ``ancestry[i, j]`` when node ``j`` is node ``i`` or one of its ancestors.
    """

    continuations: list[list[list[int]]]
    prefixes: list[tuple[int, ...]]
    tokens: torch.Tensor
    depths: torch.Tensor
    ancestry: torch.Tensor

    @classmethod
    def build(cls, rows: Sequence[Sequence[tuple[list[int], list[int]]]]) -> _OptionTree:
        """The tree of ``rows``: per row, per option ``(context ids, continuation ids)``."""
        continuations = [[list(continuation) for _, continuation in row] for row in rows]
        nodes: dict[tuple[int, ...], None] = {}
        for row_continuations in continuations:
            for ids in row_continuations:
                for end in range(1, len(ids)):
                    nodes.setdefault(tuple(ids[:end]))
        prefixes = list(nodes)
        return cls(
            continuations=continuations,
            prefixes=prefixes,
            tokens=torch.as_tensor([prefix[-1] for prefix in prefixes], dtype=torch.long),
            depths=torch.as_tensor([len(prefix) - 1 for prefix in prefixes], dtype=torch.long),
            ancestry=torch.as_tensor(
                [[prefix[: len(other)] == other for other in prefixes] for prefix in prefixes], dtype=torch.bool
            ).reshape(len(prefixes), len(prefixes)),
        )

    def mean_nll(self, first_log_probs: torch.Tensor, node_log_probs: torch.Tensor) -> list[np.ndarray]:
        """Per row of the tree, ``[options]`` mean-token NLL (nats) of each continuation.

        Args:
            first_log_probs: ``[rows, vocab]`` next-token log-probabilities after each prompt.
            node_log_probs: ``[rows, nodes, vocab]`` next-token log-probabilities after each node.
        """
        index = {prefix: position for position, prefix in enumerate(self.prefixes)}
        per_row = []
        for row, continuations in enumerate(self.continuations):
            terms = [
                torch.stack(
                    [first_log_probs[row, ids[0]]]
                    + [node_log_probs[row, index[tuple(ids[:end])], ids[end]] for end in range(1, len(ids))]
                )
                for ids in continuations
            ]
            per_row.append(torch.stack([-term.mean() for term in terms]).cpu().numpy())
        return per_row


def _buffers(layer: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(keys, values)`` buffers of a cache layer already written (or early-initialised).

    Typing only: ``Cache.layers`` also admits transformers' linear-attention and dummy layers, whose
    buffers are ``None`` before the first write; the caches here (:func:`preallocated_cache`) hold
    attention layers only, read after they are written.
    """
    written = cast(CacheLayerMixin, layer)
    return cast(torch.Tensor, written.keys), cast(torch.Tensor, written.values)


def _rewind(cache: Cache, length: int) -> None:
    """Forget every cached column after the first ``length``."""
    surplus = int(cache.get_seq_length()) - length
    if surplus <= 0:
        return
    for layer in cache.layers:
        if isinstance(layer, StaticLayer):
            layer.cumulative_length.fill_(length)  # later writes overwrite the stale columns
        else:  # a DynamicCache's layer (see preallocated_cache)
            cast(DynamicLayer, layer).crop(-surplus)


def _prefill(
    model: LoadedModel, layout: _Layout, cache: Cache, tree: _OptionTree, image_inputs: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over the batch's new tokens followed by the option tree's nodes.

    ``image_inputs``: the pixel arguments of the rows whose new tokens hold an image (empty for a text batch).

    The new tokens attend causally to the real tokens (cached and new), each node to the real
    tokens and its own ancestors; positions count real tokens only. The cache receives the new
    tokens' columns, then the nodes' (to be dropped with :func:`_rewind`).

    Returns:
        ``([batch, vocab], [batch, nodes, vocab])`` float32 log-probabilities of the next token
        after each prompt and after each node.
    """
    size, width = layout.input_ids.shape
    device = layout.input_ids.device
    new_width, n_nodes = layout.segment.input_ids.shape[1], len(tree.prefixes)
    queries = new_width + n_nodes
    first_layer = cache.layers[0]  # a preallocated cache masks its spare columns
    columns = first_layer.max_cache_len if isinstance(first_layer, StaticLayer) else width + n_nodes
    real = torch.zeros((size, columns), dtype=torch.bool, device=device)
    real[:, :width] = layout.attention_mask.bool()
    column = torch.arange(columns, device=device)
    allowed = torch.zeros((size, queries, columns), dtype=torch.bool, device=device)
    prompt_columns = torch.arange(layout.cached_width, width, device=device)
    allowed[:, :new_width] = real[:, None, :] & (column[None, :] <= prompt_columns[:, None])[None]
    allowed[:, new_width:, :width] = real[:, None, :width]
    allowed[:, new_width:, width : width + n_nodes] = tree.ancestry.to(device)[None]
    dtype = next(model.model.parameters()).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    positions = (layout.attention_mask.cumsum(dim=-1) - 1).masked_fill(layout.attention_mask == 0, 1)
    input_ids = torch.cat([layout.segment.input_ids, tree.tokens.to(device).expand(size, -1)], dim=1)
    position_ids = torch.cat(
        [positions[:, layout.cached_width :], layout.lengths[:, None] + tree.depths.to(device)[None, :]], dim=1
    )
    keep = torch.arange(new_width - 1, queries, device=device)  # the last prompt token, then every node
    logits = model.model(
        input_ids=input_ids,
        attention_mask=mask[:, None],
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=keep,
        **image_inputs,
    ).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return log_probs[:, 0], log_probs[:, 1:]
