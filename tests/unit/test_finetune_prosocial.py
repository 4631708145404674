"""ProSocialTuning head penalty: zero at the debiased weights, grows with a selected head's slice,
blind to unselected heads, GQA groups, every family's head layout (Llama, Qwen2, Phi-3, GPT-2,
BERT, RoBERTa), clear errors."""

from __future__ import annotations

import copy
from typing import cast

import pytest
import torch
from transformers import Phi3Config, Phi3ForCausalLM, PreTrainedModel, Qwen2Config, Qwen2ForCausalLM

from workbench.finetune.prosocial import (
    AttentionGeometry,
    HeadParameterError,
    ProSocialPenalty,
    SelectedHead,
    head_slices,
)
from workbench.finetune.tiny_encoder import tiny_encoder
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


def tiny_family(family: str) -> PreTrainedModel:
    """A tiny random model of ``family`` (2 layers, 4 heads; GQA with 2 KV heads where the family has it)."""
    torch.manual_seed(0)
    shape = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    heads = {"num_attention_heads": 4, "num_key_value_heads": 2, "pad_token_id": 0, "eos_token_id": 2}
    if family == "gpt2":
        return tiny_model("gpt2", d_model=32, n_heads=4).model
    if family == "phi3":
        return Phi3ForCausalLM(Phi3Config(**shape, **heads)).eval()
    if family == "qwen2":  # q/k/v projections with biases
        return Qwen2ForCausalLM(Qwen2Config(**shape, **heads)).eval()
    if family in ("bert", "roberta"):
        return tiny_encoder(family, dropout=0.0).model
    return tiny_llama()


def output(model: PreTrainedModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return cast(torch.Tensor, model(input_ids=ids).logits)


def edit_parts(model: PreTrainedModel, head: int, projections: str, edit: str) -> None:
    """Zero (``edit="zero"``) or add noise to (``"noise"``) the named projections' parts of layer 0's ``head``."""
    parameters = dict(model.named_parameters())
    geometry = AttentionGeometry.from_config(model.config)
    generator = torch.Generator().manual_seed(head)
    with torch.no_grad():
        for name, part in head_slices(parameters, geometry, 0, head):
            if part.projection in projections:
                view = parameters[name][part.index]
                changed = (
                    torch.zeros_like(view) if edit == "zero" else view + torch.randn(view.shape, generator=generator)
                )
                parameters[name][part.index] = changed


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi3", "gpt2", "bert", "roberta"])
def test_head_slices_are_the_heads_own_computation(family: str) -> None:
    """Functional check of every family's layout on layer 0, head 1: its q slice only acts through its
    o slice, its KV group's v slice is what the group's o slices read, and its k slice acts only
    through the group's heads."""
    model = tiny_family(family)
    geometry = AttentionGeometry.from_config(model.config)
    group = [h for h in range(geometry.n_heads) if geometry.kv_group(h) == geometry.kv_group(1)]
    ids = torch.tensor([[3, 9, 17, 4, 25, 11]])
    clean = output(model, ids)

    def after(edits: list[tuple[list[int], str, str]]) -> torch.Tensor:
        edited = copy.deepcopy(model)
        for heads, projections, edit in edits:
            for head in heads:
                edit_parts(edited, head, projections, edit)
        return output(edited, ids)

    assert not torch.allclose(after([([1], "q", "noise")]), clean, atol=1e-4)  # the q slice matters ...
    cut = after([([1], "o", "zero")])
    torch.testing.assert_close(after([([1], "o", "zero"), ([1], "q", "noise")]), cut)  # ... through o only
    group_cut = after([(group, "o", "zero")])
    torch.testing.assert_close(after([([1], "v", "zero")]), group_cut)  # v rows feed the group's o slices
    torch.testing.assert_close(after([(group, "o", "zero"), ([1], "k", "noise")]), group_cut)


def test_gpt2_penalty_is_exact_on_a_fused_c_attn_column_block() -> None:
    model = tiny_model("gpt2", d_model=32, n_heads=4).model
    debiased = {f"transformer.{k}": v.clone() for k, v in model.base_model.state_dict().items()}
    penalty = ProSocialPenalty(
        model, debiased, [SelectedHead(1, 2, 3.0)], AttentionGeometry.from_config(model.config), coefficient=0.5
    )
    assert float(penalty().detach()) == 0.0
    with torch.no_grad():
        model.transformer.h[1].attn.c_attn.weight[:, 32 + 16 : 32 + 24] += 0.1  # head 2's key columns
        model.transformer.h[1].attn.c_attn.weight[:, 0:8] += 1.0  # head 0's query columns: not selected
    assert float(penalty().detach()) == pytest.approx(0.5 * 3.0 * 32 * 8 * 0.01, rel=1e-5)
