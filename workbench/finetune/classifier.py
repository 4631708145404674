"""A classification head on a causal LM: the last non-pad token's final hidden state ->
Linear(d_model, n_classes), as PAC-tuning does for GPT-2."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel


class CausalLMClassifier(nn.Module):
    """``backbone`` is the causal LM's base model (no LM head); parameters are named
    ``backbone.*`` and ``head.weight`` / ``head.bias``."""

    HEAD_PARAMETERS = ("head.weight", "head.bias")

    def __init__(self, causal_lm: PreTrainedModel, n_classes: int) -> None:
        super().__init__()
        self.backbone = causal_lm.base_model
        self.head = nn.Linear(causal_lm.config.hidden_size, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits [batch, n_classes] from ``input_ids`` / ``attention_mask`` [batch, seq] (either padding side)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (attention_mask * positions).argmax(dim=1)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.head(hidden[rows, last])
