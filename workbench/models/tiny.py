"""Tiny randomly initialised models built from a config: for unit tests and quick experiments.

They need no files: a word-level tokenizer is built in memory, with a ChatML chat template,
so every code path of the workbench (chat templates, batching, capture, generation) runs in
milliseconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPVisionConfig,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3VisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

from workbench.models.architecture import ModelArchitecture
from workbench.models.loading import LoadedModel, prepare_tokenizer
from workbench.models.vision import VisionProcessor, build_vision_processor

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>", "<unk>"]
_WORDS = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "is",
    "was",
    "who",
    "what",
    "which",
    "can",
    "not",
    "be",
    "determined",
    "unknown",
    "answer",
    "please",
    "ensure",
    "that",
    "your",
    "unbiased",
    "and",
    "does",
    "rely",
    "on",
    "stereotypes",
    "review",
    "previous",
    "if",
    "you",
    "are",
    "very",
    "confident",
    "about",
    "maintain",
    "otherwise",
    "update",
    "man",
    "woman",
    "old",
    "young",
    "person",
    "doctor",
    "nurse",
    "he",
    "she",
    "they",
    "his",
    "her",
    "their",
    "it",
    "said",
    "could",
    "pay",
    "with",
    "cash",
    "grandfather",
    "grandson",
    "phone",
    "comfortable",
    "using",
    "one",
    "choice",
    "single",
    "most",
    "likely",
    "user",
    "assistant",
    "system",
    "(",
    ")",
    "a",
    "b",
    "c",
    ".",
    ",",
    "?",
    "!",
    ":",
    "\n",
]


def tiny_tokenizer(vocab_size: int = 256) -> PreTrainedTokenizerFast:
    """A whitespace/punctuation word-level tokenizer with ChatML specials, built in memory."""
    words = list(dict.fromkeys(_SPECIALS + [w for w in _WORDS if w]))
    words += [f"w{i}" for i in range(vocab_size - len(words))]
    vocab = {word: index for index, word in enumerate(words[:vocab_size])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call, unused-ignore]  # untyped in transformers
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    # TransformerLens reloads tokenizers by name unless these are present.
    tokenizer.init_kwargs["name_or_path"] = "in-memory"
    tokenizer.init_kwargs["add_bos_token"] = True
    return tokenizer


_SLIDING_WINDOW = 256
"""Sliding attention window of the tiny Mistral and Gemma models, in tokens (longer than any test prompt)."""


def _gemma3(shape: dict[str, Any], d_head: int) -> PreTrainedModel:
    """Gemma 3 (text only) alternating sliding and global attention layers, the first one sliding."""
    n_layers = shape["num_hidden_layers"]
    layer_types = [("sliding_attention", "full_attention")[layer % 2] for layer in range(n_layers)]
    config = Gemma3TextConfig(**shape, head_dim=d_head, sliding_window=_SLIDING_WINDOW, layer_types=layer_types)
    return Gemma3ForCausalLM(config)


_LLAMA_STYLE: dict[str, Callable[[dict[str, Any], int], PreTrainedModel]] = {
    # family -> (Llama-style config keywords, d_head) -> model; each comment names what the family adds
    "llama": lambda shape, d_head: LlamaForCausalLM(LlamaConfig(**shape)),
    "mistral": lambda shape, d_head: MistralForCausalLM(MistralConfig(**shape, sliding_window=_SLIDING_WINDOW)),
    "qwen2": lambda shape, d_head: Qwen2ForCausalLM(Qwen2Config(**shape)),  # q/k/v biases
    "qwen3": lambda shape, d_head: Qwen3ForCausalLM(Qwen3Config(**shape, head_dim=d_head)),  # per-head q/k norms
    # scaled embeddings, norms before and after attention and MLP, attention and final logit soft-capping
    "gemma2": lambda shape, d_head: Gemma2ForCausalLM(
        Gemma2Config(**shape, head_dim=d_head, sliding_window=_SLIDING_WINDOW)
    ),
    "gemma3": _gemma3,  # Gemma 2's sandwich norms, q/k norms instead of soft-capping
    "phi3": lambda shape, d_head: Phi3ForCausalLM(Phi3Config(**shape)),  # fused qkv_proj and gate_up_proj
    # no norm before attention or MLP, one after each; q/k norms over all heads together
    "olmo2": lambda shape, d_head: Olmo2ForCausalLM(Olmo2Config(**shape)),
}

TINY_FAMILIES = (*_LLAMA_STYLE, "gpt2", "gpt_neox")
"""The families :func:`tiny_model` builds: one per major decoder architecture the hook layout knows."""


def tiny_model(
    family: str = "llama",
    *,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    vocab_size: int = 256,
    seed: int = 0,
) -> LoadedModel:
    """A randomly initialised model of one of :data:`TINY_FAMILIES`, float32, CPU.

    Every family gets the same shape: ``n_layers`` blocks of width ``d_model``, ``n_heads`` query
    heads of ``d_model // n_heads`` each, ``n_kv_heads`` key/value heads where the family has
    grouped-query attention (GPT-2 and GPT-NeoX have none), an MLP of ``2 * d_model`` (GPT-2:
    ``4 * d_model``), 512 positions. ``mistral`` and the Gemmas have a 256-token sliding window;
    ``gpt_neox`` has the parallel attention + MLP residual of the Pythia models.

    Raises:
        ValueError: a family not in :data:`TINY_FAMILIES`.
    """
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny model family {family!r}; use one of {', '.join(TINY_FAMILIES)}")
    torch.manual_seed(seed)
    model: PreTrainedModel
    if family == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size,
            n_embd=d_model,
            n_layer=n_layers,
            n_head=n_heads,
            n_positions=512,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        model = GPT2LMHeadModel(config)
    elif family == "gpt_neox":
        neox = GPTNeoXConfig(
            vocab_size=vocab_size,
            hidden_size=d_model,
            intermediate_size=2 * d_model,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            max_position_embeddings=512,
            use_parallel_residual=True,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        model = GPTNeoXForCausalLM(neox)
    else:
        shape: dict[str, Any] = {  # the configs' keyword arguments, shared by the Llama-style families
            "vocab_size": vocab_size,
            "hidden_size": d_model,
            "intermediate_size": 2 * d_model,
            "num_hidden_layers": n_layers,
            "num_attention_heads": n_heads,
            "num_key_value_heads": n_kv_heads,
            "max_position_embeddings": 512,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        }
        model = _LLAMA_STYLE[family](shape, d_model // n_heads)
    model.eval()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in transformers
    model.generation_config.pad_token_id = 0
    tokenizer = tiny_tokenizer(vocab_size)
    prepare_tokenizer(tokenizer)
    return _in_memory(model, tokenizer, family)


def _in_memory(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, family: str, processor: VisionProcessor | None = None
) -> LoadedModel:
    """A tiny model as the loader returns one, its weights hashed from the state dict."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().numpy().tobytes())
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=f"tiny-{family}",
        model_id=f"tiny-random-{family}",
        source="in-memory",
        weights_hash="sha256:" + digest.hexdigest(),
        architecture=ModelArchitecture.from_config(model.config),
        processor=processor,
    )


