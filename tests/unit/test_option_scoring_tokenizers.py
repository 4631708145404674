"""Option scores on real tokenizers: the scored ids are those of ``prompt + " " + option``.

The tokenizers (tests/conftest.py, ``real_tokenizer``): Mistral-7B v0.1's SentencePiece vocabulary in
three forms, Gemma 3's (from its GGUF), SmolLM2's byte-level BPE and GPT-2's. The rule they are
split by is HaitaoMao/LLM-self-correction@071c790 ``analysis/uncerntainty.py`` ``ECEError.get_logit``:
tokenize ``input + " " + choice`` and score the tokens after ``len(tokenizer(input))``. Expected
pieces come from the tokenizers themselves; the reference numbers from one plain forward over the
whole string's ids.

The rule the workbench followed before (``" " + label`` tokenized alone, ``add_special_tokens=False``,
appended to the prompt's ids) scores other tokens on four of the six tokenizers: :data:`ALONE_DIFFERS`
says on which, and for which prompt ending.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from transformers import PreTrainedTokenizerBase

from workbench.hooks import parse_sites
from workbench.hooks.positions import in_context_continuation
from workbench.inference.answering import answer_batch
from workbench.inference.option_scoring import continuation_mean_nll, option_mean_nll
from workbench.models import LoadedModel

PROMPT = "Q: Who was not comfortable using the phone? (a) The grandfather (b) The grandson (c) Unknown\nA: The single most likely answer choice is"
PROMPTS = {"word": PROMPT, "space": "The single most likely answer choice is "}
"""A prompt that ends in a word, and one that ends in a space (the tokenizer may merge across the boundary)."""
LABELS = ("(a)", "(b)", "(c)")

TinyFor = Callable[[PreTrainedTokenizerBase], LoadedModel]
WholeNll = Callable[[LoadedModel, str, str, bool], float]

ALONE_DIFFERS = {
    "mistral-raw": {"word", "space"},  # " (a)" alone: ▁ ▁( a )
    "mistral-legacy-normalizer": {"word", "space"},  # " (a)" alone: ▁▁ ( a )
    "mistral-metaspace-first": {"space"},  # after "is ": ( a ), the space merged into the prompt's ▁▁
    "gemma3": {"space"},  # the same merge; no dummy prefix, so " (a)" alone is ▁( a ) as after a word
    "smollm2": set(),  # byte-level BPE: the split regex always cuts before " (", so both agree
    "gpt2": set(),
}
"""For each real tokenizer, the prompt endings after which ``" " + label`` alone is not the in-context split."""


def _pieces(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[str]:
    return [str(piece) for piece in tokenizer.convert_ids_to_tokens(ids)]


@pytest.mark.parametrize(
    ("form", "alone"),
    [
        ("raw", ["▁", "▁(", "a", ")"]),
        ("legacy-normalizer", ["▁▁", "(", "a", ")"]),
        ("metaspace-first", ["▁(", "a", ")"]),
    ],
)
def test_an_option_alone_and_in_context_differ_by_form(
    sentencepiece_tokenizers: dict[str, PreTrainedTokenizerBase], form: str, alone: list[str]
) -> None:
    tokenizer = sentencepiece_tokenizers[form]
    assert tokenizer.tokenize(" (a)") == alone
    context, continuation = in_context_continuation(tokenizer, PROMPT, " (a)", add_special_tokens=False)
    assert _pieces(tokenizer, continuation) == ["▁(", "a", ")"]
    assert context == tokenizer(PROMPT, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("ending", sorted(PROMPTS))
def test_the_scored_ids_are_the_whole_strings_ids_after_the_prompt(
    real_tokenizer: tuple[str, PreTrainedTokenizerBase], ending: str
) -> None:
    """Context + continuation is the whole string's tokenization, split at the prompt's own length; the
    continuation spells the option; and it differs from the option tokenized alone where ALONE_DIFFERS says."""
    name, tokenizer = real_tokenizer
    prompt = PROMPTS[ending]
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    for label in LABELS:
        whole = tokenizer(prompt + " " + label, add_special_tokens=True)["input_ids"]
        context, continuation = in_context_continuation(tokenizer, prompt, " " + label, add_special_tokens=True)
        assert (context, continuation) == (whole[: len(prompt_ids)], whole[len(prompt_ids) :])
        assert tokenizer.decode(continuation).strip() == label
        alone = tokenizer(" " + label, add_special_tokens=False)["input_ids"]
        assert (prompt_ids + alone != whole) == (ending in ALONE_DIFFERS[name]), _pieces(tokenizer, alone)


def test_gemma3_and_gpt2_vocabularies_are_the_real_ones(
    gemma3_tokenizer: PreTrainedTokenizerBase, gpt2_tokenizer: PreTrainedTokenizerBase
) -> None:
    """Gemma 3's special ids as google-deepmind/gemma@bfd26f2 ``gemma/gm/text/_tokenizer.py``
    (``_Gemma3SpecialTokens``) lists them; GPT-2's ids of "Hello world" / " Hello world" as the
    ``GPT2Tokenizer`` docstring of transformers 5.23 gives them for openai-community/gpt2."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>"]
    assert gemma3_tokenizer.convert_tokens_to_ids(specials) == [0, 1, 2, 3, 4, 105, 106, 255999]
    assert len(gemma3_tokenizer) == 262144
    assert gpt2_tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert gpt2_tokenizer(" Hello world")["input_ids"] == [18435, 995]
    assert len(gpt2_tokenizer) == 50257


