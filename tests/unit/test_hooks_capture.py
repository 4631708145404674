"""The capture API: shapes, positions, padding, the three backends agree, hooks never leak."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch

from workbench.hooks import (
    BackendError,
    Intervention,
    PositionError,
    SiteKind,
    capture,
    capture_tokens,
    intervene,
    parse_sites,
)
from workbench.hooks.capture import run_forward
from workbench.hooks.module_paths import layout_for
from workbench.hooks.native import native_hooks
from workbench.hooks.plan import HookPlan
from workbench.hooks.positions import TokenBatch
from workbench.models import tiny_model

PROMPTS = ["the man said", "who can not be determined the old person was", "a"]
ANSWERS = [" he could pay", " unknown", " b c ."]  # appended as is: a leading space separates the words
ALL_SITES = [
    "blocks.*.hook_resid_pre",
    "blocks.*.hook_resid_mid",
    "blocks.*.hook_resid_post",
    "blocks.*.hook_attn_out",
    "blocks.*.hook_mlp_out",
    "blocks.*.attn.hook_z",
    "blocks.1.attn.hook_pattern[0,2]",
]
POSITIONS = ("last_prompt", "last", "answer_mean", "answer_all", 0, -2)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", n_layers=3)


@pytest.fixture(scope="module")
def reference(llama):
    return capture(llama, PROMPTS, answers=ANSWERS, sites=ALL_SITES, positions=POSITIONS, batch_size=2)


def _hidden_states(model, text: str) -> tuple[torch.Tensor, ...]:
    ids = model.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model.model(**ids, output_hidden_states=True).hidden_states


def test_shapes(reference) -> None:
    assert reference.get("hook_resid_post", "last_prompt").shape == (3, 3, 64)
    assert reference.get("attn.hook_z", "last_prompt").shape == (3, 3, 4, 16)
    assert reference.get("hook_resid_post", "answer_all").shape == (3, 3, 3, 64)  # longest answer: 3 tokens
    assert reference.masks["answer_all"].tolist() == [[True, True, True], [True, False, False], [True, True, True]]
    assert reference.patterns[("blocks.1.attn.hook_pattern[0,2]", "last_prompt")].shape == (3, 2, 10)


def test_residuals_match_hf_hidden_states(llama, reference) -> None:
    # Unpadded single forward over prompt 1 (+ its answer): hidden_states[l + 1] is resid_post of block l
    # for every block but the last (transformers applies the final norm there).
    text = PROMPTS[1] + " " + ANSWERS[1]
    states = _hidden_states(llama, text)
    n_prompt = len(llama.tokenizer(PROMPTS[1])["input_ids"])
    for layer in range(2):
        got = reference.get("hook_resid_post", "last_prompt")[1, layer]
        assert torch.allclose(got, states[layer + 1][0, n_prompt - 1], atol=1e-5)
        assert torch.allclose(reference.get("hook_resid_pre", "last")[1, layer], states[layer][0, -1], atol=1e-5)


def test_residual_decomposition(reference) -> None:
    pre = reference.get("hook_resid_pre", "answer_mean")
    mid = reference.get("hook_resid_mid", "answer_mean")
    post = reference.get("hook_resid_post", "answer_mean")
    assert torch.allclose(mid, pre + reference.get("hook_attn_out", "answer_mean"), atol=1e-5)
    assert torch.allclose(post, mid + reference.get("hook_mlp_out", "answer_mean"), atol=1e-5)
    assert torch.allclose(pre[:, 1:], post[:, :-1], atol=1e-6)


def test_positions_select_the_right_tokens(llama, reference) -> None:
    all_tokens = capture(llama, PROMPTS, answers=ANSWERS, sites="blocks.0.hook_resid_post", positions=("all",))
    full = all_tokens.get("hook_resid_post", "all")[:, :, 0]  # [batch, tokens, d]
    prompt_lengths = all_tokens.prompt_lengths
    lengths = [len(sequence) for sequence in all_tokens.sequences]
    for row in range(3):
        p, n = prompt_lengths[row], lengths[row]
        assert torch.allclose(reference.get("hook_resid_post", "last_prompt")[row, 0], full[row, p - 1], atol=1e-6)
        assert torch.allclose(reference.get("hook_resid_post", "last")[row, 0], full[row, n - 1], atol=1e-6)
        assert torch.allclose(reference.get("hook_resid_post", 0)[row, 0], full[row, 0], atol=1e-6)
        assert torch.allclose(reference.get("hook_resid_post", -2)[row, 0], full[row, n - 2], atol=1e-6)
        mean = full[row, p:n].mean(dim=0)
        assert torch.allclose(reference.get("hook_resid_post", "answer_mean")[row, 0], mean, atol=1e-5)


def test_padding_side_and_batching_do_not_change_values(llama, reference) -> None:
    right = capture(
        llama, PROMPTS, answers=ANSWERS, sites=ALL_SITES[:6], positions=POSITIONS, padding_side="right", batch_size=3
    )
    alone = capture(llama, PROMPTS[2:], answers=ANSWERS[2:], sites=ALL_SITES[:6], positions=POSITIONS)
    for key, value in right.stacked.items():
        assert torch.allclose(value, reference.stacked[key], atol=1e-5), key
        assert torch.allclose(
            alone.stacked[key][0], reference.stacked[key][2][: alone.stacked[key].shape[1]], atol=1e-5
        ), key


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_backends_give_the_same_tensors(llama, reference, backend) -> None:
    other = capture(
        llama, PROMPTS, answers=ANSWERS, sites=ALL_SITES, positions=POSITIONS, backend=backend, batch_size=2
    )
    assert other.stacked.keys() == reference.stacked.keys()
    for key, value in reference.stacked.items():
        assert (other.stacked[key] - value).abs().max() <= 1e-4, key
    for key, value in reference.patterns.items():
        assert (other.patterns[key] - value).abs().max() <= 1e-4, key


def test_capture_is_a_read_only_mapping_over_site_and_position(reference) -> None:
    assert isinstance(reference, Mapping)
    names = ("last_prompt", "last", "answer_mean", "answer_all", "index_0", "index_-2")  # POSITIONS as stored
    expected = [
        (site.name, name)
        for site in reference.sites
        for name in names
        if not (site.kind is SiteKind.PATTERN and name == "answer_all")  # patterns: one-token positions only
    ]
    assert list(reference) == expected
    assert list(reference.keys()) == expected
    assert len(reference) == len(expected) == 6 * 3 * 6 + 5
    assert [key for key, _ in reference.items()] == expected
    assert all(torch.equal(value, reference[key]) for key, value in zip(expected, reference.values()))
    assert ("blocks.2.attn.hook_z", "answer_all") in reference
    with pytest.raises(TypeError):
        reference["blocks.0.hook_resid_post", "last"] = torch.zeros(3, 64)


def test_a_site_tensor_is_its_layer_of_the_stacked_tensor(reference) -> None:
    for (name, position), value in reference.items():
        (site,) = parse_sites(name, 3, 4)
        if site.kind is SiteKind.PATTERN:
            assert torch.equal(value, reference.patterns[(name, position)])
            continue
        stacked = reference.get(site.kind, position)
        index = reference.layers[site.kind].index(site.layer)
        assert torch.equal(value, stacked[:, :, index] if position in ("answer_all", "all") else stacked[:, index])
    assert reference["blocks.1.hook_resid_post", "last"].shape == (3, 64)
    assert reference["blocks.1.hook_resid_post", "answer_all"].shape == (3, 3, 64)
    assert reference["blocks.1.attn.hook_z", "last_prompt"].shape == (3, 4, 16)
    assert reference["blocks.1.attn.hook_z", "answer_all"].shape == (3, 3, 4, 16)
    assert reference["blocks.1.attn.hook_pattern[0,2]", "last_prompt"].shape == (3, 2, 10)
    assert torch.equal(reference["blocks.0.hook_resid_post", -2], reference["blocks.0.hook_resid_post", "index_-2"])


def test_a_site_captured_at_one_position_is_keyed_by_its_name_too(llama) -> None:
    one = capture(llama, PROMPTS, sites=["blocks.*.hook_resid_post", "blocks.1.attn.hook_z"], positions=("last",))
    assert list(one) == [
        ("blocks.0.hook_resid_post", "last"),
        ("blocks.1.hook_resid_post", "last"),
        ("blocks.1.attn.hook_z", "last"),
        ("blocks.2.hook_resid_post", "last"),
    ]
    assert torch.equal(one["blocks.2.hook_resid_post"], one.get("hook_resid_post", "last")[:, 2])
    assert torch.equal(one["blocks.1.attn.hook_z"], one["blocks.1.attn.hook_z", "last"])
    assert "blocks.1.attn.hook_z" in one and "blocks.0.attn.hook_z" not in one
    assert one.stacked.keys() == {(SiteKind.RESID_POST, "last"), (SiteKind.Z, "last")}  # the stacked tensors


def test_repr_lists_sites_positions_and_shapes(llama) -> None:
    small = capture(
        llama,
        PROMPTS[:2],
        answers=ANSWERS[:2],
        sites=["blocks.0.hook_resid_post", "blocks.2.hook_resid_post", "blocks.1-2.attn.hook_z"],
        positions=("last_prompt", "answer_all"),
    )
    assert repr(small) == (
        "Capture(2 sequences, 8 keys\n"
        "  blocks.0.hook_resid_post, blocks.2.hook_resid_post: last_prompt [2, 64], answer_all [2, 3, 64]\n"
        "  blocks.1-2.attn.hook_z: last_prompt [2, 4, 16], answer_all [2, 3, 4, 16])"
    )


def test_missing_keys_name_what_was_captured(reference) -> None:
    captured = "captured: blocks.0-2.hook_resid_pre at last_prompt, last, answer_mean, answer_all, index_0, index_-2"
    for key in [
        "blocks.7.hook_resid_post",
        ("blocks.7.hook_resid_post", "last"),
        ("blocks.1.attn.hook_pattern[0,2]", "answer_all"),
        ("blocks.1.hook_resid_post", "middle"),
        ("blocks.1.hook_resid_post", 5),
        ("blocks.1.hook_resid_post", "index_x"),
        ("blocks.1.hook_resid_post", "last", "extra"),
        3,
    ]:
        with pytest.raises(KeyError, match="no capture") as caught:
            reference[key]
        assert captured in str(caught.value)
        assert key not in reference
    with pytest.raises(KeyError, match=r"captured at 6 positions \(last_prompt, .*\); pick one, e.g. cap\['blocks.1"):
        reference["blocks.1.hook_resid_post"]
    with pytest.raises(KeyError, match="no capture of hook_resid_post at all"):
        reference.get("hook_resid_post", "all")


def test_patterns_are_probabilities_over_real_keys(reference) -> None:
    pattern = reference.patterns[("blocks.1.attn.hook_pattern[0,2]", "last_prompt")]
    assert torch.allclose(pattern.sum(dim=-1), torch.ones(3, 2), atol=1e-5)


def test_gpt2_layout(llama) -> None:
    gpt2 = tiny_model("gpt2", n_layers=2)
    captured = capture(gpt2, ["the man said"], sites=["blocks.*.hook_resid_post", "blocks.*.attn.hook_z"])
    states = _hidden_states(gpt2, "the man said")
    assert torch.allclose(captured.get("hook_resid_post")[0, 0], states[1][0, -1], atol=1e-5)
    assert captured.get("attn.hook_z").shape == (1, 2, 4, 16)


def _hooks(model) -> dict[str, tuple[int, ...]]:
    """Ids of every forward (pre-)hook on every module (transformers installs a few of its own)."""
    return {
        name: (*module._forward_hooks, *module._forward_pre_hooks)
        for name, module in model.model.named_modules()
        if module._forward_hooks or module._forward_pre_hooks
    }


def test_hooks_are_removed_when_the_forward_raises(llama) -> None:
    before = _hooks(llama)
    plan = HookPlan()

    def explode(_activation: torch.Tensor) -> None:
        raise RuntimeError("reader failed")

    plan.add_reader(1, SiteKind.RESID_POST, explode)
    batch = TokenBatch.from_sequences([[3, 4, 5]], [3], pad_token_id=0)
    with pytest.raises(RuntimeError, match="reader failed"):
        run_forward(llama, batch, plan, "hf")
    assert _hooks(llama) == before
    assert llama.model.config._attn_implementation != "eager"


def test_attention_implementation_restored_after_pattern_capture(llama) -> None:
    before = llama.model.config._attn_implementation
    capture(llama, PROMPTS[:1], sites="blocks.0.attn.hook_pattern[0]")
    assert llama.model.config._attn_implementation == before


def test_bad_requests(llama) -> None:
    with pytest.raises(PositionError, match="empty prompt list"):
        capture(llama, [], sites="blocks.0.hook_resid_post")
    with pytest.raises(BackendError, match="unknown backend 'jax'"):
        capture(llama, PROMPTS, sites="blocks.0.hook_resid_post", backend="jax")
    with pytest.raises(PositionError, match="unknown position 'middle'"):
        capture(llama, PROMPTS, sites="blocks.0.hook_resid_post", positions=("middle",))
    with pytest.raises(PositionError, match="answer_mean needs an answer"):
        capture(llama, PROMPTS, sites="blocks.0.hook_resid_post", positions=("answer_mean",))


def _logits(model, interventions=(), backend="hf") -> torch.Tensor:
    """Logits at the real (non-pad) tokens of a small left-padded batch, ``[real tokens, vocab]``."""
    batch = TokenBatch.from_sequences([[5, 6, 7, 8], [9, 10]], [4, 2], pad_token_id=0)
    arch = model.architecture
    logits = run_forward(model, batch, HookPlan.for_interventions(interventions, arch.n_layers, arch.n_heads), backend)
    return logits[batch.attention_mask.bool()]


def test_zero_ablating_one_head_equals_zeroing_its_slice_of_w_o(llama) -> None:
    ablated = _logits(llama, [Intervention("blocks.1.attn.hook_z", "zero", heads=(2,))])
    o_proj = llama.model.model.layers[1].self_attn.o_proj
    saved = o_proj.weight.detach().clone()
    with torch.no_grad():
        o_proj.weight[:, 2 * 16 : 3 * 16] = 0
    try:
        manual = _logits(llama)
    finally:
        with torch.no_grad():
            o_proj.weight.copy_(saved)
    assert torch.allclose(ablated, manual, atol=1e-5)
    assert not torch.allclose(ablated, _logits(llama), atol=1e-3)


def test_patching_a_site_with_its_own_clean_value_changes_nothing(llama) -> None:
    batch = TokenBatch.from_sequences([[5, 6, 7, 8], [9, 10]], [4, 2], pad_token_id=0)
    clean: dict[str, torch.Tensor] = {}
    plan = HookPlan()
    plan.add_reader(1, SiteKind.Z, lambda activation: clean.setdefault("z", activation.clone()))
    baseline = run_forward(llama, batch, plan, "hf")[batch.attention_mask.bool()]
    patched = _logits(llama, [Intervention("blocks.1.attn.hook_z", "patch", value=clean["z"])])
    assert torch.allclose(baseline, patched, atol=1e-6)


def test_resid_mid_edit_equals_attn_out_edit(llama) -> None:
    vector = torch.randn(64)
    via_mid = _logits(llama, [Intervention("blocks.0.hook_resid_mid", "add", value=vector)])
    via_attn = _logits(llama, [Intervention("blocks.0.hook_attn_out", "add", value=vector)])
    assert torch.allclose(via_mid, via_attn, atol=1e-5)


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: Intervention("blocks.1.hook_resid_post", "add", value=torch.linspace(-1, 1, 64)),
        lambda: Intervention("blocks.0.attn.hook_z", "scale", value=0.5, heads=(1, 3)),
        lambda: Intervention("blocks.2.hook_mlp_out", "mean", value=torch.ones(64), positions=(1,)),
        lambda: Intervention("blocks.1.hook_resid_mid", "zero"),
        lambda: Intervention("blocks.0.hook_resid_pre", "add", value=torch.full((64,), 0.3)),
    ],
)
def test_interventions_agree_across_backends(llama, backend, make) -> None:
    intervention = make()
    reference = _logits(llama, [intervention], "hf")
    assert not torch.allclose(reference, _logits(llama), atol=1e-4)
    assert (_logits(llama, [intervention], backend) - reference).abs().max() <= 1e-4


def test_intervene_applies_during_generate_and_cleans_up(llama) -> None:
    inputs = llama.tokenizer(["the man said"], return_tensors="pt")
    before = _hooks(llama)
    plain = llama.model.generate(**inputs, max_new_tokens=4, do_sample=False)
    steer = Intervention("blocks.2.hook_resid_post", "add", value=torch.full((64,), 40.0))
    with intervene(llama, [steer]):
        steered = llama.model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert not torch.equal(plain, steered)
    assert _hooks(llama) == before
    assert torch.equal(llama.model.generate(**inputs, max_new_tokens=4, do_sample=False), plain)


def test_capture_tokens_after_generation_equals_decode_time_capture(llama) -> None:
    """One clean forward over prompt + generated answer gives the states seen while decoding."""
    prompt = llama.tokenizer("the man said", return_tensors="pt")
    steps: list[torch.Tensor] = []
    plan = HookPlan()
    plan.add_reader(1, SiteKind.RESID_POST, lambda activation: steps.append(activation[0, -1].clone()))
    with native_hooks(llama.model, layout_for("llama"), 4, plan):
        generated = llama.model.generate(**prompt, max_new_tokens=5, do_sample=False)
    sequence = generated[0].tolist()
    n_prompt = prompt["input_ids"].shape[1]
    clean = capture_tokens(llama, [sequence], [n_prompt], sites="blocks.1.hook_resid_post", positions=("all",))
    states = clean.get("hook_resid_post", "all")[0, :, 0]
    # decode step k sees the token at position n_prompt - 1 + k (the last fed token)
    for step, value in enumerate(steps):
        assert torch.allclose(value, states[n_prompt - 1 + step], atol=1e-5)
    assert len(steps) == 5