VISION_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML with structured contents: an ``{"type": "image"}`` part becomes the ``<image>`` placeholder."""

TINY_VISION_FAMILIES = ("llava", "idefics3")
"""The vision-language families :func:`tiny_vision_model` builds."""

_IDEFICS3_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]


def tiny_vision_model(
    family: str = "llava",
    *,
    n_layers: int = 2,
    d_model: int = 32,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    seed: int = 0,
) -> LoadedModel:
    """A randomly initialised vision-language model of one of :data:`TINY_VISION_FAMILIES`, float32, CPU.

    The language model is a Llama of ``n_layers`` blocks of width ``d_model`` (as :func:`tiny_model`);
    the vision tower has 2 layers of width ``d_model`` over ``image_size`` x ``image_size`` images in
    ``patch_size`` patches. ``"llava"``: a CLIP tower, one image token per patch (16 at the defaults);
    ``"idefics3"``: a SigLIP-style tower and a pixel-shuffle connector (scale 2: 4 image tokens at the
    defaults), no tiling. The word-level tokenizer of :func:`tiny_tokenizer` gains the image tokens;
    the chat template is :data:`VISION_CHAT_TEMPLATE`.

    Raises:
        ValueError: a family not in :data:`TINY_VISION_FAMILIES`.
    """
    if family not in TINY_VISION_FAMILIES:
        raise ValueError(
            f"unknown tiny vision-language family {family!r}; use one of {', '.join(TINY_VISION_FAMILIES)}"
        )
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(256)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"] if family == "llava" else _IDEFICS3_TOKENS})
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    tower: dict[str, Any] = {  # the vision configs' keyword arguments, shared by both families
        "hidden_size": d_model,
        "intermediate_size": 2 * d_model,
        "num_hidden_layers": 2,
        "num_attention_heads": n_heads,
        "image_size": image_size,
        "patch_size": patch_size,
    }
    image_token_id = int(tokenizer.convert_tokens_to_ids("<image>"))  # type: ignore[arg-type]  # one token: one id
    model: PreTrainedModel
    image_processor: CLIPImageProcessorPil | Idefics3ImageProcessorPil
    if family == "llava":
        llava = LlavaConfig(
            vision_config=CLIPVisionConfig(**tower, projection_dim=d_model),
            text_config=text,
            image_token_index=image_token_id,
        )
        model = LlavaForConditionalGeneration(llava)
        image_processor = CLIPImageProcessorPil(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
    else:
        idefics3 = Idefics3Config(
            vision_config=Idefics3VisionConfig(**tower),
            text_config=text,
            image_token_id=image_token_id,
            scale_factor=2,
        )
        model = Idefics3ForConditionalGeneration(idefics3)
        image_processor = Idefics3ImageProcessorPil(
            do_image_splitting=False,
            size={"longest_edge": image_size},
            max_image_size={"longest_edge": image_size},
        )
    model.eval()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in transformers
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    prepare_tokenizer(tokenizer)
    processor = build_vision_processor(model.config, tokenizer, image_processor, VISION_CHAT_TEMPLATE)
    return _in_memory(model, tokenizer, family, processor)
