"""When two sampled answers mean the same: the equivalence relations of the semantic uncertainty.

docs/protocols.md §2.2. The rules (``[protocol] uncertainty_equivalence``):

- ``"option"``: both answers parse to the same option of a multiple-choice item
  (:func:`option_equivalence`); an answer that names no option is equivalent only to itself. For
  multiple choice the option *is* the meaning, so no model is needed.
- ``"nli-bidirectional"``: a natural-language-inference classifier predicts ENTAILMENT in both
  directions (``a => b`` and ``b => a``): the bidirectional-entailment rule of Kuhn, Gal and Farquhar,
  "Semantic Uncertainty", ICLR 2023 (Algorithm 1).
- ``"nli-contradiction"``: the classifier predicts CONTRADICTION in neither direction: paper 4's
  rule (HaitaoMao/LLM-self-correction@071c790 ``analysis/uncerntainty.py``, ``clustering``: a sample
  leaves the anchor's cluster when either direction predicts class 0 of ``microsoft/deberta-large-mnli``,
  CONTRADICTION). Neutral pairs count as equivalent, so it is looser. Kuhn et al.'s released code
  (lorenzkuhn/semantic_uncertainty ``code/get_semantic_similarities.py``) applies this looser rule too.
- ``"auto"``: ``"option"`` for items with options, ``"nli-bidirectional"`` for free text.

The classifier is any Hugging Face sequence-classification model (hub id or local folder) whose
``config.id2label`` names the ENTAILMENT (and, for the contradiction rule, CONTRADICTION) class;
the ids are read from there, never assumed. Paper 4 used :data:`DEFAULT_NLI_MODEL`. A pair is
encoded as the tokenizer's own sentence pair (``[CLS] a [SEP] b [SEP]`` for DeBERTa), padded per
batch with an attention mask, truncated to the model's limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from workbench.metrics.answers import ParseRule, parse_option
from workbench.metrics.uncertainty import Equivalence, exact_match_equivalence

EquivalenceRule = Literal["auto", "option", "nli-bidirectional", "nli-contradiction"]
EQUIVALENCE_RULES: tuple[EquivalenceRule, ...] = ("auto", "option", "nli-bidirectional", "nli-contradiction")
NliRule = Literal["nli-bidirectional", "nli-contradiction"]
DEFAULT_NLI_MODEL = "microsoft/deberta-large-mnli"
"""The NLI classifier of paper 4 (qzm233/SuperficialMoralSelfCorrection@342b270 ``utils.init_nli_model``)
and of Kuhn et al.'s code (lorenzkuhn/semantic_uncertainty ``code/get_semantic_similarities.py``)."""
_NEEDED_LABEL: dict[NliRule, str] = {"nli-bidirectional": "entailment", "nli-contradiction": "contradiction"}


class NliModelError(ValueError):
    """An ``nli_model`` that is not a sequence classifier with the labels its rule reads."""


def nli_rule_of(rule: EquivalenceRule) -> NliRule | None:
    """The NLI rule a configured ``rule`` may need (``"auto"``: bidirectional, for free text), or ``None``."""
    if rule == "option":
        return None
    return "nli-bidirectional" if rule == "auto" else rule


def resolved_rule(rule: EquivalenceRule, has_options: bool) -> NliRule | None:
    """The rule an item is clustered by: ``None`` for the option rule, else the NLI rule
    (``"auto"`` is the option rule for items with options, ``"nli-bidirectional"`` for free text)."""
    if rule == "option" or (rule == "auto" and has_options):
        return None
    return nli_rule_of(rule)


def equivalence_name(rule: NliRule | None, *, parse_rule: ParseRule, nli_model: str) -> str:
    """What the ``uncertainty_equivalence`` record column says for a :func:`resolved_rule`:
    ``"option:<parse rule>"`` or ``"<nli rule>:<nli model>"``."""
    return f"option:{parse_rule}" if rule is None else f"{rule}:{nli_model}"


def option_equivalence(options: Sequence[str], parse_rule: ParseRule = "label", gold: int | None = None) -> Equivalence:
    """Equivalent when both texts parse to the same option of ``options`` by ``parse_rule`` (``gold``:
    the item's gold option, which ``"gold_label"`` needs); a text that parses to no option is
    equivalent only to the same text (:func:`exact_match_equivalence`)."""

    def equivalent(a: str, b: str) -> bool:
        parsed = parse_option(a, options, parse_rule, gold=gold)
        if parsed is None:
            return exact_match_equivalence(a, b)
        return parsed == parse_option(b, options, parse_rule, gold=gold)

    return equivalent


@dataclass(frozen=True)
class NliLabels:
    """Class ids of an NLI classifier's ``config.id2label`` (``None``: the model has no such class)."""

    entailment: int | None
    contradiction: int | None


