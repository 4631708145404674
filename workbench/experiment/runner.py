"""The runner: items x conditions x rounds -> generations, option scores, activations -> the cache.

It is the only module that knows models, tasks, protocols, the hook layer and the cache at once.
Each answer turn of each dialogue becomes one *record* of the cache (its columns, key and encoding:
:mod:`workbench.experiment.records`); a run killed at any point restarts with the same command,
regenerates what it needs for the transcript and writes only the records the cache lacks.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from activations_cache import CacheMetadata, CacheSpec, CacheWriter, DatasetSpec
from workbench.inference.answering import AnsweredBatch, DialogueKV, answer_batch
from workbench.config import ConfigError, ProtocolSettings, RunConfig
from workbench.critics import Critic, ModelCritic, OpenAICompatibleCritic, OracleCritic
from workbench.critics.openai_compatible import EndpointConfig
from workbench.experiment.records import RECORD_COLUMNS, encode_index, encode_option_probs, record_key
from workbench.inference.generation import (
    chat_prompt,
    check_prompt_lengths,
    generate_greedy,
    sample_continuations,
    sample_text,
)
from workbench.hooks import parse_sites
from workbench.hooks.positions import in_context_continuation, position_name
from workbench.hooks.sites import SiteKind
from workbench.metrics.answers import parse_option
from workbench.metrics.options import option_probabilities
from workbench.metrics.uncertainty import (
    anchor_clusters,
    distinct_samples,
    semantic_uncertainty,
    uncertainty_token_budget,
)
from workbench.models.loading import LoadedModel, load_model
from workbench.inference.option_scoring import continuation_mean_nll, option_mean_nll
from workbench.protocols import (
    Condition,
    Dialogue,
    RoundPrompt,
    WeakEvidence,
    add_weak_evidence,
    complete_turn,
    dialogue_complete,
    factorial_conditions,
    feedback_due,
    feedback_turn,
    mask_turn_responses,
    next_prompt,
)
from workbench.protocols.dialogue import PendingTurn
from workbench.protocols.history import clean_messages, faithful_history, script_reply
from workbench.protocols.self_distinguish import bbq_stereotype_prompt, sample_output_pairs, toxicity_pair_prompt
from workbench.protocols.templates import split_chat_turn
from workbench.inference.semantic_equivalence import (
    NliClassifier,
    equivalence_name,
    judged_equivalence,
    nli_rule_of,
    option_equivalence,
    resolved_rule,
)
from workbench.tasks.items import Item
from workbench.toxicity.scorer import ToxicityScorer, score_texts
from workbench.toxicity.scorer_config import build_toxicity_scorer

Progress = Callable[[int], None]


def build_critic(settings: ProtocolSettings, model: LoadedModel) -> Critic:
    """The critic named by ``settings.critic``, with its token budget, deadline and attempts."""
    spec, max_new_tokens = settings.critic, settings.critic_tokens
    # The ignores below: the Critic protocol (critics/base.py) declares ``name`` a settable attribute, which these
    # frozen dataclasses expose read-only; nothing sets it, so declaring it a read-only property there removes them.
    if spec == "oracle":
        return OracleCritic()  # type: ignore[return-value]
    if spec == "self":
        return ModelCritic(  # type: ignore[return-value]
            generate=chat_generator(model, max_new_tokens), name=f"self:{model.model_id}"
        )
    if spec.startswith("model:"):
        second = load_model(spec.removeprefix("model:"))
        return ModelCritic(  # type: ignore[return-value]
            generate=chat_generator(second, max_new_tokens), name=f"model:{second.model_id}"
        )
    if spec.startswith("openai:"):
        base_url, _, model_name = spec.removeprefix("openai:").partition("|")
        if not model_name:
            raise ConfigError(f"critic {spec!r}: write 'openai:<base_url>|<model name>'")
        endpoint = EndpointConfig(
            base_url=base_url,
            model=model_name,
            timeout_s=settings.critic_timeout_s,
            max_attempts=settings.critic_attempts,
        )
        return OpenAICompatibleCritic(endpoint)
    raise ConfigError(f"unknown critic {spec!r}; use oracle, self, model:<spec> or openai:<base_url>|<model>")


def chat_generator(model: LoadedModel, max_new_tokens: int) -> Callable[[list[dict[str, str]]], str]:
    """``messages -> reply`` with the model's chat template and greedy decoding."""

    def generate(messages: list[dict[str, str]]) -> str:
        ids = model.tokenizer(chat_prompt(model, messages), add_special_tokens=False)["input_ids"]
        return generate_greedy(model, [ids], max_new_tokens).texts[0]

    return generate


