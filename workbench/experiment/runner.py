"""The runner: items x conditions x rounds -> generations, option scores, activations -> the cache.

It is the only module that knows models, tasks, protocols, the hook layer and the cache at once.
Each answer turn of each dialogue becomes one *record* of the cache (its columns, key and encoding:
:mod:`workbench.experiment.records`); a run killed at any point restarts with the same command,
regenerates what it needs for the transcript and writes only the records the cache lacks.

Image items (:mod:`workbench.tasks.image_questions`) run on a vision-language model: the first user
turn of every round's prompt carries the item's image (:func:`workbench.inference.generation.image_chat_prompt`),
the prompt is tokenized with the image's tokens in place of its placeholder, and the pixels go to the
answer round's prefill, the rationale turns' generation and the clean capture forward. The record's
``prompt`` keeps the one placeholder; ``n_prompt_tokens`` counts the image's tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from activations_cache import (
    CacheError,
    CacheMetadata,
    CacheSpec,
    CacheWriter,
    DatasetSpec,
    chunk_bytes_for,
    open_cache,
)
from workbench.config import ConfigError, ProtocolSettings, RunConfig
from workbench.critics import Critic, ModelCritic, OpenAICompatibleCritic, OracleCritic
from workbench.critics.openai_compatible import EndpointConfig
from workbench.experiment.data_parallel import SINGLE_PROCESS, World
from workbench.experiment.image_checks import check_image_run
from workbench.experiment.measures import (
    MeasureContext,
    SemanticUncertainty,
    answer_toxicity,
    pairwise_distinguish,
    self_distinguish,
)
from workbench.experiment.records import RECORD_COLUMNS, encode_index, encode_option_probs, record_key
from workbench.hooks import parse_sites
from workbench.hooks.capture import check_vision_positions
from workbench.hooks.positions import position_name
from workbench.hooks.sites import SiteKind
from workbench.hooks.vision import vision_processor
from workbench.inference.answering import AnsweredBatch, DialogueKV, answer_batch
from workbench.inference.engines import build_engine
from workbench.inference.generation import (
    chat_prompt,
    check_prompt_lengths,
    generate_greedy,
    image_chat_prompt,
)
from workbench.metrics.answers import parse_option
from workbench.metrics.options import option_probabilities
from workbench.models.loading import LoadedModel, load_model
from workbench.models.vision import ImageInputs
from workbench.protocols import (
    Condition,
    Dialogue,
    RoundPrompt,
    WeakEvidence,
    add_weak_evidence,
    complete_turn,
    dialogue_complete,
    feedback_due,
    feedback_turn,
    mask_turn_responses,
    next_prompt,
)
from workbench.protocols.history import script_reply
from workbench.tasks.image_questions import item_image
from workbench.tasks.items import Item
from workbench.toxicity.scorer import ToxicityScorer
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


def recorded_run_config(path: Path) -> dict[str, Any] | None:
    """The configuration a run cache at ``path`` recorded; ``None`` when there is none or it cannot be read
    (the cache writer then refuses or recovers the file, in one line)."""
    if not path.is_file():
        return None
    try:
        with open_cache(path, expect="run") as reader:
            return dict(reader.config)
    except CacheError:
        return None


def chat_generator(model: LoadedModel, max_new_tokens: int) -> Callable[[list[dict[str, str]]], str]:
    """``messages -> reply`` with the model's chat template and greedy decoding."""

    def generate(messages: list[dict[str, str]]) -> str:
        ids = model.tokenizer(chat_prompt(model, messages), add_special_tokens=False)["input_ids"]
        return generate_greedy(model, [ids], max_new_tokens).texts[0]

    return generate


