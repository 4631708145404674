"""NLI clustering on tiny random DeBERTa-v2 and RoBERTa sequence classifiers, loaded as any hub model is.

Each classifier is built from a config with ``id2label`` naming contradiction / neutral / entailment
(in a permuted order, so that no class id can be assumed), saved with its tokenizer to a folder and
loaded through ``NliClassifier.load`` (``AutoConfig``, ``AutoTokenizer``,
``AutoModelForSequenceClassification``). Where a test needs to know the classifier's answer, its
head is set to answer one class for every pair. Expected judgements are computed directly with the
Hugging Face model, one pair at a time.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    DebertaV2Model,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForSequenceClassification,
)

import workbench.metrics.uncertainty as uncertainty_metrics
from activations_cache import open_cache
from workbench.config import RunConfig
from workbench.experiment.records import decode_records
from workbench.experiment.runner import ExperimentRunner
from workbench.inference.generation import sample_continuations
from workbench.inference.semantic_equivalence import NliClassifier, NliModelError, check_nli_model, judged_equivalence
from workbench.metrics.uncertainty import anchor_clusters
from workbench.models import tiny_model
from workbench.models.loading import LoadedModel
from workbench.models.tiny import tiny_tokenizer
from workbench.tasks.items import Item

ID2LABEL = {0: "NEUTRAL", 1: "entailment", 2: "Contradiction"}
NEUTRAL, ENTAILMENT, CONTRADICTION = 0, 1, 2
WORDS = ["(a)", *(word for word in tiny_tokenizer().get_vocab() if not word.startswith("<"))]  # the tiny LM's words
SAMPLES = ["the man is old", "a woman", "the nurse said that they was young", "(a)"]


def _tokenizer(family: str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with the family's sentence-pair template (BERT-style or RoBERTa-style)."""
    cls, sep, pad, unk = (
        ("[CLS]", "[SEP]", "[PAD]", "[UNK]") if family == "deberta-v2" else ("<s>", "</s>", "<pad>", "<unk>")
    )
    vocab = {token: index for index, token in enumerate([pad, cls, sep, unk, *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    pair = f"{cls} $A {sep} $B {sep}" if family == "deberta-v2" else f"{cls} $A {sep} {sep} $B {sep}"
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=pair, special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])]
    )
    return PreTrainedTokenizerFast(  # model_max_length: the positions the classifiers have, as a hub tokenizer says
        tokenizer_object=backend, cls_token=cls, sep_token=sep, pad_token=pad, unk_token=unk, model_max_length=60
    )


def _classifier(family: str, id2label: dict[int, str] | None = ID2LABEL, *, varied: bool = False) -> PreTrainedModel:
    """A random classifier; ``varied``: weights drawn wide enough (std 0.5) that its answers differ between pairs."""
    torch.manual_seed(0)
    shape: dict[str, Any] = {
        "vocab_size": len(WORDS) + 4,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "pad_token_id": 0,
        "initializer_range": 0.5 if varied else 0.02,
    }
    labels: dict[str, Any] = (
        {} if id2label is None else {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    )
    if family == "deberta-v2":
        return DebertaV2ForSequenceClassification(DebertaV2Config(**shape, max_position_embeddings=64, **labels))
    return RobertaForSequenceClassification(RobertaConfig(**shape, max_position_embeddings=66, **labels))


def _head(model: PreTrainedModel) -> torch.nn.Linear:
    head = model.classifier
    return cast(torch.nn.Linear, getattr(head, "out_proj", head))  # RoBERTa: a dense layer, then out_proj


def _saved(folder: Path, family: str, answer: int | None = None, *, varied: bool = False) -> Path:
    """Save a tiny classifier and its tokenizer; ``answer``: the class its head predicts for every pair."""
    model = _classifier(family, varied=varied)
    if answer is not None:
        with torch.no_grad():
            head = _head(model)
            head.weight.zero_()
            head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(answer), len(ID2LABEL)).float() * 5.0)
    model.save_pretrained(folder)
    _tokenizer(family).save_pretrained(folder)
    return folder


