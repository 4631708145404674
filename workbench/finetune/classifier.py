"""Classification heads on a pretrained backbone, as PAC-tuning builds them
(``MSU-NLP-CSS/PAC-tuning@f9efe2d models.py``: ``bert_clf``, ``gpt2_clf``):

- :class:`CausalLMClassifier` (decoders: GPT-2, Llama, ...): the last real token's final hidden
  state -> Linear(d_model, n_classes). ``position_ids`` count real tokens only, so a left-padded
  batch gives every sequence the positions it has alone (absolute-position models such as GPT-2
  would otherwise shift; rotary models are unaffected either way).
- :class:`EncoderClassifier` (BERT, RoBERTa): the first token's ([CLS] / ``<s>``) final hidden
  state -> Linear(d_model, n_classes), no pooler, on right-padded batches.

Both wrap ``model.base_model``, so the wrapped model is trained in place, and name their
parameters ``backbone.*`` and ``head.weight`` / ``head.bias``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from workbench.finetune.encoders import is_encoder_config

HEAD_PARAMETERS = ("head.weight", "head.bias")


def is_embedding_parameter(name: str) -> bool:
    """PAC-tuning's freeze rule (``pac_tuning.py::freeze_embedding``): a name containing ``embed``
    (Llama ``embed_tokens``, every BERT/RoBERTa ``embeddings.*`` tensor including their LayerNorm)
    or ending in GPT-2's ``wte.weight`` / ``wpe.weight``."""
    return "embed" in name or name.endswith(("wte.weight", "wpe.weight"))


def set_dropout(module: nn.Module, probability: float) -> None:
    """Set every dropout probability inside ``module``: each ``nn.Dropout`` (BERT hidden and
    attention dropout, GPT-2 embedding/attention/residual dropout) and each float
    ``attention_dropout`` attribute (Llama-style attention modules)."""
    if not 0.0 <= probability < 1.0:
        raise ValueError(f"dropout probability {probability} is outside [0, 1)")
    for child in module.modules():
        if isinstance(child, nn.Dropout):
            child.p = probability
        elif isinstance(getattr(child, "attention_dropout", None), float):
            setattr(child, "attention_dropout", probability)  # noqa: B010 (an attribute, not a submodule)


class CausalLMClassifier(nn.Module):
    """Last-real-token classifier on a causal LM's base model (either padding side)."""

    HEAD_PARAMETERS = HEAD_PARAMETERS
    padding_side: str | None = None  # the tokenizer's own (left after workbench loading)

    def __init__(self, causal_lm: PreTrainedModel, n_classes: int) -> None:
        super().__init__()
        self.backbone = causal_lm.base_model
        self.head = nn.Linear(causal_lm.config.hidden_size, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits [batch, n_classes] from ``input_ids`` / ``attention_mask`` [batch, seq] (either padding side)."""
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (attention_mask * positions).argmax(dim=1)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.head(hidden[rows, last])


class EncoderClassifier(nn.Module):
    """[CLS] classifier on an encoder's base model (BERT, RoBERTa), as upstream's ``bert_clf``:
    ``last_hidden_state[:, 0]`` -> Linear, the pooler unused."""

    HEAD_PARAMETERS = HEAD_PARAMETERS
    padding_side: str | None = "right"  # [CLS] first; RoBERTa derives its positions from the pads

    def __init__(self, encoder: PreTrainedModel, n_classes: int) -> None:
        super().__init__()
        self.backbone = encoder.base_model
        self.head = nn.Linear(encoder.config.hidden_size, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits [batch, n_classes] from right-padded ``input_ids`` / ``attention_mask`` [batch, seq].

        Raises:
            ValueError: a row does not start with a real token (a left-padded batch).
        """
        if not bool(attention_mask[:, 0].all()):
            raise ValueError("the encoder classifier reads the first token ([CLS]); pad batches on the right")
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden[:, 0])


def classifier_for(model: PreTrainedModel, n_classes: int) -> CausalLMClassifier | EncoderClassifier:
    """The classifier PAC-tuning puts on ``model``: [CLS] for an encoder, last token otherwise."""
    if is_encoder_config(model.config):
        return EncoderClassifier(model, n_classes)
    return CausalLMClassifier(model, n_classes)