def test_option_nll_is_the_whole_strings_nll(
    real_tokenizer: tuple[str, PreTrainedTokenizerBase], tiny_llama_for: TinyFor, whole_string_nll: WholeNll
) -> None:
    model = tiny_llama_for(real_tokenizer[1])
    prompts = list(PROMPTS.values())
    scored = option_mean_nll(model, prompts, [LABELS] * len(prompts), add_special_tokens=True, batch_size=2)
    for prompt, values in zip(prompts, scored):
        expected = [whole_string_nll(model, prompt, " " + label, True) for label in LABELS]
        # float32 forward in a padded batch vs a float64 softmax of one sequence: float32 precision
        assert values.tolist() == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_answer_rounds_score_the_in_context_ids(
    real_tokenizer: tuple[str, PreTrainedTokenizerBase], tiny_llama_for: TinyFor, whole_string_nll: WholeNll
) -> None:
    """The one-prefill answer round scores what option_mean_nll scores, for a prompt ending in a word
    (the options ride in the token tree) and one ending in a space (where the tokenizer merges across the
    boundary, the row is scored on the whole string's own ids)."""
    model = tiny_llama_for(real_tokenizer[1])
    texts = list(PROMPTS.values())
    ids = [model.tokenizer(text, add_special_tokens=True)["input_ids"] for text in texts]
    sites = parse_sites("blocks.0.hook_resid_post", 1, 2)
    answered = answer_batch(
        model, ids, LABELS, sites, ("last_prompt",), max_new_tokens=2, prompt_texts=texts, add_special_tokens=True
    )
    for text, got in zip(texts, answered.option_nll):
        expected = [whole_string_nll(model, text, " " + label, True) for label in LABELS]
        assert got.tolist() == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_scoring_the_option_alone_gives_other_numbers_where_the_ids_differ(
    real_tokenizer: tuple[str, PreTrainedTokenizerBase], tiny_llama_for: TinyFor
) -> None:
    """The old rule (prompt ids + the ids of " (a)" tokenized alone) against today's: other numbers
    exactly after the prompt endings of ALONE_DIFFERS, the same numbers elsewhere."""
    name, tokenizer = real_tokenizer
    model = tiny_llama_for(tokenizer)
    for ending, prompt in PROMPTS.items():
        prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        alone = continuation_mean_nll(
            model, [(prompt_ids, tokenizer(" " + label, add_special_tokens=False)["input_ids"]) for label in LABELS]
        )
        in_context = option_mean_nll(model, [prompt], [LABELS], add_special_tokens=True)[0]
        assert np.allclose(alone, in_context, rtol=1e-5) != (ending in ALONE_DIFFERS[name]), (ending, alone, in_context)