class ExperimentRunner:
    """Runs a configured self-correction experiment into a cache (``run_dir/cache.h5``).

    ``world`` is this process's place in a data-parallel run: it runs only its share of ``items``
    (:meth:`World.share`) while the cache is laid out for all of them, so that every rank's shard
    has the same spec (``join_shards`` requires it).
    """

    def __init__(
        self, config: RunConfig, model: LoadedModel, items: Sequence[Item], *, world: World = SINGLE_PROCESS
    ) -> None:
        self.config = config
        self.model = model
        settings = config.protocol
        if settings.weak_evidence != "none":
            evidence = WeakEvidence(points_to=settings.weak_evidence)
            items = [add_weak_evidence(item, evidence) for item in items]
        self.items = list(items)
        self.share = world.share(self.items)
        self.conditions = settings.conditions()
        self.protocol = settings.transcript_rules(self.items)
        arch = model.architecture
        check_image_run(config, arch.vision_type, self.items)
        self.critic = build_critic(settings, model) if any(settings.feedback) else None
        self.sites = parse_sites(list(config.capture.sites), arch.n_layers, arch.n_heads, vision_type=arch.vision_type)
        if any(site.kind is SiteKind.PATTERN for site in self.sites):
            raise ConfigError("[capture] attention patterns are not cached; capture them with workbench.hooks.capture")
        if any(site.kind is SiteKind.VISION_OUT for site in self.sites):
            check_vision_positions(config.capture.positions)
        self.prompt_limit = settings.max_prompt_tokens or arch.max_positions
        self.scorer: ToxicityScorer | None = (
            build_toxicity_scorer(config.toxicity) if any(item.task == "realtoxicity" for item in self.items) else None
        )
        self.measures = MeasureContext(model, settings, config.seed, config.capture.batch_size)
        self.semantic_uncertainty = SemanticUncertainty(self.measures)
        self.engine = build_engine(model, config.generation, config.capture.batch_size)

    @property
    def total_records(self) -> int:
        """Answer rounds this runner writes: its share's items x the sum of each condition's rounds."""
        return len(self.share) * sum(condition.rounds for condition in self.conditions)

    @property
    def run_records(self) -> int:
        """Answer rounds of the whole run (every rank's share): what the cache's chunks are sized for."""
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
        return CacheSpec(
            datasets=tuple(datasets),
            record_columns=RECORD_COLUMNS,
            dtype=self.config.cache.dtype,
            compression=None if self.config.cache.compression == "none" else self.config.cache.compression,
            chunk_bytes=chunk_bytes_for(datasets, self.config.cache.dtype, self.run_records),
        )

    def cache_metadata(self, recorded_config: dict[str, Any] | None = None) -> CacheMetadata:
        """What the cache records about this run.

        ``recorded_config``: the configuration an existing cache recorded. It is kept when this run
        resumes it (:meth:`RunConfig.resumes`: a cache written before keys were added, which take their
        defaults), so that its ``config_sha256`` still matches; otherwise the cache records today's.
        """
        described = self.model.describe()
        resumed = recorded_config is not None and self.config.resumes(recorded_config)
        return CacheMetadata(
            model_id=self.model.model_id,
            weights_hash=self.model.weights_hash,
            tokenizer=str(described["tokenizer_name_or_path"]),
            config=recorded_config if resumed and recorded_config is not None else self.config.to_dict(),
            seed=self.config.seed,
            generation_engine=self.engine.describe(),
        )

    def run(
        self,
        cache_path: Path,
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        """Run every condition over every item of the share into ``cache_path`` (resuming when it exists).

        Args:
            cache_path: the cache file.
            overwrite: discard an existing cache instead of resuming it.
            progress: called with the number of records done, as they are committed.
            on_open: called once the cache writer holds the cache (lock taken, configuration
                accepted), before the first record: the run folder's ``config.toml`` is written there.

        The generation engine is closed when the run ends, however it ends (a vLLM server stops).
        """
        with (
            closing(self.engine),
            CacheWriter.open(
                cache_path,
                self.cache_spec(),
                self.cache_metadata(None if overwrite else recorded_run_config(cache_path)),
                queue_size=self.config.cache.queue_size,
                overwrite=overwrite,
            ) as writer,
        ):
            if on_open is not None:
                on_open()
            done = writer.committed_keys()
            if progress is not None:
                progress(len(done))
            for condition in self.conditions:
                for batch in _batches(self.share, self.config.capture.batch_size):
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
        images = self._images(items)
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
            row_images = [images.get(item.item_id) for item in active]
            texts = [self._prompt_text(prompt, image is not None) for prompt, image in zip(prompts, row_images)]
            model_texts = [
                text if image is None else vision_processor(self.model).expand(text, image)
                for text, image in zip(texts, row_images)
            ]
            faithful = condition.history_mode == "faithful"
            prompt_ids = [self.model.tokenizer(text, add_special_tokens=faithful)["input_ids"] for text in model_texts]
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
                answered = self._answer(active, model_texts, prompt_ids, faithful, budget, caches, row_images)
                texts_out = answered.texts
            elif images:  # only the hf engine takes images (check_image_run): its own generation, with the pixels
                texts_out = generate_greedy(
                    self.model, prompt_ids, budget, self.config.capture.batch_size, images=row_images
                ).texts
            else:
                texts_out = self.engine.generate(prompt_ids, budget).texts
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

    def _images(self, items: Sequence[Item]) -> dict[str, ImageInputs]:
        """Each image item's image as the model reads it (item id -> inputs); empty for text items."""
        encoded = {}
        for item in items:
            image = item_image(item)
            if image is not None:
                encoded[item.item_id] = vision_processor(self.model).encode(image)
        return encoded

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
        images: Sequence[ImageInputs | None],
    ) -> AnsweredBatch:
        """Generate, score options and capture for one answer turn of a batch of dialogues.

        ``prompt_ids`` are ``texts`` tokenized with special tokens when ``faithful`` (the raw
        transcript carries no chat markers); options are scored in the context of ``texts``.
        ``images``: per dialogue its image (whose tokens ``texts`` holds) or ``None``.

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
            remote=self.config.model.remote,
            previous=[caches.get(item.item_id) for item in items] if reuse else None,
            keep_caches=reuse,
            prompt_texts=texts,
            add_special_tokens=faithful,
            engine=self.engine,
            images=images,
        )
        caches.update(zip((item.item_id for item in items), answered.caches))
        return answered

    def _prompt_text(self, prompt: RoundPrompt, with_image: bool) -> str:
        """The prompt's text; an image item's first user turn holds the image placeholder (clean history only)."""
        if prompt.text is not None:
            return prompt.text
        assert prompt.messages is not None
        if with_image:
            return image_chat_prompt(self.model, prompt.messages, prompt.assistant_prefix)
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
        uncertainty, uncertainty_equivalence = self.semantic_uncertainty(
            items, texts, prompt_ids, keys, add_special_tokens=condition.history_mode == "faithful"
        )
        distinguish = self_distinguish(self.measures, condition, items, dialogues)
        answers, answer_ids = answered.texts, answered.answer_ids
        probabilities = {index: option_probabilities(nll) for index, nll in enumerate(answered.option_nll) if len(nll)}
        toxicity = answer_toxicity(self.scorer, items, answers, toxicity_history)
        pairwise = (
            pairwise_distinguish(
                self.measures, condition, items, dialogues, [prompt.turn.round for prompt in prompts], toxicity_history
            )
            if self.scorer is not None
            else [float("nan")] * len(items)
        )
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
                    "toxicity": float(toxicity.values[index]),
                    "toxicity_scorer": toxicity.scorer if index in toxicity.scored else "",
                    "semantic_uncertainty": float(uncertainty[index]),
                    "uncertainty_equivalence": uncertainty_equivalence[index],
                    "distinguish_predicted": distinguish[index][0],
                    "distinguish_gold": distinguish[index][1],
                    "pairwise_distinguish_accuracy": pairwise[index],
                }
            )
        activations = {(name, kind.value): value.numpy() for (kind, name), value in answered.activations.items()}
        return records, activations


def _batches(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