FAMILIES = ("deberta-v2", "roberta")


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_are_read_from_id2label(tmp_path: Path, family: str) -> None:
    classifier = NliClassifier.load(str(_saved(tmp_path, family)), "nli-contradiction")
    assert (classifier.labels.entailment, classifier.labels.contradiction) == (ENTAILMENT, CONTRADICTION)
    assert type(classifier.model).__name__ == type(_classifier(family)).__name__


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_logits_equal_one_pair_at_a_time(tmp_path: Path, family: str) -> None:
    folder = _saved(tmp_path, family, varied=True)
    classifier = NliClassifier.load(str(folder), "nli-bidirectional")
    premises = [SAMPLES[i] for i in range(4) for j in range(4) if i != j]
    hypotheses = [SAMPLES[j] for i in range(4) for j in range(4) if i != j]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        expected = np.concatenate(
            [model(**tokenizer(p, h, return_tensors="pt")).logits.numpy() for p, h in zip(premises, hypotheses)]
        )
    got = classifier.logits(premises, hypotheses, batch_size=5)
    # float32 forwards of a padded batch and of one pair take other kernel paths: logits of size ~7
    # agree to a few 1e-6 relative, i.e. about 1e-5 absolute (1.3e-5 seen on an AMD EPYC)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    judgements = classifier.judgements(SAMPLES, batch_size=5)
    assert (np.diag(judgements) == -1).all()
    off_diagonal = judgements[~np.eye(4, dtype=bool)]
    np.testing.assert_array_equal(off_diagonal, expected.argmax(axis=1))
    assert len(set(off_diagonal.tolist())) > 1  # the classifier judges pairs differently


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("answer", "bidirectional", "contradiction"),
    [
        (ENTAILMENT, [[0, 1, 2, 3]], [[0, 1, 2, 3]]),
        (NEUTRAL, [[0], [1], [2], [3]], [[0, 1, 2, 3]]),  # neutral: equivalent only under paper 4's rule
        (CONTRADICTION, [[0], [1], [2], [3]], [[0], [1], [2], [3]]),
    ],
)
def test_clusters_of_a_classifier_with_one_answer(
    tmp_path: Path, family: str, answer: int, bidirectional: list[list[int]], contradiction: list[list[int]]
) -> None:
    folder = str(_saved(tmp_path, family, answer))
    for rule, expected in (("nli-bidirectional", bidirectional), ("nli-contradiction", contradiction)):
        classifier = NliClassifier.load(folder, rule)  # type: ignore[arg-type]
        judgements = classifier.judgements(SAMPLES)
        assert anchor_clusters(SAMPLES, judged_equivalence(SAMPLES, judgements, classifier.labels, rule)) == expected  # type: ignore[arg-type]


def test_a_model_without_nli_labels_is_refused(tmp_path: Path) -> None:
    _classifier("deberta-v2", id2label=None).save_pretrained(tmp_path)
    with pytest.raises(NliModelError) as raised:
        check_nli_model(str(tmp_path), "nli-bidirectional")
    message = str(raised.value)
    assert message.startswith(f"[protocol] nli_model = '{tmp_path}': config.id2label {{0: 'LABEL_0', 1: 'LABEL_1'}}")
    assert "has no 'entailment' label" in message and "\n" not in message


def test_the_contradiction_rule_needs_a_contradiction_label(tmp_path: Path) -> None:
    _classifier("roberta", id2label={0: "entailment", 1: "not_entailment"}).save_pretrained(tmp_path)
    assert check_nli_model(str(tmp_path), "nli-bidirectional").entailment == 0  # enough for entailment both ways
    with pytest.raises(NliModelError, match="has no 'contradiction' label, which uncertainty_equivalence"):
        check_nli_model(str(tmp_path), "nli-contradiction")


def test_a_model_that_is_not_a_sequence_classifier_is_refused(tmp_path: Path) -> None:
    encoder = DebertaV2Model(cast(DebertaV2Config, _classifier("deberta-v2").config))
    encoder.save_pretrained(tmp_path)
    with pytest.raises(NliModelError, match=r"is not a sequence classifier \(config.json architectures = "):
        check_nli_model(str(tmp_path), "nli-bidirectional")
    causal = tmp_path / "causal"
    tiny_model("llama").model.save_pretrained(causal)
    with pytest.raises(NliModelError, match=r"architectures = \['LlamaForCausalLM'\]"):
        NliClassifier.load(str(causal), "nli-bidirectional")


def test_the_check_reads_the_config_only(tmp_path: Path) -> None:
    _classifier("deberta-v2").save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()  # config.json only: no weights, no tokenizer
    assert check_nli_model(str(tmp_path), "nli-contradiction").contradiction == CONTRADICTION
    with pytest.raises(NliModelError, match="no model config found"):
        check_nli_model(str(tmp_path / "missing"), "nli-contradiction")
    with pytest.raises(NliModelError, match=r"nli_model = 'no-such-org/no-such-nli': no model config found"):
        check_nli_model("no-such-org/no-such-nli", "nli-contradiction")  # HF_HUB_OFFLINE=1 in the tests


