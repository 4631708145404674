"""Tiny randomly initialised models built from a config: for unit tests and quick experiments.

They need no files: a word-level tokenizer is built in memory, with a ChatML chat template,
so every code path of the workbench (chat templates, batching, capture, generation) runs in
milliseconds.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from workbench.models.architecture import ModelArchitecture
from workbench.models.loading import LoadedModel, prepare_tokenizer

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
    """A randomly initialised model, float32, CPU: ``llama`` (grouped-query attention), ``mistral``
    (the same with a 256-token sliding attention window) or ``gpt2``."""
    torch.manual_seed(seed)
    model: PreTrainedModel
    if family in ("llama", "mistral"):
        shape: dict[str, Any] = {  # the configs' keyword arguments, shared by both families
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
        if family == "llama":
            model = LlamaForCausalLM(LlamaConfig(**shape))
        else:
            model = MistralForCausalLM(MistralConfig(**shape, sliding_window=256))
    elif family == "gpt2":
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
    else:
        raise ValueError(f"unknown tiny model family {family!r}; use 'llama', 'mistral' or 'gpt2'")
    model.eval()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in transformers
    model.generation_config.pad_token_id = 0
    tokenizer = tiny_tokenizer(vocab_size)
    prepare_tokenizer(tokenizer)
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
    )