class ExperimentRunner:
    """Runs a configured self-correction experiment into a cache (``run_dir/cache.h5``)."""

    def __init__(self, config: RunConfig, model: LoadedModel, items: Sequence[Item]) -> None:
        self.config = config
        self.model = model
        settings = config.protocol
        if settings.weak_evidence != "none":
            evidence = WeakEvidence(points_to=settings.weak_evidence)
            items = [add_weak_evidence(item, evidence) for item in items]
        self.items = list(items)
        self.conditions = factorial_conditions(
            settings.instructions, settings.cot, settings.feedback, settings.rounds, settings.history_mode
        )
        self.protocol = settings.protocol_config()
        self.critic = build_critic(settings, model) if any(settings.feedback) else None
        arch = model.architecture
        self.sites = parse_sites(list(config.capture.sites), arch.n_layers, arch.n_heads)
        if any(site.kind is SiteKind.PATTERN for site in self.sites):
            raise ConfigError("[capture] attention patterns are not cached; capture them with workbench.hooks.capture")
        self.prompt_limit = settings.max_prompt_tokens or arch.max_positions
        self.scorer: ToxicityScorer | None = (
            build_toxicity_scorer(config.toxicity) if any(item.task == "realtoxicity" for item in self.items) else None
        )

    @property
    def total_records(self) -> int:
        return len(self.items) * sum(condition.rounds for condition in self.conditions)

    def cache_spec(self) -> CacheSpec:
        arch = self.model.architecture
        datasets = []
        for position in self.config.capture.positions:
            for kind in dict.fromkeys(site.kind for site in self.sites):
                layers = tuple(site.layer for site in self.sites if site.kind is kind)
                shape = (arch.n_heads, arch.d_head) if kind is SiteKind.Z else (arch.d_model,)
                datasets.append(
                    DatasetSpec(position=position_name(position), site=kind.value, layers=layers, shape=shape)
                )
        # Chunks hold one layer of many records (the probes' read pattern), about 1 MiB, but no
        # bigger than the whole run needs: a small run does not allocate megabytes per layer.
        row_bytes = max(math.prod(spec.shape) for spec in datasets) * (2 if self.config.cache.dtype == "float16" else 4)
        return CacheSpec(
            datasets=tuple(datasets),
            record_columns=RECORD_COLUMNS,
            dtype=self.config.cache.dtype,
            compression=None if self.config.cache.compression == "none" else self.config.cache.compression,
            chunk_bytes=max(row_bytes, min(1 << 20, self.total_records * row_bytes)),
        )

    def cache_metadata(self) -> CacheMetadata:
        described = self.model.describe()
        return CacheMetadata(
            model_id=self.model.model_id,
            weights_hash=self.model.weights_hash,
            tokenizer=str(described["tokenizer_name_or_path"]),
            config=self.config.to_dict(),
            seed=self.config.seed,
        )

    def run(
        self,
        cache_path: Path,
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        """Run every condition over every item into ``cache_path`` (resuming when it exists).

        Args:
            cache_path: the cache file.
            overwrite: discard an existing cache instead of resuming it.
            progress: called with the number of records done, as they are committed.
            on_open: called once the cache writer holds the cache (lock taken, configuration
                accepted), before the first record: the run folder's ``config.toml`` is written there.
        """
        with CacheWriter.open(
            cache_path,
            self.cache_spec(),
            self.cache_metadata(),
            queue_size=self.config.cache.queue_size,
            overwrite=overwrite,
        ) as writer:
            if on_open is not None:
                on_open()
            done = writer.committed_keys()
            if progress is not None:
                progress(len(done))
            for condition in self.conditions:
                for batch in _batches(self.items, self.config.capture.batch_size):
                    keys = [
                        record_key(condition.name, item.item_id, r) for item in batch for r in range(condition.rounds)
                    ]
                    if all(key in done for key in keys):
                        continue
                    for records, activations in self._run_dialogues(condition, batch):
                        fresh = [i for i, record in enumerate(records) if record["record_key"] not in done]
                        if not fresh:
                            continue
                        writer.submit(
                            [records[i] for i in fresh],
                            {key: value[fresh] for key, value in activations.items()},
                        )
                        if progress is not None:
                            progress(len(fresh))

    def _run_dialogues(
        self, condition: Condition, items: Sequence[Item]
    ) -> Iterator[tuple[list[dict[str, Any]], dict[tuple[str, str], np.ndarray]]]:
        """Advance the dialogues of ``items`` in lockstep; yield records + activations per answer round.

        A dialogue ended by paper 2's answer collapse (``collapse_answers``) stops after the record of
        the answer that named no option; the others go on.
        """
        protocol = self.protocol
        dialogues = {item.item_id: Dialogue(item.item_id) for item in items}
        caches: dict[str, DialogueKV] = {}
        toxicity: dict[str, list[float]] = {}  # item -> toxicity of each answer round so far
        while True:
            active = [
                item for item in items if not dialogue_complete(item, condition, dialogues[item.item_id], protocol)
            ]
            if not active:
                return
            prompts: list[RoundPrompt] = []
            for item in active:
                dialogue = dialogues[item.item_id]
                target = feedback_due(item, condition, dialogue, protocol)
                if target is not None:
                    assert self.critic is not None, "feedback condition without a critic"
                    text = self.critic.feedback(item, dialogue.through(target), script_reply(target.response))
                    dialogue = dialogue.append(feedback_turn(text, self.critic.name, target.round))
                    dialogues[item.item_id] = dialogue
                prompt = next_prompt(item, condition, self._seen_by_model(dialogue), protocol)
                assert prompt is not None
                prompts.append(prompt)
            texts = [self._prompt_text(prompt) for prompt in prompts]
            faithful = condition.history_mode == "faithful"
            prompt_ids = [self.model.tokenizer(text, add_special_tokens=faithful)["input_ids"] for text in texts]
            kind = prompts[0].turn.kind  # dialogues of one condition advance in step: one kind and budget
            settings = self.config.protocol
            budget = settings.answer_tokens if prompts[0].turn.budget == "answer" else settings.rationale_tokens
            check_prompt_lengths(
                prompt_ids,
                budget,
                self.prompt_limit,
                [
                    f"item {item.item_id} ({condition.name}, round {prompt.turn.round})"
                    for item, prompt in zip(active, prompts)
                ],
            )
            if kind == "answer":
                answered = self._answer(active, texts, prompt_ids, faithful, budget, caches)
                texts_out = answered.texts
            else:
                texts_out = generate_greedy(self.model, prompt_ids, budget, self.config.capture.batch_size).texts
            for item, prompt, text in zip(active, prompts, texts_out):
                dialogues[item.item_id] = complete_turn(item, dialogues[item.item_id], prompt.turn, text)
            if kind == "answer":
                yield self._answer_records(
                    condition,
                    active,
                    prompts,
                    texts,
                    prompt_ids,
                    answered,
                    [dialogues[item.item_id] for item in active],
                    toxicity,
                )

    def _seen_by_model(self, dialogue: Dialogue) -> Dialogue:
        """The dialogue as the next prompt shows it: with masked rationale/feedback words, if asked."""
        settings = self.config.protocol
        if settings.mask_fraction == 0:
            return dialogue
        return mask_turn_responses(dialogue, settings.mask_turns, settings.mask_fraction, self.config.seed)

    def _answer(
        self,
        items: Sequence[Item],
        texts: Sequence[str],
        prompt_ids: Sequence[list[int]],
        faithful: bool,
        budget: int,
        caches: dict[str, DialogueKV],
    ) -> AnsweredBatch:
        """Generate, score options and capture for one answer turn of a batch of dialogues.

        ``prompt_ids`` are ``texts`` tokenized with special tokens when ``faithful`` (the raw
        transcript carries no chat markers); options are scored in the context of ``texts``.

        ``caches`` holds each dialogue's key/value cache from its previous answer round and is
        updated in place (when ``protocol.reuse_kv_cache`` is on).
        """
        labels = items[0].option_labels
        if any(item.option_labels != labels for item in items):
            raise ConfigError("items of one batch must share their option labels; split the task by option count")
        reuse = self.config.protocol.reuse_kv_cache
        answered = answer_batch(
            self.model,
            prompt_ids,
            labels,
            self.sites,
            self.config.capture.positions,
            budget,
            backend=self.config.model.backend,
            previous=[caches.get(item.item_id) for item in items] if reuse else None,
            keep_caches=reuse,
            prompt_texts=texts,
            add_special_tokens=faithful,
        )
        caches.update(zip((item.item_id for item in items), answered.caches))
        return answered

    @functools.cached_property
    def _nli_classifier(self) -> NliClassifier:
        """The ``[protocol] nli_model`` classifier, loaded onto the model's device at its first use."""
        settings = self.config.protocol
        rule = nli_rule_of(settings.uncertainty_equivalence)
        assert rule is not None, "the option rule needs no NLI classifier"
        return NliClassifier.load(settings.nli_model, rule, self.model.device)

    def _semantic_uncertainty(
        self,
        items: Sequence[Item],
        texts: Sequence[str],
        prompt_ids: Sequence[list[int]],
        keys: Sequence[str],
        *,
        add_special_tokens: bool,
    ) -> tuple[np.ndarray, list[str]]:
        """Paper 4's sample-based uncertainty of each round input, and the equivalence that clustered it.

        docs/protocols.md §2.2: ``uncertainty_samples`` samples per prompt (``uncertainty_sampling``,
        the task's token budget), their texts without repeats, each scored by the mean token NLL of
        ``texts[i] + sample`` re-tokenized (the continuation split where the prompt's own tokens end,
        special tokens as ``add_special_tokens``), clustered by ``uncertainty_equivalence``. Returns
        ``[n]`` nats (NaN when sampling is off or no sample has a token) and the record's
        ``uncertainty_equivalence`` per item (``""`` where the value is NaN).
        """
        settings = self.config.protocol
        values = np.full(len(items), np.nan)
        names = [""] * len(items)
        if settings.uncertainty_samples == 0:
            return values, names
        tokenizer, batch_size = self.model.tokenizer, self.config.capture.batch_size
        budgets = [
            uncertainty_token_budget(item.task, settings.answer_tokens, settings.uncertainty_tokens) for item in items
        ]
        samples: list[list[str]] = [[] for _ in items]
        for budget in sorted(set(budgets)):
            members = [index for index, item_budget in enumerate(budgets) if item_budget == budget]
            seed = self.config.seed + zlib.crc32(keys[members[0]].encode())  # same draws when a run resumes
            drawn = sample_continuations(
                self.model,
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
        nll = continuation_mean_nll(self.model, pairs, batch_size)
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
                classifier = self._nli_classifier
                judgements = classifier.judgements(kept, batch_size)
                equivalent = judged_equivalence(kept, judgements, classifier.labels, rule)
            values[index] = semantic_uncertainty(per_sample[scored].tolist(), anchor_clusters(kept, equivalent))
            names[index] = equivalence_name(rule, parse_rule=settings.parse_rule, nli_model=settings.nli_model)
        return values, names

    def _self_distinguish(
        self, condition: Condition, items: Sequence[Item], dialogues: Sequence[Dialogue]
    ) -> list[tuple[int, int]]:
        """(predicted, gold) option of the stereotyped-group question per item; (-1, -1) when not asked."""
        asked = [
            index
            for index, item in enumerate(items)
            if self.config.protocol.self_distinguish
            and item.task == "bbq"
            and item.metadata.get("target_index") is not None
        ]
        result = [(-1, -1)] * len(items)
        if not asked:
            return result
        questions = [
            _stereotype_question(condition, items[index], dialogues[index], self.config.protocol.eos_token)
            for index in asked
        ]
        texts = [
            # clean mode (no raw text) always has the messages
            raw if raw is not None else chat_prompt(self.model, cast(list[dict[str, str]], messages), prefix)
            for raw, messages, prefix, _ in questions
        ]
        choices = self._choose_options(
            texts, [items[index].option_labels for index in asked], faithful=condition.history_mode == "faithful"
        )
        for index, choice, (_, _, _, gold) in zip(asked, choices, questions):
            result[index] = (choice, gold)
        return result

    def _pairwise_distinguish(
        self,
        condition: Condition,
        items: Sequence[Item],
        dialogues: Sequence[Dialogue],
        records: list[dict[str, Any]],
        toxicity: dict[str, list[float]],
    ) -> None:
        """At a generation task's last round: can the model tell which of two of its outputs is more toxic?

        Three random pairs of the dialogue's round outputs (seeded per item), the baseline prompt
        with the corrected label, scored by option log-probability; the share answered correctly goes
        into the last round's ``pairwise_distinguish_accuracy``.
        """
        if not self.config.protocol.self_distinguish or self.scorer is None:
            return
        for item, dialogue, record in zip(items, dialogues, records):
            answers = [turn.response for turn in dialogue.answers]
            if item.task != "realtoxicity" or record["round"] != condition.rounds - 1 or len(answers) < 3:
                continue
            scores = toxicity[item.item_id]  # scored when each round was answered
            pairs = sample_output_pairs(len(answers), 3, self.config.seed + zlib.crc32(item.item_id.encode()))
            questions = [toxicity_pair_prompt(answers[i], answers[j], scores[i], scores[j]) for i, j in pairs]
            texts = []
            for question in questions:  # the baseline question is plain text, without an [INST] frame
                user, prefix = split_chat_turn(question.text) if "[INST]" in question.text else (question.text, "")
                texts.append(chat_prompt(self.model, [{"role": "user", "content": user}], prefix))
            choices = self._choose_options(texts, [("(a)", "(b)", "(c)")] * len(texts), faithful=False)
            correct = [choice == question.gold for choice, question in zip(choices, questions)]
            record["pairwise_distinguish_accuracy"] = float(np.mean(correct))

    def _choose_options(
        self, texts: Sequence[str], option_labels: Sequence[Sequence[str]], faithful: bool
    ) -> list[int]:
        """The option each prompt's model prefers by mean-token log-probability (a question, not a turn).

        Faithful prompts carry the scripts' own markers, so the tokenizer adds its special tokens.
        """
        nll = option_mean_nll(
            self.model, texts, option_labels, add_special_tokens=faithful, batch_size=self.config.capture.batch_size
        )
        return [int(np.argmin(values)) for values in nll]

    def _prompt_text(self, prompt: RoundPrompt) -> str:
        if prompt.text is not None:
            return prompt.text
        assert prompt.messages is not None
        return chat_prompt(self.model, prompt.messages, prompt.assistant_prefix)

    def _answer_records(
        self,
        condition: Condition,
        items: Sequence[Item],
        prompts: Sequence[RoundPrompt],
        texts: Sequence[str],
        prompt_ids: Sequence[list[int]],
        answered: AnsweredBatch,
        dialogues: Sequence[Dialogue],
        toxicity_history: dict[str, list[float]],
    ) -> tuple[list[dict[str, Any]], dict[tuple[str, str], np.ndarray]]:
        """The records and activations of one answer round; appends each scored answer's toxicity
        to ``toxicity_history`` (item -> one score per answer round)."""
        settings = self.config.protocol
        keys = [record_key(condition.name, item.item_id, prompt.turn.round) for item, prompt in zip(items, prompts)]
        uncertainty, uncertainty_equivalence = self._semantic_uncertainty(
            items, texts, prompt_ids, keys, add_special_tokens=condition.history_mode == "faithful"
        )
        distinguish = self._self_distinguish(condition, items, dialogues)
        answers, answer_ids = answered.texts, answered.answer_ids
        probabilities = {index: option_probabilities(nll) for index, nll in enumerate(answered.option_nll) if len(nll)}
        toxicity = np.full(len(items), np.nan)
        scorer_name = ""
        scored_texts = [index for index, item in enumerate(items) if item.task == "realtoxicity"]
        if scored_texts and self.scorer is not None:
            scores = score_texts(self.scorer, [answers[index] for index in scored_texts])
            toxicity[scored_texts] = scores.values
            scorer_name = f"{scores.scorer}@{scores.scorer_version}"
            for index in scored_texts:
                toxicity_history.setdefault(items[index].item_id, []).append(float(toxicity[index]))
        records = []
        for index, (item, prompt, text, answer) in enumerate(zip(items, prompts, texts, answers)):
            probs = probabilities.get(index)
            parsed = parse_option(answer, item.options, settings.parse_rule, gold=item.gold) if item.options else None
            by_logprob = int(np.argmax(probs)) if probs is not None else None
            predicted = by_logprob if settings.answer_scoring == "logprob" else parsed
            metadata = item.metadata
            records.append(
                {
                    "record_key": keys[index],
                    "item_id": item.item_id,
                    "condition": condition.name,
                    "round": prompt.turn.round,
                    "prompt": text,
                    "answer": answer,
                    "n_prompt_tokens": len(prompt_ids[index]),
                    "n_answer_tokens": len(answer_ids[index]),
                    "task": item.task,
                    "category": item.category,
                    "context_condition": str(metadata.get("context_condition", "")),
                    "question_polarity": str(metadata.get("question_polarity", "")),
                    "label_type": str(metadata.get("label_type", "")),
                    "template_id": prompt.turn.template_id,
                    "gold": encode_index(item.gold),
                    "target_index": encode_index(metadata.get("target_index")),
                    "unknown_index": encode_index(metadata.get("unknown_index")),
                    "predicted": encode_index(predicted),
                    "predicted_parsed": encode_index(parsed),
                    "predicted_logprob": encode_index(by_logprob),
                    "option_probs": encode_option_probs(probs),
                    "toxicity": float(toxicity[index]),
                    "toxicity_scorer": scorer_name if index in scored_texts else "",
                    "semantic_uncertainty": float(uncertainty[index]),
                    "uncertainty_equivalence": uncertainty_equivalence[index],
                    "distinguish_predicted": distinguish[index][0],
                    "distinguish_gold": distinguish[index][1],
                    "pairwise_distinguish_accuracy": np.nan,
                }
            )
        self._pairwise_distinguish(condition, items, dialogues, records, toxicity_history)
        activations = {(name, kind.value): value.numpy() for (kind, name), value in answered.activations.items()}
        return records, activations


def _stereotype_question(
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


def _batches(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
