"""Batched greedy generation, the samples of the semantic uncertainty, and chat prompts built with the
model's own template.

Activations of generated text are not captured while decoding (KV-cached steps see one token
at a time, so shapes are ragged). The runner generates first, then captures with one clean
forward over prompt + answer (:func:`workbench.hooks.capture_tokens`); for a causal LM the
values are the same (tested in ``tests/unit/test_generation.py``).

A vision-language model's image items take their image in the first user turn
(:func:`image_chat_prompt`, the processor's chat template) and its pixels in generation
(``generate_greedy(..., images=...)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from transformers import Cache, DynamicCache, GenerationConfig, PreTrainedTokenizerBase, StaticCache
from transformers.cache_utils import StaticLayer

from workbench.hooks.positions import TokenBatch
from workbench.hooks.vision import image_forward_inputs, vision_processor
from workbench.models.loading import LoadedModel
from workbench.models.vision import ImageInputs, VisionModelError


class PromptTooLong(ValueError):
    """A prompt that does not fit the model's context."""


@dataclass(frozen=True)
class Generation:
    """Greedy continuations of a batch of prompts.

    Attributes:
        answer_ids: generated token ids of each prompt, up to (not including) the first EOS.
        texts: the decoded answers, special tokens removed.
    """

    answer_ids: list[list[int]]
    texts: list[str]


def chat_prompt(model: LoadedModel, messages: Sequence[dict[str, str]], assistant_prefix: str = "") -> str:
    """The model's chat template over ``messages`` with a generation prompt, then ``assistant_prefix``.

    Models without a chat template get the messages' contents joined by blank lines.
    """
    if model.tokenizer.chat_template:
        rendered = model.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        text = cast(str, rendered)  # one conversation, tokenize=False: one string (the type also covers token ids)
    else:
        text = "\n\n".join(message["content"] for message in messages) + "\n\n"
    return text + assistant_prefix


def image_chat_prompt(model: LoadedModel, messages: Sequence[dict[str, str]], assistant_prefix: str = "") -> str:
    """:func:`chat_prompt` of an image item: the image's placeholder opens the first user message.

    With the processor's chat template, every message's content becomes ``[{"type": "text", ...}]``
    and the first user message's ``[{"type": "image"}, {"type": "text", ...}]``, so the template puts
    the placeholder where the model was trained to see it; without one, the placeholder and a newline
    precede the first user message's text. Later rounds repeat the whole transcript, image included.

    Raises:
        VisionModelError: a text-only model, or no user message to carry the image.
    """
    processor = vision_processor(model)
    first_user = next((index for index, message in enumerate(messages) if message["role"] == "user"), None)
    if first_user is None:
        raise VisionModelError("an image item's prompt has no user message to carry the image")
    if processor.chat_template is None:
        contents = [
            processor.image_token + "\n" + message["content"] if index == first_user else message["content"]
            for index, message in enumerate(messages)
        ]
        return "\n\n".join(contents) + "\n\n" + assistant_prefix
    structured: Any = [  # structured contents; the tokenizer's stub types contents as strings
        {
            "role": message["role"],
            "content": ([{"type": "image"}] if index == first_user else [])
            + [{"type": "text", "text": message["content"]}],
        }
        for index, message in enumerate(messages)
    ]
    rendered = model.tokenizer.apply_chat_template(
        structured, chat_template=processor.chat_template, tokenize=False, add_generation_prompt=True
    )
    return cast(str, rendered) + assistant_prefix  # one conversation, tokenize=False: one string


def check_prompt_lengths(
    prompt_ids: Sequence[Sequence[int]], new_tokens: int, limit: int, labels: Sequence[str]
) -> None:
    """Raise :class:`PromptTooLong` naming the first prompt whose tokens + ``new_tokens`` exceed ``limit``."""
    for ids, label in zip(prompt_ids, labels):
        if len(ids) + new_tokens > limit:
            raise PromptTooLong(
                f"{label}: prompt of {len(ids)} tokens + {new_tokens} new tokens exceeds the limit of "
                f"{limit}; lower protocol.rounds or the token budgets, or raise protocol.max_prompt_tokens"
            )


def eos_token_ids(model: LoadedModel) -> list[int]:
    """The token ids that end a turn (the generation config's, else the tokenizer's EOS)."""
    eos = model.model.generation_config.eos_token_id or model.tokenizer.eos_token_id
    return sorted(set(eos) if isinstance(eos, list) else {eos})


