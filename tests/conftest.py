"""Test-wide settings (tests never reach a model hub; the real product does) and shared tokenizers."""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

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
def sentencepiece_tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Mistral-7B v0.1's vocabulary as three tokenizers that treat a leading space differently.

    - ``raw``: SentencePiece itself (dummy prefix on): ``" (a)"`` -> ``▁ ▁( a )``;
    - ``legacy-normalizer``: a ``tokenizer.json`` with ``Prepend("▁") + Replace(" ", "▁")``:
      ``" (a)"`` -> ``▁▁ ( a )``;
    - ``metaspace-first``: transformers' ``LlamaTokenizer.from_pretrained`` on the folder:
      ``" (a)"`` -> ``▁( a )``.
    """
    model_file = mistral_tokenizer_model()
    if model_file is None:
        pytest.skip("mistral-common and sentencepiece are not installed (make test installs them)")
    from tokenizers import Tokenizer
    from transformers import LlamaTokenizer, PreTrainedTokenizerFast
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    folder = tmp_path_factory.mktemp("mistral-tokenizer")
    shutil.copy(model_file, folder / "tokenizer.model")
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
    raw = SentencePieceBackend(vocab_file=str(model_file), **special)
    return {"raw": raw, "legacy-normalizer": legacy, "metaspace-first": metaspace}
