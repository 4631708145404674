"""Semantic uncertainty samples drawn, normalised and scored as paper 4 did, on a tiny random model.

Reference: HaitaoMao/LLM-self-correction@071c790 ``analysis/uncerntainty.py``, class
``semanticUncertainty``: ``generate`` calls ``model.generate(input_ids, do_sample=True,
num_return_sequences=1, num_beams=5, max_new_tokens=..., temperature=1.0, top_p=1.0)`` once per sample
(Hugging Face's default top_k=50 applies), decodes with ``skip_special_tokens=True,
clean_up_tokenization_spaces=False`` and keeps ``' '.join(text.strip().split('\\n'))``;
``clustering`` clusters ``set(samples)``; ``entropy_estimate`` scores each sample by the causal-LM
loss of ``tokenizer(input_text + gen)`` with the first ``len(tokenizer(input_text))`` labels masked,
and averages the clusters' mean losses. The expected values below are computed that way, directly
with the Hugging Face model, not with the workbench's scoring code.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from activations_cache import open_cache
from workbench.config import RunConfig
from workbench.experiment.records import decode_records
from workbench.experiment.runner import ExperimentRunner
from workbench.inference.generation import sample_continuations, sampling_config, strip_at_eos
from workbench.metrics.answers import parse_option
from workbench.models import tiny_model
from workbench.models.loading import LoadedModel
from workbench.tasks.registry import load_configured_task

CONFIG = """
name = "uncertainty"
seed = 3
[model]
spec = "tiny-llama"
[task]
name = "bbq-sample"
categories = ["Age"]
limit_per_category = 2
[protocol]
instructions = ["none"]
rounds = 2
answer_tokens = 4
uncertainty_samples = 3
[capture]
sites = ["blocks.1.hook_resid_post"]
batch_size = 2
"""


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return tiny_model("llama", n_layers=2)


def _paper_text(model: LoadedModel, ids: list[int]) -> str:
    text = str(model.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))
    return " ".join(text.strip().split("\n"))


def _paper_loss(model: LoadedModel, input_text: str, gen: str, add_special_tokens: bool) -> float:
    """``model(tokenizer(input_text + gen), labels=...)``'s loss with the prompt's tokens masked (-100)."""
    tokenizer = model.tokenizer
    prompt_length = len(tokenizer(input_text, add_special_tokens=add_special_tokens)["input_ids"])
    input_ids = torch.tensor([tokenizer(input_text + gen, add_special_tokens=add_special_tokens)["input_ids"]])
    labels = input_ids.clone()
    labels[:, :prompt_length] = -100
    with torch.no_grad():
        return float(model.model(input_ids=input_ids, labels=labels).loss)


def _paper_clusters(samples: list[str], equivalent) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """The anchor loop of ``clustering``, with the anchor taken out of the pending list (the intended loop)."""
    pending, clusters = list(samples), []
    while pending:
        anchor, rest = pending[0], pending[1:]
        cluster = [anchor] + [sample for sample in rest if equivalent(anchor, sample)]
        clusters.append(cluster)
        pending = [sample for sample in rest if sample not in cluster]
    return clusters


def test_beam_sample_settings_are_paper_4s(model: LoadedModel) -> None:
    config = sampling_config(model, "beam-sample", 8, 1)
    assert (config.do_sample, config.num_beams, config.top_k, config.top_p, config.temperature) == (
        True,
        5,
        50,
        1.0,
        1.0,
    )
    assert (config.num_return_sequences, config.max_new_tokens, config.length_penalty) == (1, 8, 1.0)
    multinomial = sampling_config(model, "multinomial", 8, 4)
    assert (multinomial.num_beams, multinomial.top_k, multinomial.num_return_sequences) == (1, 0, 4)
    with pytest.raises(ValueError, match="unknown sampling method 'beam'"):
        sampling_config(model, "beam", 8, 1)  # type: ignore[arg-type]


def test_beam_sample_is_one_beam_search_per_sample_as_papers_generate_calls(model: LoadedModel) -> None:
    tokenizer = model.tokenizer
    prompts = [tokenizer("who was the old man ?")["input_ids"], tokenizer("the nurse said that")["input_ids"]]
    state = torch.random.get_rng_state()
    ours = sample_continuations(model, prompts, 3, 6, seed=11, method="beam-sample", batch_size=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left as it was
    torch.manual_seed(11)
    expected = []
    for ids in prompts:
        drawn = []
        for _ in range(3):
            output = model.model.generate(  # type: ignore[operator]
                torch.tensor([ids]),
                do_sample=True,
                num_return_sequences=1,
                num_beams=5,
                max_new_tokens=6,
                temperature=1.0,
                top_p=1.0,
                pad_token_id=tokenizer.eos_token_id,
            )
            drawn.append(strip_at_eos(output[:, len(ids) :].tolist(), [tokenizer.eos_token_id])[0])
        expected.append(drawn)
    assert ours == expected
    # seeded: the same draws again; batched searches give samples of the same shape
    assert sample_continuations(model, prompts, 3, 6, seed=11, method="beam-sample", batch_size=1) == ours
    batched = sample_continuations(model, prompts, 3, 6, seed=11, method="beam-sample")
    assert [len(group) for group in batched] == [3, 3] and all(len(s) <= 6 for g in batched for s in g)


def test_multinomial_sampling_is_unchanged(model: LoadedModel) -> None:
    tokenizer = model.tokenizer
    prompts = [tokenizer("who was the old man ?")["input_ids"]]
    ours = sample_continuations(model, prompts, 4, 5, seed=2, method="multinomial")
    torch.manual_seed(2)
    output = model.model.generate(  # type: ignore[operator]
        torch.tensor(prompts),
        attention_mask=torch.ones(1, len(prompts[0]), dtype=torch.long),
        do_sample=True,
        num_beams=1,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        num_return_sequences=4,
        max_new_tokens=5,
        pad_token_id=0,
        eos_token_id=[tokenizer.eos_token_id],
    )
    assert ours == [strip_at_eos(output[:, len(prompts[0]) :].tolist(), [tokenizer.eos_token_id])]


def test_sample_text_is_stripped_with_newlines_as_spaces(model: LoadedModel) -> None:
    from workbench.inference.generation import sample_text

    vocab = model.tokenizer.get_vocab()
    ids = [vocab[word] for word in ("\n", "the", "man", "\n", "is")] + [model.tokenizer.eos_token_id]
    # the word-level decoder joins tokens with a space: "\n the man \n is"
    assert sample_text(model.tokenizer, ids) == "the man   is"


@pytest.fixture(scope="module")
def peaked_model() -> LoadedModel:
    """The tiny model with its output weights scaled up: peaked next-token distributions, so samples repeat."""
    model = tiny_model("llama", n_layers=2)
    with torch.no_grad():
        model.model.lm_head.weight.mul_(15.0)
    return model


def test_runner_uncertainty_is_paper_4s_score_of_its_samples(tmp_path: Path, peaked_model: LoadedModel) -> None:
    """Beam-sample draws, duplicates removed, re-tokenized NLL, option clusters: the record's value.

    The BBQ items get options made of words the model writes, so that samples parse to options
    and repeat: the duplicates and the multi-member clusters are asserted below.
    """
    model = peaked_model
    path = tmp_path / "uncertainty.toml"
    path.write_text(CONFIG)
    config = dataclasses.replace(RunConfig.load(path), output_dir=str(tmp_path / "runs"))
    items = [dataclasses.replace(item, options=("w83", "w12", "w44")) for item in load_configured_task(config.task)]
    runner = ExperimentRunner(config, model, items)
    runner.run(tmp_path / "cache.h5")
    with open_cache(tmp_path / "cache.h5", expect="run") as reader:
        records = decode_records(reader.records)
    settings = config.protocol
    by_item = {item.item_id: item for item in items}
    repeats, cluster_sizes = 0, []
    for round_index in range(settings.rounds):
        batch = [record for record in records if record.round == round_index]
        assert [record.item_id for record in batch] == [item.item_id for item in items]  # one batch of 2
        prompt_ids = [model.tokenizer(record.prompt, add_special_tokens=False)["input_ids"] for record in batch]
        seed = config.seed + zlib.crc32(batch[0].record_key.encode())
        drawn = sample_continuations(
            model, prompt_ids, settings.uncertainty_samples, settings.answer_tokens, seed, "beam-sample", 2
        )
        for record, rows in zip(batch, drawn):
            item = by_item[record.item_id]
            texts = [_paper_text(model, row) for row in rows]
            samples = list(dict.fromkeys(texts))  # set(samples), in order of first occurrence
            samples = [sample for sample in samples if sample]  # an empty sample has no token to score
            repeats += len(texts) - len(set(texts))
            loss = {sample: _paper_loss(model, record.prompt, sample, False) for sample in samples}

            def same_option(a: str, b: str, options: tuple[str, ...] = item.options) -> bool:
                parsed = parse_option(a, options)
                return a.strip().lower() == b.strip().lower() if parsed is None else parsed == parse_option(b, options)

            clusters = _paper_clusters(samples, same_option)
            cluster_sizes += [len(cluster) for cluster in clusters]
            expected = np.mean([np.mean([loss[sample] for sample in cluster]) for cluster in clusters])
            assert record.semantic_uncertainty == pytest.approx(expected, rel=1e-5)
            assert record.uncertainty_equivalence == "option:label"
    # duplicates were removed and distinct samples shared an option (a changed prompt may need another seed)
    assert repeats > 0 and max(cluster_sizes) > 1


def test_uncertainty_off_records_nothing(tmp_path: Path, model: LoadedModel) -> None:
    path = tmp_path / "off.toml"
    path.write_text(CONFIG.replace("uncertainty_samples = 3", "uncertainty_samples = 0"))
    config = dataclasses.replace(RunConfig.load(path), output_dir=str(tmp_path / "runs"))
    ExperimentRunner(config, model, load_configured_task(config.task)).run(tmp_path / "off.h5")
    with open_cache(tmp_path / "off.h5", expect="run") as reader:
        records = decode_records(reader.records)
    assert all(r.semantic_uncertainty is None and r.uncertainty_equivalence is None for r in records)
