"""Tiny randomly initialised BERT and RoBERTa masked LMs built from configs, with a word-level
tokenizer that adds the family's special tokens: for unit tests of the encoder paths (save one
with ``save_pretrained`` and load it back through :func:`workbench.finetune.encoders.load_encoder`).
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForMaskedLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForMaskedLM,
)

from workbench.models.architecture import ModelArchitecture
from workbench.models.loading import LoadedModel
from workbench.models.tiny import tiny_tokenizer

# (pad, unk, cls, sep, mask) as each family names them; RoBERTa's pad id is 1 (its position offset)
_SPECIALS = {
    "bert": ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
    "roberta": ("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
}


def tiny_encoder_tokenizer(family: str, vocab_size: int = 256) -> PreTrainedTokenizerFast:
    """A whitespace/punctuation word-level tokenizer over the tiny causal models' words, adding
    ``[CLS] … [SEP]`` (bert) or ``<s> … </s>`` (roberta) and padding on the right."""
    if family not in _SPECIALS:
        raise ValueError(f"unknown tiny encoder family {family!r}; use one of {sorted(_SPECIALS)}")
    specials = list(_SPECIALS[family])
    causal_specials = set(tiny_tokenizer(vocab_size).all_special_tokens)
    words = [w for w in tiny_tokenizer(vocab_size).get_vocab() if w not in causal_specials]
    vocab = {token: index for index, token in enumerate((specials + sorted(words))[:vocab_size])}
    if family == "bert":
        pad, unk, cls, sep, mask = specials
    else:
        cls, pad, sep, unk, mask = specials
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call, unused-ignore]  # untyped in transformers
        tokenizer_object=backend,
        pad_token=pad,
        unk_token=unk,
        cls_token=cls,
        sep_token=sep,
        mask_token=mask,
        padding_side="right",
    )
    if family == "roberta":
        tokenizer.bos_token, tokenizer.eos_token = cls, sep
    return tokenizer


def tiny_encoder(
    family: str = "bert",
    *,
    n_layers: int = 2,
    d_model: int = 32,
    n_heads: int = 4,
    vocab_size: int = 256,
    dropout: float = 0.1,
    seed: int = 0,
) -> LoadedModel:
    """A randomly initialised ``BertForMaskedLM`` or ``RobertaForMaskedLM`` (float32, CPU, eval mode)
    with :func:`tiny_encoder_tokenizer`; ``dropout`` is the hidden and attention dropout."""
    tokenizer = tiny_encoder_tokenizer(family, vocab_size)
    torch.manual_seed(seed)
    shape = {
        "vocab_size": vocab_size,
        "hidden_size": d_model,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "intermediate_size": 2 * d_model,
        "hidden_dropout_prob": dropout,
        "attention_probs_dropout_prob": dropout,
        "pad_token_id": tokenizer.pad_token_id,
    }
    model: PreTrainedModel
    if family == "bert":
        model = BertForMaskedLM(BertConfig(**shape, max_position_embeddings=128))
    else:
        model = RobertaForMaskedLM(
            RobertaConfig(
                **shape,
                max_position_embeddings=130,  # 128 positions after RoBERTa's pad_token_id + 1 offset
                bos_token_id=tokenizer.cls_token_id,
                eos_token_id=tokenizer.sep_token_id,
            )
        )
    model.eval()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in transformers
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=f"tiny-{family}",
        model_id=f"tiny-random-{family}",
        source="in-memory",
        weights_hash="in-memory",
        architecture=ModelArchitecture.from_config(model.config),
    )