def decode_text(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    """``ids`` decoded, special tokens removed (``decode`` is typed for batches too, which give a list)."""
    return cast(str, tokenizer.decode(ids, skip_special_tokens=True))


def generate_ids(model: LoadedModel, **kwargs: Any) -> torch.Tensor:
    """``model.model.generate(**kwargs)``: ``[batch, input + new]`` token ids.

    Typing only: ``LoadedModel.model`` is a ``PreTrainedModel``, which in transformers 5 leaves
    ``generate`` to ``GenerationMixin`` (mixed into every causal LM class) and types its ``self`` as
    a protocol no model class satisfies; without ``return_dict_in_generate`` the result is a tensor.
    """
    generator: Any = model.model
    return cast(torch.Tensor, generator.generate(**kwargs))


def strip_at_eos(rows: Sequence[Sequence[int]], eos_ids: Sequence[int]) -> list[list[int]]:
    """Each generated row up to (not including) its first EOS token."""
    stops = set(eos_ids)
    stripped = []
    for row in rows:
        cut = next((index for index, token in enumerate(row) if token in stops), len(row))
        stripped.append(list(row[:cut]))
    return stripped


def preallocated_cache(model: LoadedModel, length: int) -> Cache:
    """An empty key/value cache with room for ``length`` columns, written in place while decoding.

    transformers' default ``DynamicCache`` concatenates every decoded token onto each layer's keys
    and values, copying the whole cache once per step: on the packaged model (batch 8, 480-token
    prompts) that is about half of a decoding step. A ``StaticCache`` writes into buffers allocated
    once; its extra columns stay masked, so the values are the same. Models whose cache needs
    sliding-window or other special layers keep the ``DynamicCache``; as the workbench reads every
    token's keys and values back (option scoring, reuse across rounds), ``length`` must then fit
    the sliding window (else :class:`PromptTooLong`). Pass the cache to ``generate`` with
    ``disable_compile=True`` (a static cache otherwise triggers ``torch.compile`` on a GPU, once per
    batch shape).
    """
    config = model.model.config
    static = StaticCache(config=config, max_cache_len=length)
    if all(type(layer) is StaticLayer for layer in static.layers):
        return static
    window = getattr(config.get_text_config(decoder=True), "sliding_window", None)
    if window is not None and length >= window:  # a sliding layer keeps the last window - 1 tokens
        raise PromptTooLong(
            f"{model.model_id}: {length} tokens exceed the model's sliding attention window of {window}, and the "
            "workbench keeps every token's keys and values; shorten the prompts (protocol.rounds, token budgets)"
        )
    return DynamicCache(config=config)


def generate_greedy(
    model: LoadedModel,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int,
    batch_size: int = 8,
    images: Sequence[ImageInputs | None] | None = None,
) -> Generation:
    """Greedy decoding of each prompt (left-padded batches), stopping at EOS or ``max_new_tokens``.

    ``images`` (vision-language models): per prompt the image whose tokens it holds, or ``None``.
    """
    row_images = list(images) if images is not None else [None] * len(prompt_ids)
    tokenizer = model.tokenizer
    eos_ids = eos_token_ids(model)
    config = GenerationConfig(  # type: ignore[no-untyped-call, unused-ignore]  # untyped in transformers
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids,
        disable_compile=True,
    )
    answers: list[list[int]] = []
    for start in range(0, len(prompt_ids), batch_size):
        chunk = prompt_ids[start : start + batch_size]
        batch = TokenBatch.from_sequences(chunk, [len(ids) for ids in chunk], tokenizer.pad_token_id).to(model.device)
        image_inputs = image_forward_inputs(model, batch.input_ids, row_images[start : start + batch_size])
        with torch.inference_mode():
            output = generate_ids(
                model,
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                generation_config=config,
                past_key_values=preallocated_cache(model, batch.input_ids.shape[1] + max_new_tokens),
                **image_inputs,
            )
        answers.extend(strip_at_eos(output[:, batch.input_ids.shape[1] :].tolist(), eos_ids))
    texts = [decode_text(tokenizer, ids) for ids in answers]
    return Generation(answer_ids=answers, texts=texts)


SamplingMethod = Literal["beam-sample", "multinomial"]
"""How the samples of the semantic uncertainty are drawn (docs/protocols.md §2.2):

- ``"beam-sample"``: paper 4's draw (HaitaoMao/LLM-self-correction@071c790 ``analysis/uncerntainty.py``,
  ``semanticUncertainty.generate``): each sample is one run of Hugging Face's beam-search multinomial
  sampling with :data:`BEAM_SAMPLE_BEAMS` beams, temperature 1, top-p 1 and the library's default
  top-k of :data:`BEAM_SAMPLE_TOP_K`, returning its best beam; likelier and less diverse samples;
- ``"multinomial"``: ancestral sampling, one beam, temperature 1, no top-k, no top-p: independent
  draws from the model's own distribution.
"""
SAMPLING_METHODS: tuple[SamplingMethod, ...] = ("beam-sample", "multinomial")
BEAM_SAMPLE_BEAMS = 5
"""Beams of one paper-4 sample (``--num_beams 5``)."""
BEAM_SAMPLE_TOP_K = 50
"""Hugging Face's default ``top_k``, which paper 4's ``generate`` calls left in place."""


def sampling_config(model: LoadedModel, method: SamplingMethod, max_new_tokens: int, n_return: int) -> GenerationConfig:
    """The generation settings of ``method``, every one written out (nothing inherited from the model's
    own ``generation_config.json``), returning ``n_return`` sequences per input row."""
    if method not in SAMPLING_METHODS:
        raise ValueError(f"unknown sampling method {method!r}; use one of {', '.join(SAMPLING_METHODS)}")
    beam = method == "beam-sample"
    return GenerationConfig(  # type: ignore[no-untyped-call, unused-ignore]  # untyped in transformers
        max_new_tokens=max_new_tokens,
        do_sample=True,
        num_beams=BEAM_SAMPLE_BEAMS if beam else 1,
        temperature=1.0,
        top_k=BEAM_SAMPLE_TOP_K if beam else 0,
        top_p=1.0,
        length_penalty=1.0,
        early_stopping=False,
        num_return_sequences=n_return,
        pad_token_id=model.tokenizer.pad_token_id,
        eos_token_id=eos_token_ids(model),
    )


def sample_continuations(
    model: LoadedModel,
    prompt_ids: Sequence[Sequence[int]],
    n_samples: int,
    max_new_tokens: int,
    seed: int,
    method: SamplingMethod = "multinomial",
    batch_size: int | None = None,
) -> list[list[list[int]]]:
    """``n_samples`` sampled continuations per prompt, cut at EOS (see :data:`SamplingMethod`).

    ``"multinomial"`` draws all of a prompt's samples in one call (``num_return_sequences``);
    ``"beam-sample"`` runs one beam search per sample, as paper 4 called ``generate`` once per sample
    (``num_return_sequences`` would return the beams of a single search instead), with
    ``batch_size`` searches per call (``None``: all at once). Seeded, so a resumed run draws the same
    samples; the global torch generator is restored afterwards. Returns ``[prompt][sample] -> token ids``.
    """
    tokenizer = model.tokenizer
    if method == "beam-sample":
        config = sampling_config(model, method, max_new_tokens, 1)
        rows = [list(ids) for ids in prompt_ids for _ in range(n_samples)]
    else:
        config = sampling_config(model, method, max_new_tokens, n_samples)
        rows = [list(ids) for ids in prompt_ids]
    step = batch_size or len(rows)
    generated: list[list[int]] = []
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            batch = TokenBatch.from_sequences(chunk, [len(ids) for ids in chunk], tokenizer.pad_token_id).to(
                model.device
            )
            with torch.inference_mode():
                output = generate_ids(
                    model, input_ids=batch.input_ids, attention_mask=batch.attention_mask, generation_config=config
                )
            generated.extend(strip_at_eos(output[:, batch.input_ids.shape[1] :].tolist(), config.eos_token_id))
    finally:
        torch.random.set_rng_state(generator_state)
    return [generated[index * n_samples : (index + 1) * n_samples] for index in range(len(prompt_ids))]


def sample_text(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    """A sample's text as paper 4 compares and scores it: decoded without special tokens and without
    clean-up of tokenization spaces, stripped, newlines replaced by spaces
    (``' '.join(text.strip().split('\\n'))`` in ``semanticUncertainty.generate``)."""
    text = cast(str, tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False))
    return " ".join(text.strip().split("\n"))
