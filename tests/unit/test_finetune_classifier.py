"""The fine-tuning classifiers as PAC-tuning builds them (MSU-NLP-CSS/PAC-tuning@f9efe2d, models.py and
pac_tuning.py::freeze_embedding): which parameters are frozen, batch = single for either padding,
the [CLS] head of encoders, and the dropout option."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedModel

from workbench.finetune.classifier import (
    CausalLMClassifier,
    EncoderClassifier,
    classifier_for,
    is_embedding_parameter,
    set_dropout,
)
from workbench.finetune.tiny_encoder import tiny_encoder
from workbench.models import tiny_model


def frozen_names(model: PreTrainedModel) -> set[str]:
    return {name for name, _ in classifier_for(model, 2).named_parameters() if is_embedding_parameter(name)}


def test_embeddings_frozen_by_upstreams_rule_for_every_family() -> None:
    # upstream freezes names containing 'embed', 'wpe.weight' or 'wte.weight'
    assert frozen_names(tiny_model("gpt2", d_model=16, n_heads=4).model) == {
        "backbone.wte.weight",
        "backbone.wpe.weight",
    }
    assert frozen_names(tiny_model(d_model=16, n_heads=4).model) == {"backbone.embed_tokens.weight"}
    bert = frozen_names(tiny_encoder("bert").model)
    assert bert == {
        "backbone.embeddings.word_embeddings.weight",
        "backbone.embeddings.position_embeddings.weight",
        "backbone.embeddings.token_type_embeddings.weight",
        "backbone.embeddings.LayerNorm.weight",
        "backbone.embeddings.LayerNorm.bias",
    }


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_left_padded_batch_equals_each_sequence_alone(family: str) -> None:
    """GPT-2's absolute positions shift under left padding unless position_ids count real tokens."""
    loaded = tiny_model(family, d_model=32, n_heads=4, n_kv_heads=2 if family == "llama" else 4)
    classifier = CausalLMClassifier(loaded.model, 3).eval()
    texts = ["the nurse said that she was young", "he was old"]
    batch = loaded.tokenizer(texts, return_tensors="pt", padding=True)
    assert loaded.tokenizer.padding_side == "left" and int(batch["attention_mask"][1, 0]) == 0
    together = classifier(batch["input_ids"], batch["attention_mask"])
    for row, text in enumerate(texts):
        alone = loaded.tokenizer([text], return_tensors="pt")
        single = classifier(alone["input_ids"], alone["attention_mask"])
        torch.testing.assert_close(together[row : row + 1], single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_encoder_reads_cls_and_right_padded_batch_equals_single(family: str) -> None:
    loaded = tiny_encoder(family, dropout=0.0)
    classifier = classifier_for(loaded.model, 2).eval()
    assert isinstance(classifier, EncoderClassifier)
    texts = ["the nurse said that she was young", "he was old"]
    batch = loaded.tokenizer(texts, return_tensors="pt", padding=True)
    together = classifier(batch["input_ids"], batch["attention_mask"])
    for row, text in enumerate(texts):
        alone = loaded.tokenizer([text], return_tensors="pt")
        torch.testing.assert_close(
            together[row : row + 1], classifier(alone["input_ids"], alone["attention_mask"]), atol=1e-5, rtol=1e-5
        )
    # the head reads the first position's final hidden state, not the pooler
    with torch.no_grad():
        hidden = loaded.model.base_model(**batch).last_hidden_state[:, 0]
        torch.testing.assert_close(together, classifier.head(hidden))
    left = loaded.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left")
    with pytest.raises(ValueError, match="pad batches on the right"):
        classifier(left["input_ids"], left["attention_mask"])


def test_dropout_zero_makes_training_mode_deterministic() -> None:
    loaded = tiny_encoder("bert", dropout=0.5)
    classifier = classifier_for(loaded.model, 2).train()
    batch = loaded.tokenizer(["the nurse said that she was young"], return_tensors="pt")
    with torch.no_grad():
        first, second = (classifier(batch["input_ids"], batch["attention_mask"]) for _ in range(2))
        assert not torch.allclose(first, second)
        set_dropout(classifier.backbone, 0.0)
        trained = classifier(batch["input_ids"], batch["attention_mask"])
        evaluated = classifier.eval()(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(trained, evaluated)
    llama = tiny_model(d_model=16, n_heads=4).model
    set_dropout(llama, 0.25)
    assert {layer.self_attn.attention_dropout for layer in llama.model.layers} == {0.25}
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        set_dropout(llama, 1.0)
