"""CDA: two-sided, case-preserving, word-boundary-aware swap; corpus readers; debias checkpoint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from workbench.finetune.cda import (
    GENDER_PAIRS,
    CorpusFormatError,
    NoGenderedWordsError,
    augment,
    read_corpus,
    swap_gender,
)
from workbench.finetune.debias import PROVENANCE_FILE, DebiasConfig, debias
from workbench.models import tiny_model

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_swap_is_two_sided_and_case_preserving() -> None:
    assert swap_gender("He told his sister that she was right.") == "She told her brother that he was right."
    assert swap_gender("THE KING and the Queen") == "THE QUEEN and the King"
    assert swap_gender("Mr. Smith met Mrs. Jones") == "Mrs. Smith met Mr. Jones"


def test_word_boundaries_leave_longer_words_alone() -> None:
    text = "history shed mankind sheriff theme"
    assert swap_gender(text) == text


def test_ambiguous_her_and_his() -> None:
    assert swap_gender("I saw her.") == "I saw him."
    assert swap_gender("her book is red") == "his book is red"
    assert swap_gender("the book is his") == "the book is hers"
    assert swap_gender("the book is hers, not mine") == "the book is his, not mine"


def test_pair_list_size_and_swap_round_trip_for_unambiguous_words() -> None:
    assert len(GENDER_PAIRS) >= 60
    assert swap_gender(swap_gender("the father and the son")) == "the father and the son"


def test_augment_counts_changed_lines_and_refuses_neutral_corpus() -> None:
    corpus = augment(["the cat sat", "she sat", "he ran"])
    assert corpus.n_original == 3 and corpus.n_changed == 2
    assert corpus.texts == ("the cat sat", "she sat", "he ran", "he sat", "she ran")
    with pytest.raises(NoGenderedWordsError, match="on_no_gendered_words='warn'"):
        augment(["the cat sat", "a dog ran"])
    assert augment(["the cat sat"], on_no_gendered_words="warn").n_changed == 0


def test_corpus_readers(tmp_path: Path) -> None:
    (tmp_path / "c.txt").write_text("he ran\n\nshe sat\n", encoding="utf-8")
    assert read_corpus(tmp_path / "c.txt") == ["he ran", "she sat"]
    (tmp_path / "c.jsonl").write_text('{"prompt": {"text": "a man"}}\n', encoding="utf-8")
    assert read_corpus(tmp_path / "c.jsonl", "prompt.text") == ["a man"]
    (tmp_path / "c.csv").write_text("id,comment\n1,his dog\n", encoding="utf-8")
    assert read_corpus(tmp_path / "c.csv", "comment") == ["his dog"]
    with pytest.raises(CorpusFormatError, match="no column 'text'"):
        read_corpus(tmp_path / "c.csv", "text")


@pytest.mark.skipif(not (DATA / "wiki_toxicity_bias").exists(), reason="shared benchmark data not present")
def test_real_corpus_has_gendered_lines() -> None:
    texts = read_corpus(DATA / "wiki_toxicity_bias" / "toxicity_nonfuzzed_testset.csv", "comment")
    corpus = augment(texts)
    assert len(texts) == 1492 and 0 < corpus.n_changed < len(texts)


def test_debias_trains_and_saves_checkpoint_with_provenance(tmp_path: Path) -> None:
    loaded = tiny_model(d_model=16, n_heads=2, n_kv_heads=2)
    model, tokenizer = loaded.model, loaded.tokenizer
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("he ran\nthe man sat\nthe cat\n", encoding="utf-8")
    before = model.lm_head.weight.detach().clone()
    out = debias(
        model,
        tokenizer,
        DebiasConfig(str(corpus), steps=3, batch_size=2, learning_rate=1e-2),
        tmp_path / "run",
        base_model="tiny",
    )
    assert (out / "model.safetensors").is_file() and not torch.equal(before, model.lm_head.weight)
    provenance = json.loads((out / PROVENANCE_FILE).read_text(encoding="utf-8"))
    assert (
        provenance["lines_changed"] == 2
        and provenance["corpus_sha256"] == "sha256:" + hashlib.sha256(corpus.read_bytes()).hexdigest()
    )
    reloaded = LlamaForCausalLM.from_pretrained(out)
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)
