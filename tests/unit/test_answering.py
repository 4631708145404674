"""One-prefill answer rounds equal the separate passes they replace.

Each test runs on a Llama (preallocated ``StaticCache``) and on a Mistral with a sliding window
(which keeps transformers' ``DynamicCache``), so both cache paths are covered.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import DynamicCache, StaticCache

from workbench.hooks import capture_tokens, parse_sites
from workbench.inference.answering import answer_batch
from workbench.inference.generation import PromptTooLong, generate_greedy, preallocated_cache
from workbench.inference.option_scoring import option_mean_nll
from workbench.models import tiny_model

PROMPTS = ["the man said who can not be determined", "a b c", "the old person was the one who"]
LABELS = ("(a)", "(b)", "(c)")


CACHE_KIND = {"llama": StaticCache, "mistral": DynamicCache}


@pytest.fixture(scope="module", params=sorted(CACHE_KIND))
def model(request):
    model = tiny_model(request.param, n_layers=3)
    assert isinstance(preallocated_cache(model, 64), CACHE_KIND[request.param])
    return model


def test_a_sliding_window_shorter_than_the_transcript_is_refused() -> None:
    model = tiny_model("mistral")
    with pytest.raises(PromptTooLong, match="sliding attention window of 256"):
        preallocated_cache(model, 256)


@pytest.mark.parametrize("positions", [("last_prompt",), ("last_prompt", "answer_mean", "last")])
def test_answer_batch_equals_separate_passes(model, positions) -> None:
    ids = [model.tokenizer(prompt)["input_ids"] for prompt in PROMPTS]
    sites = parse_sites(["blocks.*.hook_resid_post", "blocks.1.attn.hook_z"], 3, 4)
    answered = answer_batch(
        model, ids, LABELS, sites, positions, max_new_tokens=5, prompt_texts=PROMPTS, add_special_tokens=True
    )
    generated = generate_greedy(model, ids, 5)
    assert answered.answer_ids == generated.answer_ids
    assert answered.texts == generated.texts
    reference_nll = option_mean_nll(model, PROMPTS, [LABELS] * 3, add_special_tokens=True)
    for got, want in zip(answered.option_nll, reference_nll):
        assert np.allclose(got, want, atol=1e-5)
    captured = capture_tokens(
        model,
        [p + a for p, a in zip(ids, generated.answer_ids)],
        [len(p) for p in ids],
        sites=[site.name for site in sites],
        positions=positions,
    )
    assert answered.activations.keys() == captured.stacked.keys()
    for key, value in captured.stacked.items():
        assert torch.allclose(answered.activations[key], value, atol=1e-5), key


def test_hand_computed_option_nll(model) -> None:
    """Mean token NLL of " (b)" after a prompt, computed directly from one forward's logits."""
    ids = model.tokenizer("the man said")["input_ids"]
    whole = model.tokenizer("the man said (b)")["input_ids"]
    continuation = whole[len(ids) :]
    with torch.no_grad():
        logits = model.model(torch.tensor([whole])).logits[0]
    log_probs = torch.log_softmax(logits, dim=-1)
    expected = -np.mean([float(log_probs[len(ids) - 1 + i, token]) for i, token in enumerate(continuation)])
    sites = parse_sites("blocks.0.hook_resid_post", 3, 4)
    answered = answer_batch(
        model,
        [ids],
        LABELS,
        sites,
        ("last_prompt",),
        max_new_tokens=2,
        prompt_texts=["the man said"],
        add_special_tokens=True,
    )
    assert answered.option_nll[0][1] == pytest.approx(expected, abs=1e-5)


def test_reusing_the_previous_rounds_cache_changes_nothing_but_the_cost(model) -> None:
    tokenizer = model.tokenizer
    sites = parse_sites(["blocks.*.hook_resid_post", "blocks.1.attn.hook_z"], 3, 4)
    texts = list(PROMPTS)
    prompts = [tokenizer(prompt)["input_ids"] for prompt in PROMPTS]
    fresh_total = reused_total = 0
    caches = None
    scoring = {"prompt_texts": texts, "add_special_tokens": True}
    for round_index in range(3):
        fresh = answer_batch(model, prompts, LABELS, sites, ("last_prompt",), max_new_tokens=4, **scoring)
        reused = answer_batch(
            model,
            prompts,
            LABELS,
            sites,
            ("last_prompt",),
            max_new_tokens=4,
            previous=caches,
            keep_caches=True,
            **scoring,
        )
        assert reused.answer_ids == fresh.answer_ids
        for got, want in zip(reused.option_nll, fresh.option_nll):
            assert np.allclose(got, want, atol=1e-4)
        for key, value in fresh.activations.items():
            assert torch.allclose(reused.activations[key], value, atol=1e-4), (round_index, key)
        fresh_total += fresh.encoded_tokens
        reused_total += reused.encoded_tokens
        caches = reused.caches
        # the next round: the transcript grows by the answer and a new user turn
        follow_up = tokenizer(" review your previous answer", add_special_tokens=False)["input_ids"]
        prompts = [ids + answer + follow_up for ids, answer in zip(prompts, reused.answer_ids)]
        texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in prompts]
        scoring["prompt_texts"] = texts
    assert reused_total < fresh_total / 2
