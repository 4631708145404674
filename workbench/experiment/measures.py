"""The per-record research measures of an answer round, each callable without the runner.

The runner (:mod:`workbench.experiment.runner`) generates the answers and the activations; the
measures below add what the papers measured about each answer:

- :class:`SemanticUncertainty`: paper 4's sample-based uncertainty of the round's input;
- :func:`self_distinguish`: can the model name the stereotyped group of a BBQ item in its own
  dialogue (paper 2's self-distinguish question);
- :func:`pairwise_distinguish`: at a generation task's last round, can it tell which of two of its
  own outputs is more toxic;
- :func:`answer_toxicity`: the toxicity of each generated answer, by the configured scorer.

All take a :class:`MeasureContext` (the model, the protocol settings, the run's seed and batch size).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from workbench.config import ProtocolSettings
from workbench.hooks.positions import in_context_continuation
from workbench.inference.generation import chat_prompt, sample_continuations, sample_text
from workbench.inference.option_scoring import continuation_mean_nll, option_mean_nll
from workbench.inference.semantic_equivalence import (
    NliClassifier,
    equivalence_name,
    judged_equivalence,
    nli_rule_of,
    option_equivalence,
    resolved_rule,
)
from workbench.metrics.uncertainty import (
    anchor_clusters,
    distinct_samples,
    semantic_uncertainty,
    uncertainty_token_budget,
)
from workbench.models.loading import LoadedModel
from workbench.protocols import Condition, Dialogue
from workbench.protocols.dialogue import PendingTurn
from workbench.protocols.history import clean_messages, faithful_history
from workbench.protocols.self_distinguish import bbq_stereotype_prompt, sample_output_pairs, toxicity_pair_prompt
from workbench.protocols.templates import split_chat_turn
from workbench.tasks.items import Item
from workbench.toxicity.scorer import ToxicityScorer, score_texts

PAIRWISE_PAIRS = 3  # output pairs asked per dialogue at the last round


@dataclass(frozen=True)
class MeasureContext:
    """What every measure needs: the model, the protocol's settings, the run's seed and batch size."""

    model: LoadedModel
    settings: ProtocolSettings
    seed: int
    batch_size: int


def choose_options(
    context: MeasureContext, texts: Sequence[str], option_labels: Sequence[Sequence[str]], faithful: bool
) -> list[int]:
    """The option each prompt's model prefers by mean-token log-probability (a question, not a turn).

    Faithful prompts carry the scripts' own markers, so the tokenizer adds its special tokens.
    """
    nll = option_mean_nll(
        context.model, texts, option_labels, add_special_tokens=faithful, batch_size=context.batch_size
    )
    return [int(np.argmin(values)) for values in nll]


class SemanticUncertainty:
    """Paper 4's sample-based uncertainty of each round input, and the equivalence that clustered it.

    The ``[protocol] nli_model`` classifier (for the NLI equivalences) loads onto the model's device
    at its first use and stays for the run.
    """

    def __init__(self, context: MeasureContext) -> None:
        self.context = context

    @functools.cached_property
    def nli_classifier(self) -> NliClassifier:
        settings = self.context.settings
        rule = nli_rule_of(settings.uncertainty_equivalence)
        assert rule is not None, "the option rule needs no NLI classifier"
        return NliClassifier.load(settings.nli_model, rule, self.context.model.device)

    def __call__(
        self,
        items: Sequence[Item],
        texts: Sequence[str],
        prompt_ids: Sequence[list[int]],
        keys: Sequence[str],
        *,
        add_special_tokens: bool,
    ) -> tuple[np.ndarray, list[str]]:
        """The uncertainty of each prompt ``texts[i]`` (tokenized as ``prompt_ids[i]``).

        docs/protocols.md §2.2: ``uncertainty_samples`` samples per prompt (``uncertainty_sampling``,
        the task's token budget), their texts without repeats, each scored by the mean token NLL of
        ``texts[i] + sample`` re-tokenized (the continuation split where the prompt's own tokens end,
        special tokens as ``add_special_tokens``), clustered by ``uncertainty_equivalence``. The
        draws are seeded by the run's seed and the first record key of each budget group, so a
        resumed run draws the same samples. Returns ``[n]`` nats (NaN when sampling is off or no
        sample has a token) and the record's ``uncertainty_equivalence`` per item (``""`` where the
        value is NaN).
        """
        model, settings, batch_size = self.context.model, self.context.settings, self.context.batch_size
        values = np.full(len(items), np.nan)
        names = [""] * len(items)
        if settings.uncertainty_samples == 0:
            return values, names
        tokenizer = model.tokenizer
        budgets = [
            uncertainty_token_budget(item.task, settings.answer_tokens, settings.uncertainty_tokens) for item in items
        ]
        samples: list[list[str]] = [[] for _ in items]
        for budget in sorted(set(budgets)):
            members = [index for index, item_budget in enumerate(budgets) if item_budget == budget]
            seed = self.context.seed + zlib.crc32(keys[members[0]].encode())
            drawn = sample_continuations(
                model,
                [prompt_ids[index] for index in members],
                settings.uncertainty_samples,
                budget,
                seed,
                settings.uncertainty_sampling,
                batch_size,
            )
            for index, rows in zip(members, drawn):
                samples[index] = distinct_samples([sample_text(tokenizer, row) for row in rows])
        pairs = [
            in_context_continuation(tokenizer, texts[index], sample, add_special_tokens=add_special_tokens)
            for index, group in enumerate(samples)
            for sample in group
        ]
        nll = continuation_mean_nll(model, pairs, batch_size)
        offset = 0
        for index, (item, group) in enumerate(zip(items, samples)):
            per_sample, offset = nll[offset : offset + len(group)], offset + len(group)
            scored = np.isfinite(per_sample)
            kept = [sample for sample, finite in zip(group, scored) if finite]
            if not kept:
                continue
            rule = resolved_rule(settings.uncertainty_equivalence, bool(item.options))
            if rule is None:
                equivalent = option_equivalence(item.options, settings.parse_rule, gold=item.gold)
            else:
                classifier = self.nli_classifier
                judgements = classifier.judgements(kept, batch_size)
                equivalent = judged_equivalence(kept, judgements, classifier.labels, rule)
            values[index] = semantic_uncertainty(per_sample[scored].tolist(), anchor_clusters(kept, equivalent))
            names[index] = equivalence_name(rule, parse_rule=settings.parse_rule, nli_model=settings.nli_model)
        return values, names


def self_distinguish(
    context: MeasureContext, condition: Condition, items: Sequence[Item], dialogues: Sequence[Dialogue]
) -> list[tuple[int, int]]:
    """(predicted, gold) option of the stereotyped-group question per item; (-1, -1) when not asked.

    Asked of BBQ items with a known target group when ``[protocol] self_distinguish`` is on, after
    each item's dialogue so far (``dialogues[i]``, the answer of this round included).
    """
    settings = context.settings
    asked = [
        index
        for index, item in enumerate(items)
        if settings.self_distinguish and item.task == "bbq" and item.metadata.get("target_index") is not None
    ]
    result = [(-1, -1)] * len(items)
    if not asked:
        return result
    questions = [stereotype_question(condition, items[index], dialogues[index], settings.eos_token) for index in asked]
    texts = [
        # clean mode (no raw text) always has the messages
        raw if raw is not None else chat_prompt(context.model, cast(list[dict[str, str]], messages), prefix)
        for raw, messages, prefix, _ in questions
    ]
    choices = choose_options(
        context, texts, [items[index].option_labels for index in asked], faithful=condition.history_mode == "faithful"
    )
    for index, choice, (_, _, _, gold) in zip(asked, choices, questions):
        result[index] = (choice, gold)
    return result


def stereotype_question(
    condition: Condition, item: Item, dialogue: Dialogue, eos_token: str
) -> tuple[str | None, list[dict[str, str]] | None, str, int]:
    """The in-dialogue "which group is stereotyped?" question after ``dialogue``.

    Returns ``(raw text, messages, assistant prefix, gold option)``: ``raw`` in faithful mode,
    ``messages`` (the dialogue's turns, then the question) in clean mode.
    """
    if condition.history_mode == "faithful":
        question = bbq_stereotype_prompt(item, faithful_history(dialogue, eos_token))
        return question.text, None, "", question.gold
    question = bbq_stereotype_prompt(item)
    user, prefix = split_chat_turn(question.text)
    pending = PendingTurn(question.template_id, "answer", -1, user, prefix, question.text)
    return None, clean_messages(dialogue, pending), prefix, question.gold


def pairwise_distinguish(
    context: MeasureContext,
    condition: Condition,
    items: Sequence[Item],
    dialogues: Sequence[Dialogue],
    rounds: Sequence[int],
    toxicity_history: dict[str, list[float]],
) -> list[float]:
    """Per item, the share of output pairs whose more toxic member the model picks; NaN when not asked.

    Asked at a ``realtoxicity`` dialogue's last round (``rounds[i] == condition.rounds - 1``) with at
    least three answers, when ``[protocol] self_distinguish`` is on: :data:`PAIRWISE_PAIRS` random
    pairs of the dialogue's round outputs (seeded per item), the baseline prompt with the corrected
    label, scored by option log-probability. ``toxicity_history`` holds each item's toxicity per
    answer round, as :func:`answer_toxicity` scored them.
    """
    accuracy = [float("nan")] * len(items)
    if not context.settings.self_distinguish:
        return accuracy
    for index, (item, dialogue, round_index) in enumerate(zip(items, dialogues, rounds)):
        answers = [turn.response for turn in dialogue.answers]
        if item.task != "realtoxicity" or round_index != condition.rounds - 1 or len(answers) < 3:
            continue
        scores = toxicity_history[item.item_id]
        pairs = sample_output_pairs(len(answers), PAIRWISE_PAIRS, context.seed + zlib.crc32(item.item_id.encode()))
        questions = [toxicity_pair_prompt(answers[i], answers[j], scores[i], scores[j]) for i, j in pairs]
        texts = []
        for question in questions:  # the baseline question is plain text, without an [INST] frame
            user, prefix = split_chat_turn(question.text) if "[INST]" in question.text else (question.text, "")
            texts.append(chat_prompt(context.model, [{"role": "user", "content": user}], prefix))
        choices = choose_options(context, texts, [("(a)", "(b)", "(c)")] * len(texts), faithful=False)
        accuracy[index] = float(np.mean([choice == question.gold for choice, question in zip(choices, questions)]))
    return accuracy


@dataclass(frozen=True)
class AnswerToxicity:
    """The toxicity of one round's answers.

    Attributes:
        values: ``[n]`` scores in [0, 1]; NaN for answers of tasks that are not scored.
        scorer: ``"<scorer>@<version>"`` of the scores, ``""`` when nothing was scored.
        scored: indices of the answers that were scored.
    """

    values: np.ndarray
    scorer: str
    scored: frozenset[int]


def answer_toxicity(
    scorer: ToxicityScorer | None,
    items: Sequence[Item],
    answers: Sequence[str],
    toxicity_history: dict[str, list[float]],
) -> AnswerToxicity:
    """Score the answers of ``realtoxicity`` items with ``scorer``; appends each score to its item's
    ``toxicity_history`` (item -> one score per answer round, for :func:`pairwise_distinguish`)."""
    values = np.full(len(items), np.nan)
    scored = [index for index, item in enumerate(items) if item.task == "realtoxicity"]
    if not scored or scorer is None:
        return AnswerToxicity(values, "", frozenset())
    scores = score_texts(scorer, [answers[index] for index in scored])
    values[scored] = scores.values
    for index in scored:
        toxicity_history.setdefault(items[index].item_id, []).append(float(values[index]))
    return AnswerToxicity(values, f"{scores.scorer}@{scores.scorer_version}", frozenset(scored))