CONFIG = """
name = "nli"
seed = 5
[model]
spec = "tiny-llama"
[protocol]
instructions = ["none"]
rounds = 1
answer_tokens = 4
uncertainty_samples = 3
uncertainty_equivalence = "{rule}"
nli_model = "{nli}"
[capture]
sites = ["blocks.1.hook_resid_post"]
batch_size = 2
"""


def _free_text_items() -> list[Item]:
    return [
        Item("wino/0", "winogender", "nurse", "", "The nurse told the patient that _ could go home.", ()),
        Item("rtp/0", "realtoxicity", "", "", "So I told him that he was a", ()),
    ]


def _loss(model: LoadedModel, input_text: str, gen: str) -> float:
    """Paper 4's score of one sample: the loss of ``tokenizer(input_text + gen)`` with the prompt masked."""
    prompt_length = len(model.tokenizer(input_text, add_special_tokens=False)["input_ids"])
    input_ids = torch.tensor([model.tokenizer(input_text + gen, add_special_tokens=False)["input_ids"]])
    labels = input_ids.clone()
    labels[:, :prompt_length] = -100
    with torch.no_grad():
        return float(model.model(input_ids=input_ids, labels=labels).loss)


@pytest.mark.parametrize("rule", ["auto", "nli-contradiction"])
def test_runner_clusters_free_text_with_the_nli_model(
    tmp_path: Path, rule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Free-text items (Winogender, RealToxicityPrompts: no options) are clustered by the classifier;
    each task's samples get its own budget (paper 4's 125 tokens for RealToxicityPrompts, set to 7
    here to keep the test fast on a CPU; Winogender: the answer budget, 4)."""
    monkeypatch.setitem(uncertainty_metrics.PAPER4_TOKEN_BUDGETS, "realtoxicity", 7)
    folder = _saved(tmp_path / "nli", "deberta-v2", varied=True)
    path = tmp_path / "nli.toml"
    path.write_text(CONFIG.format(rule=rule, nli=folder))
    config = dataclasses.replace(RunConfig.load(path), output_dir=str(tmp_path / "runs"))
    model = tiny_model("llama", n_layers=2)
    runner = ExperimentRunner(config, model, _free_text_items())
    runner.run(tmp_path / "cache.h5")
    with open_cache(tmp_path / "cache.h5", expect="run") as reader:
        records = {record.item_id: record for record in decode_records(reader.records)}
    nli_rule = "nli-bidirectional" if rule == "auto" else rule
    classifier = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    nli_tokenizer = AutoTokenizer.from_pretrained(folder)
    entail = {name.lower(): index for index, name in classifier.config.id2label.items()}

    def predicted(premise: str, hypothesis: str) -> int:
        with torch.no_grad():
            return int(
                classifier(**nli_tokenizer(premise, hypothesis, truncation=True, return_tensors="pt")).logits.argmax()
            )

    def equivalent(a: str, b: str) -> bool:
        forward, backward = predicted(a, b), predicted(b, a)
        if nli_rule == "nli-bidirectional":
            return forward == backward == entail["entailment"]
        return entail["contradiction"] not in (forward, backward)

    clusterings = []
    for item, budget in zip(_free_text_items(), (4, 7)):
        record = records[item.item_id]
        assert record.uncertainty_equivalence == f"{nli_rule}:{folder}"
        ids = model.tokenizer(record.prompt, add_special_tokens=False)["input_ids"]
        seed = config.seed + zlib.crc32(record.record_key.encode())
        (rows,) = sample_continuations(model, [ids], 3, budget, seed, "beam-sample", 2)
        texts = [
            str(model.tokenizer.decode(row, skip_special_tokens=True, clean_up_tokenization_spaces=False))
            for row in rows
        ]
        samples = [s for s in dict.fromkeys(" ".join(t.strip().split("\n")) for t in texts) if s]
        assert samples
        assert max(len(row) for row in rows) <= budget and (budget == 4 or max(len(row) for row in rows) > 4)
        pending, clusters = list(samples), []
        while pending:  # the intended anchor loop: the anchor leaves the pending list
            cluster = [pending[0]] + [s for s in pending[1:] if equivalent(pending[0], s)]
            clusters.append(cluster)
            pending = [s for s in pending if s not in cluster]
        clusterings.append(clusters)
        expected = np.mean([np.mean([_loss(model, record.prompt, s) for s in cluster]) for cluster in clusters])
        assert record.semantic_uncertainty == pytest.approx(expected, rel=1e-5)
    sizes = [len(cluster) for clusters in clusterings for cluster in clusters]
    assert sum(sizes) > len(clusterings)  # more than one distinct sample somewhere: the classifier was asked
    if rule == "nli-contradiction":  # the looser rule joins some distinct samples (a changed prompt may need new seeds)
        assert max(sizes) > 1
