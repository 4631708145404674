"""ProSocialTuning head penalty: zero at the debiased weights, grows with a selected head's slice,
blind to unselected heads, GQA groups, clear errors."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedModel

from workbench.finetune.prosocial import (
    AttentionGeometry,
    HeadParameterError,
    ProSocialPenalty,
    SelectedHead,
)
from workbench.models import tiny_model


def tiny_llama() -> PreTrainedModel:
    return tiny_model(d_model=16, n_heads=4, n_kv_heads=2).model


def test_penalty_zero_at_debiased_and_exact_for_selected_head_shift() -> None:
    model = tiny_llama()
    debiased = {k: v.clone() for k, v in model.state_dict().items()}
    geometry = AttentionGeometry.from_config(model.config)
    assert geometry == AttentionGeometry(4, 2, 4)
    penalty = ProSocialPenalty(model, debiased, [SelectedHead(1, 3, 2.0)], geometry, coefficient=0.5)
    assert float(penalty().detach()) == 0.0
    attention = model.model.layers[1].self_attn
    with torch.no_grad():
        attention.q_proj.weight[12:16] += 0.1  # head 3's 4 rows x 16 columns
        attention.o_proj.weight[:, 12:16] += 0.2  # head 3's 4 columns x 16 rows
    # 0.5 * 2.0 * (64 * 0.01 + 64 * 0.04)
    assert float(penalty().detach()) == pytest.approx(0.5 * 2.0 * (64 * 0.01 + 64 * 0.04), rel=1e-5)


def test_unselected_head_does_not_move_penalty_but_its_kv_group_does() -> None:
    model = tiny_llama()
    debiased = {k: v.clone() for k, v in model.state_dict().items()}
    penalty = ProSocialPenalty(model, debiased, [SelectedHead(0, 0, 1.0)], AttentionGeometry.from_config(model.config))
    attention = model.model.layers[0].self_attn
    with torch.no_grad():
        attention.q_proj.weight[4:8] += 1.0  # head 1 (unselected)
        attention.k_proj.weight[4:8] += 1.0  # KV group 1 (heads 2, 3)
        model.model.layers[1].self_attn.q_proj.weight[0:4] += 1.0  # head 0 of another layer
    assert float(penalty().detach()) == 0.0
    with torch.no_grad():
        attention.v_proj.weight[0:4] += 0.5  # KV group 0, shared by heads 0 and 1
    assert float(penalty().detach()) == pytest.approx(0.01 * 64 * 0.25, rel=1e-5)


def test_penalty_gradient_reaches_only_selected_slices() -> None:
    model = tiny_llama()
    debiased = {k: v.clone() + 1.0 for k, v in model.state_dict().items()}
    ProSocialPenalty(
        model, debiased, [SelectedHead(0, 2, 1.0)], AttentionGeometry.from_config(model.config)
    )().backward()
    grad = model.model.layers[0].self_attn.q_proj.weight.grad
    assert grad[8:12].abs().min() > 0 and grad[:8].abs().max() == 0 and grad[12:].abs().max() == 0


def test_different_architecture_and_bad_head_are_clear_errors() -> None:
    model = tiny_llama()
    other = {k: torch.zeros(3, 3) for k in model.state_dict()}
    with pytest.raises(HeadParameterError, match="different architectures"):
        ProSocialPenalty(model, other, [SelectedHead(0, 0, 1.0)], AttentionGeometry.from_config(model.config))
    with pytest.raises(HeadParameterError, match="outside"):
        ProSocialPenalty(
            model, model.state_dict(), [SelectedHead(0, 9, 1.0)], AttentionGeometry.from_config(model.config)
        )