def nli_labels(config: PretrainedConfig, spec: str, rule: NliRule) -> NliLabels:
    """The label ids of a classifier's config, checked for ``rule``.

    Raises:
        NliModelError: the config names no ``*ForSequenceClassification`` architecture, or its
            ``id2label`` lacks the label ``rule`` reads (one line naming ``[protocol] nli_model``).
    """
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise NliModelError(
            f"[protocol] nli_model = {spec!r} is not a sequence classifier (config.json architectures = "
            f"{architectures}); give an NLI classifier such as {DEFAULT_NLI_MODEL}"
        )
    id2label = dict(config.id2label or {})
    names = {str(name).lower(): int(index) for index, name in id2label.items()}
    labels = NliLabels(entailment=names.get("entailment"), contradiction=names.get("contradiction"))
    needed = _NEEDED_LABEL[rule]
    if getattr(labels, needed) is None:
        raise NliModelError(
            f"[protocol] nli_model = {spec!r}: config.id2label {id2label} has no {needed!r} label, "
            f"which uncertainty_equivalence = {rule!r} reads; give an NLI classifier such as {DEFAULT_NLI_MODEL}"
        )
    return labels


def check_nli_model(spec: str, rule: NliRule) -> NliLabels:
    """Read only ``spec``'s ``config.json`` (seconds, no weights) and check it with :func:`nli_labels`.

    Raises:
        NliModelError: no config found (unknown id, offline without a cached copy, a folder without
            ``config.json``), or :func:`nli_labels` refuses it.
    """
    try:
        config = AutoConfig.from_pretrained(spec)
    except (OSError, ValueError) as error:
        raise NliModelError(
            f"[protocol] nli_model = {spec!r}: no model config found ({type(error).__name__}); give a hub id "
            f"(the default is {DEFAULT_NLI_MODEL}) or a local folder with config.json"
        ) from None
    return nli_labels(config, spec, rule)


@dataclass(frozen=True)
class NliClassifier:
    """A loaded NLI sequence classifier.

    Attributes:
        spec: the hub id or folder it was loaded from.
        model: the classifier, float32, in eval mode.
        tokenizer: its tokenizer.
        labels: its class ids.
    """

    spec: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    labels: NliLabels

    @classmethod
    def load(cls, spec: str, rule: NliRule, device: torch.device | str = "cpu") -> NliClassifier:
        """Check ``spec``'s config for ``rule`` (:func:`check_nli_model`), then load it onto ``device``."""
        labels = check_nli_model(spec, rule)
        tokenizer = AutoTokenizer.from_pretrained(spec)
        model = AutoModelForSequenceClassification.from_pretrained(spec, dtype=torch.float32)
        model.to(device)
        model.eval()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in transformers
        return cls(spec=spec, model=model, tokenizer=tokenizer, labels=labels)

    def logits(self, premises: Sequence[str], hypotheses: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """``[n_pairs, n_labels]`` float32 logits of ``premise => hypothesis`` for each pair."""
        rows: list[np.ndarray] = []
        device = self.model.device
        for start in range(0, len(premises), batch_size):
            encoded: Any = self.tokenizer(
                list(premises[start : start + batch_size]),
                list(hypotheses[start : start + batch_size]),
                padding=True,
                truncation=True,
                return_tensors="pt",
            )
            with torch.inference_mode():
                output = self.model(**{key: value.to(device) for key, value in encoded.items()})
            rows.append(output.logits.float().cpu().numpy())
        n_labels = len(self.model.config.id2label or {})
        return np.concatenate(rows) if rows else np.zeros((0, n_labels), dtype=np.float32)

    def judgements(self, samples: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """``[n, n]`` predicted class id of ``samples[i] => samples[j]`` (argmax of the logits);
        the diagonal, never compared, holds -1."""
        n = len(samples)
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
        predicted = np.argmax(
            self.logits([samples[i] for i, _ in pairs], [samples[j] for _, j in pairs], batch_size), axis=1
        )
        matrix = np.full((n, n), -1, dtype=np.int64)
        for (i, j), label in zip(pairs, predicted):
            matrix[i, j] = int(label)
        return matrix


def nli_equivalent(forward: int, backward: int, labels: NliLabels, rule: NliRule) -> bool:
    """Whether two texts are equivalent given the predicted classes of ``a => b`` and ``b => a``."""
    if rule == "nli-bidirectional":
        return forward == labels.entailment and backward == labels.entailment
    if rule == "nli-contradiction":
        return labels.contradiction not in (forward, backward)
    raise ValueError(f"unknown NLI rule {rule!r}; use nli-bidirectional or nli-contradiction")


def judged_equivalence(samples: Sequence[str], judgements: np.ndarray, labels: NliLabels, rule: NliRule) -> Equivalence:
    """The equivalence over distinct ``samples`` that ``judgements`` (``[n, n]`` predicted class of
    ``samples[i] => samples[j]``, :meth:`NliClassifier.judgements`) imply under ``rule``."""
    index = {sample: position for position, sample in enumerate(samples)}
    if len(index) != len(samples):
        raise ValueError("judged_equivalence needs distinct samples (distinct_samples)")

    def equivalent(a: str, b: str) -> bool:
        i, j = index[a], index[b]
        return i == j or nli_equivalent(int(judgements[i, j]), int(judgements[j, i]), labels, rule)

    return equivalent
