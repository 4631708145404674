"""The probe stage of a run: concept set -> concept cache -> per-layer probes -> morality tables.

Reads ``run_dir/cache.h5`` and writes ``run_dir/probes/`` (RUN_FOLDER.md): ``concepts.h5``, one
``<site>.<position>.L<layer>.<kind>.safetensors`` + ``.json`` per probed layer,
``layer_scores.csv``, ``morality.csv``, ``concept_uncertainty.csv``, ``interactions.csv``,
``steering.csv`` (when steering is on) and ``summary.json``. The run's model is loaded only when
the concept set is not cached yet or steering is asked for, and only through the loader the caller
hands in (built from the user's own configuration): a cache is data, and nothing recorded in it
chooses what code or weights are loaded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from activations_cache import CacheMetadata, CacheReader, config_sha256, open_cache
from probes.apply import (
    ConceptStates,
    InputStates,
    RunRecords,
    band_cosine_rows,
    concept_activation,
    concept_activation_rows,
    concept_uncertainty_correlations,
    concept_uncertainty_rows,
    final_probe_rows,
    interaction_rows,
    probe_morality_rows,
    read_probes,
)
from probes.cache_reading import (
    BAND_SITES,
    DEFAULT_SITE,
    FINAL_STATE_SITE,
    ProbeSite,
    band_from_fraction,
    band_layers,
    model_depth,
    read_layers,
    resolve_probe_sites,
    stored_site,
)
from probes.concept_capture import (
    ConceptActivations,
    capture_concept_set,
    concept_cache_complete,
    concept_cache_matches,
    read_concept_activations,
)
from probes.concept_sets import (
    ConceptExample,
    concept_set_plan,
    configured_concept_examples,
    item_concept_ids,
    item_statement_examples,
    limit_concept_examples,
)
from probes.config import ProbeConfig
from probes.errors import ProbeConfigError, ProbeInputError
from probes.estimators import CCSProbe, LinearProbe, LogisticProbe, MeanDifferenceProbe
from probes.evaluation import LayerEvaluation, evaluate_layers
from probes.layerwise import LayerwiseProbe
from probes.persistence import ProbeProvenance, SavedProbe, load_probe, save_probe
from probes.question_blocks import QuestionBlocks, question_blocks
from probes.regressions import regression_summary
from probes.steering import round_zero_prompts, steering_rows
from probes.streamed_solvers import StreamingSettings, class_mean
from probes.streaming import StreamedActivations
from probes.tables import layer_score_rows, write_table
from probes.training_sets import TrainingSet, concept_rows, streamed_training_set, training_set, two_class_labels
from workbench.models.loading import LoadedModel
from workbench.run_folder import RunFolder
from workbench.tasks.items import Item
from workbench.tasks.registry import TaskConfig, load_configured_task


def estimator_for(config: ProbeConfig) -> LinearProbe:
    """The unfitted single-layer probe of ``config.kind``."""
    if config.kind == "logistic":
        return LogisticProbe(C=config.C)
    if config.kind == "mean_difference":
        return MeanDifferenceProbe()
    return CCSProbe(random_state=config.seed)


ModelLoader = Callable[[str], LoadedModel]
"""Loads the run's model from the user's configuration; called with the run cache's weights hash,
which it should check before loading where it can (``load_model(expected_weights_hash=...)``)."""

BACKENDS = ("hf", "transformer_lens", "nnsight")


@dataclass
class ModelSource:
    """The run's model, loaded on first use (concept capture or steering), and checked.

    Attributes:
        weights_hash: the run cache's weights hash; a loaded model must match it.
        loader: how to load the model (the user's configuration), or ``None``.
        model: the model once loaded (or as handed in).
    """

    weights_hash: str
    loader: ModelLoader | None = None
    model: LoadedModel | None = None

    def get(self) -> LoadedModel:
        """The model; calls ``loader`` on first use.

        Raises:
            ProbeInputError: no model and no loader, or the model's weights are not those that
                wrote the run cache.
        """
        if self.model is None:
            if self.loader is None:
                raise ProbeInputError(
                    "the probe stage needs the run's model (concept capture or steering) but none was given; "
                    "run `workbench probe RUN`, which loads it from the run folder's config.toml"
                )
            self.model = self.loader(self.weights_hash)
        if self.model.weights_hash != self.weights_hash:
            raise ProbeInputError(
                f"model {self.model.model_id} has weights {self.model.weights_hash} but the run cache was "
                f"written by weights {self.weights_hash}; pass the run's model"
            )
        return self.model


def run_items(run_config: dict[str, Any]) -> list[Item]:
    """The run's task items, from the ``task`` table recorded in its cache."""
    return load_configured_task(TaskConfig.from_dict(run_config["task"]))


def run_task_name(run_config: dict[str, Any]) -> str | None:
    """The ``[task] name`` recorded in the run cache, ``None`` when it records none."""
    task = run_config.get("task")
    return str(task["name"]) if isinstance(task, dict) and "name" in task else None


def run_is_faithful(run_config: dict[str, Any]) -> bool:
    """Whether the run tokenized raw transcripts with special tokens (``history_mode = "faithful"``)."""
    protocol = run_config.get("protocol")
    return isinstance(protocol, dict) and protocol.get("history_mode") == "faithful"


def requested_band(reader: CacheReader, config: ProbeConfig) -> tuple[tuple[int, int], int | None]:
    """The inclusive layer band asked for, and the model depth when it came from ``layer_band_fraction``."""
    if config.layer_band_fraction is None:
        return config.layer_band, None
    depth = model_depth(reader)
    return band_from_fraction(config.layer_band_fraction, depth), depth


def concept_sites(reader: CacheReader, sites: list[ProbeSite], config: ProbeConfig) -> list[ProbeSite]:
    """What the concept cache stores: the probe sites; the final norm's output when the run caches
    it (the papers' last-layer state); hook_attn_out / hook_mlp_out at the band layers when the run
    caches them and ``band_cosine`` is asked for."""
    wanted = list(sites)
    for dataset in reader.spec.datasets:
        if dataset.position != config.position or dataset.site in {site.site for site in wanted}:
            continue
        if dataset.site == FINAL_STATE_SITE:
            wanted.append(ProbeSite(dataset.site, dataset.position, dataset.layers, dataset.shape))
        elif dataset.site in BAND_SITES and "band_cosine" in config.measures:
            band = band_layers(requested_band(reader, config)[0], dataset.layers)
            wanted.append(ProbeSite(dataset.site, dataset.position, band, dataset.shape))
    return wanted


def concept_metadata(model: LoadedModel, reader: CacheReader, config: ProbeConfig, concept_set: str) -> CacheMetadata:
    """Provenance of the concept cache: the model and what chose the statements."""
    return CacheMetadata(
        model_id=model.model_id,
        weights_hash=model.weights_hash,
        tokenizer=str(model.describe()["tokenizer_name_or_path"]),
        config=concept_cache_config(reader, config, concept_set),
        seed=config.seed,
    )


def concept_cache_config(reader: CacheReader, config: ProbeConfig, concept_set: str) -> dict[str, Any]:
    """The configuration recorded in the concept cache (only what decides its contents).

    ``concept_set`` is the resolved set (``auto`` stands for another); the statement form and the
    input representation are recorded when they are not the defaults, so that a concept cache
    written before those options existed still matches a default configuration.
    """
    recorded: dict[str, Any] = {
        "concept_set": concept_set,
        "max_concept_examples": config.max_concept_examples,
        "seed": config.seed,
        "run_cache_config_sha256": reader.metadata["config_sha256"],
    }
    if config.concept_statement != "workbench":
        recorded["concept_statement"] = config.concept_statement
    if config.concept_input != "round_prompt":
        recorded["concept_input"] = config.concept_input
    return recorded


def concept_states(
    mean: np.ndarray, own: ConceptActivations | None, site: ProbeSite, per_item_ids: dict[str, str]
) -> ConceptStates:
    """The concept states of ``site``: ``mean`` [layers, width], the fitting set's mean concept-side
    state per layer, and each run item's own statement state (``own``: the run items' statements,
    ``per_item_ids``: item -> its statement's id)."""
    row_of = {str(example_id): row for row, example_id in enumerate(own.example_ids)} if own is not None else {}
    return ConceptStates(
        site=site.site,
        position=site.position,
        layers=site.layers,
        mean=mean,
        per_item={item: own.activations[row_of[example]] for item, example in per_item_ids.items() if own is not None},
    )


def json_ready(value: Any) -> Any:
    """``value`` with NaN / inf floats replaced by ``None`` (strict JSON)."""
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def best_layer(evaluation: LayerEvaluation, layers: tuple[int, ...]) -> int:
    """The layer with the highest probe accuracy (the lowest layer on ties)."""
    return max(layers, key=lambda layer: (evaluation.score(layer, "probe", "accuracy").estimate, -layer))


def run_probe_stage(
    run_dir: Path,
    config: ProbeConfig,
    model: LoadedModel | None = None,
    *,
    loader: ModelLoader | None = None,
    backend: str | None = None,
) -> list[Path]:
    """Fit concept probes per layer on a run and write ``run_dir/probes/``; returns the written files.

    Args:
        run_dir: the run folder (holding ``cache.h5``).
        config: the ``[probe]`` table.
        model: the run's model when already loaded.
        loader: otherwise, how to load it (from the user's configuration), called only if the
            concept set must be captured or steering is on.
        backend: hook backend of the concept capture; ``None``: the one recorded in the run cache
            (one of ``hf``, ``transformer_lens``, ``nnsight``).

    Raises:
        ProbeInputError and subclasses: missing cache, site or layer, one-class concept set,
            NaN activations, probes of another width.
    """
    run = RunFolder(Path(run_dir))
    cache_path = run.cache
    if not cache_path.is_file():
        raise ProbeInputError(f"{cache_path} does not exist; run `workbench run CONFIG` first")
    out_dir = run.probes
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with open_cache(cache_path, expect="run") as reader:
        source = ModelSource(str(reader.metadata["weights_hash"]), loader, model)
        backend = backend or recorded_backend(reader)
        sites = resolve_probe_sites(reader, config.sites, config.position)
        concept_set, per_item = concept_set_plan(config.concept_set, run_task_name(reader.config))
        items = run_items(reader.config) if per_item else []
        examples = limit_concept_examples(
            configured_concept_examples(concept_set, items, config.concept_statement),
            config.max_concept_examples,
            config.seed,
        )
        own = item_statement_examples(items, config.concept_statement)
        per_item_ids = item_concept_ids(items, own, config.concept_statement)
        records = RunRecords.from_cache(reader)
        blocks = (
            question_blocks(list(records.prompt), list(records.record_key), run_is_faithful(reader.config))
            if config.concept_input == "question_block"
            else None
        )
        stored = concept_sites(reader, sites, config)
        concepts_path = ensure_concept_cache(
            run.concept_cache, reader, source, examples + own, stored, config, concept_set, backend, blocks
        )
        written.append(concepts_path)

        evaluations, probes, states, streamed = fit_probes(
            concepts_path, examples, own, sites, stored, per_item_ids, config, out_dir
        )
        inputs = question_block_states(concepts_path, blocks, stored) if blocks is not None else {}
        written += [path for probe in probes for path in (probe, probe.with_suffix(".json"))]
        layer_rows = [
            row for site in sites for row in layer_score_rows(evaluations[site.site], site.site, site.position)
        ]
        written.append(write_table(run, "layer_scores", layer_rows))

        saved = [load_probe(path) for path in probes]
        summary, tables = apply_to_run(reader, records, saved, states, sites, config, inputs)
        for name, rows in tables.items():
            written.append(write_table(run, name, rows))

        if config.steering:
            primary = sites[0]
            layers = config.steering_layers or (best_layer(evaluations[primary.site], primary.layers),)
            rows = steer(reader, source.get(), saved, primary, layers, config)
            written.append(write_table(run, "steering", rows))
            summary["steering"] = {"site": primary.site, "layers": list(layers), "alphas": list(config.steering_alphas)}

        summary.update(
            config=config.to_dict(),
            run_cache=str(cache_path),
            concept_cache=str(concepts_path),
            concept_set={
                "name": config.concept_set,
                "fitted_on": concept_set,
                "statement": config.concept_statement,
                "n_statements": len(examples),
                "n_groups": len({example.group_id for example in examples}),
                "items_with_own_statement": len(per_item_ids),
            },
            probe_sites=[
                {
                    "site": s.site,
                    "position": s.position,
                    "layers": list(s.layers),
                    "fit": "streamed" if streamed[s.site] else "in-memory",
                }
                for s in sites
            ],
        )
        summary_path = run.probe_summary
        summary_path.write_text(json.dumps(json_ready(summary), indent=2) + "\n", encoding="utf-8")
        written.append(summary_path)
    return written


def recorded_backend(reader: CacheReader) -> str:
    """The hook backend recorded in the run cache, refused unless it is one this workbench has."""
    model_table = reader.config.get("model", {})
    backend = model_table.get("backend", "hf") if isinstance(model_table, dict) else "hf"
    if backend not in BACKENDS:
        raise ProbeInputError(
            f"{reader.path} records hook backend {backend!r}, which is not one of {', '.join(BACKENDS)}; "
            "the cache is damaged or foreign"
        )
    return str(backend)


def ensure_concept_cache(
    path: Path,
    reader: CacheReader,
    source: ModelSource,
    examples: list[ConceptExample],
    sites: list[ProbeSite],
    config: ProbeConfig,
    concept_set: str,
    backend: str = "hf",
    blocks: QuestionBlocks | None = None,
) -> Path:
    """Capture the concept set (and the run's question blocks, when given) unless ``path`` already
    holds them (then no model is loaded)."""
    expected = config_sha256(concept_cache_config(reader, config, concept_set))
    wanted = examples + (blocks.examples if blocks is not None else [])
    if concept_cache_complete(path, wanted, sites, source.weights_hash, expected):
        return path
    model = source.get()
    stale = path.is_file() and not concept_cache_matches(path, sites, source.weights_hash, expected)
    return capture_concept_set(
        model,
        wanted,
        path,
        sites,
        concept_metadata(model, reader, config, concept_set),
        batch_size=config.batch_size,
        backend=backend,
        overwrite=stale,
        templated=blocks.templated if blocks is not None else frozenset(),
    )


def question_block_states(
    concepts_path: Path, blocks: QuestionBlocks, sites: list[ProbeSite]
) -> dict[str, InputStates]:
    """Per stored site, each run record's question-block state ``[records, layers, width]``."""
    with open_cache(concepts_path, expect="concept") as concepts:
        return {
            site.site: InputStates(
                site.site,
                site.layers,
                read_concept_activations(
                    concepts, site.site, site.position, site.layers, blocks.example_ids
                ).activations[blocks.rows],
            )
            for site in sites
        }


def streaming_settings(config: ProbeConfig) -> StreamingSettings:
    """The streamed fits' settings from ``[probe]`` (the record sample and mini-batch order use ``seed``)."""
    return StreamingSettings(
        memory_budget_mb=config.memory_budget_mb,
        epochs=config.streaming_epochs,
        batch_size=config.streaming_batch_size,
        seed=config.seed,
    )


def fitting_set(
    concepts: CacheReader, site: ProbeSite, ids: list[str], config: ProbeConfig, probed: bool
) -> tuple[TrainingSet | None, np.ndarray, bool]:
    """The statements ``ids`` at ``site``: their training set (when ``probed``), their mean concept-side
    state [layers, width], and whether they stream (:meth:`ProbeConfig.streams`) rather than being read whole."""
    if config.streams(len(ids) * len(site.layers) * site.width * 4):
        view = StreamedActivations(concepts, site, rows=concept_rows(concepts, ids))
        labels = two_class_labels(concepts.records["label"][view.rows])
        data = streamed_training_set(concepts, site, ids, config.kind) if probed else None
        return data, class_mean(view, labels, streaming_settings(config)), True
    activations = read_concept_activations(concepts, site.site, site.position, site.layers, ids)
    data = training_set(activations, config.kind) if probed else None
    return data, activations.activations[activations.labels == 1].mean(axis=0), False


def fit_probes(
    concepts_path: Path,
    examples: list[ConceptExample],
    own: list[ConceptExample],
    sites: list[ProbeSite],
    stored: list[ProbeSite],
    per_item_ids: dict[str, str],
    config: ProbeConfig,
    out_dir: Path,
) -> tuple[dict[str, LayerEvaluation], list[Path], list[ConceptStates], dict[str, bool]]:
    """Score and fit one probe per layer of every probe site on ``examples``; save them; return concept states.

    A site's statements are read whole or streamed as ``config.memory`` decides
    (:meth:`ProbeConfig.streams`); either way the same functions score and fit them.

    Returns:
        per site its evaluation, the saved probe files, the concept states of every stored site
        (the mean over ``examples``' concept side; ``own``, the run items' statements, per item),
        and per probed site whether it was streamed.
    """
    estimator = estimator_for(config)
    settings = streaming_settings(config)
    ids = [example.example_id for example in examples]
    own_ids = [example.example_id for example in own]
    evaluations, paths, states, streamed = {}, [], [], {}
    with open_cache(concepts_path, expect="concept") as concepts:
        for site in stored:
            data, mean, streams = fitting_set(concepts, site, ids, config, site in sites)
            own_activations = (
                read_concept_activations(concepts, site.site, site.position, site.layers, own_ids) if own else None
            )
            states.append(concept_states(mean, own_activations, site, per_item_ids))
            if data is None:
                continue
            streamed[site.site] = streams
            evaluation = evaluate_layers(
                data.features,
                data.labels,
                data.groups,
                estimator,
                layers=site.layers,
                n_folds=config.n_folds,
                n_repeats=config.n_repeats,
                seed=config.seed,
                streaming=settings,
            )
            evaluations[site.site] = evaluation
            fitted = LayerwiseProbe(estimator, settings).fit(data.features, data.labels)
            for index, layer in enumerate(site.layers):
                provenance = ProbeProvenance(
                    kind=config.kind,
                    site=site.site,
                    position=site.position,
                    layer=layer,
                    cache_path=str(concepts_path),
                    cache_config_hash=str(concepts.metadata["config_sha256"]),
                    probe_config=config.to_dict(),
                    hyperparameters=estimator.get_params(),
                    classes=[int(label) for label in fitted.classes_],
                    scores={
                        "accuracy": evaluation.score(layer, "probe", "accuracy").estimate,
                        "auc": evaluation.score(layer, "probe", "auc").estimate,
                        "selectivity_shuffled_labels": evaluation.selectivity[layer, "shuffled_labels"].estimate,
                        "selectivity_random_direction": evaluation.selectivity[layer, "random_direction"].estimate,
                    },
                )
                pair_means = fitted.pair_means_[index] if config.kind == "ccs" else None
                paths.append(
                    save_probe(out_dir, fitted.coef_[index], float(fitted.intercept_[index]), provenance, pair_means)
                )
    return evaluations, paths, states, streamed


def apply_to_run(
    reader: CacheReader,
    records: RunRecords,
    probes: list[SavedProbe],
    states: list[ConceptStates],
    sites: list[ProbeSite],
    config: ProbeConfig,
    inputs: dict[str, InputStates] | None = None,
) -> tuple[dict[str, Any], dict[str, list[dict[str, object]]]]:
    """The summary entries, and the rows of the morality, concept-uncertainty and interaction tables of the run
    (by their names in :data:`~workbench.run_folder.RUN_TABLES`).

    The concept activation correlated with uncertainty is the papers' last-layer state: the final
    norm's output when the run cached it, else the last probed layer of the primary probe site.
    ``inputs`` (site -> question-block states) replace the cached record states in ``concept_activation``.
    """
    inputs = inputs or {}
    readings = read_probes(reader, probes)
    morality = probe_morality_rows(records, readings, config.measures, config.seed)
    primary = next((site for site in sites if site.site == DEFAULT_SITE), sites[0])
    primary_states = next(state for state in states if state.site == primary.site)
    final_states = next((state for state in states if state.site == FINAL_STATE_SITE), None)
    concept = final_states or primary_states
    concept_layer = max(concept.layers)
    if "concept_activation" in config.measures:
        activation = np.empty(0)
        for state in [primary_states] if concept is primary_states else [primary_states, concept]:
            concept_rows, by_layer = concept_activation_rows(
                reader, records, state, config.seed, inputs.get(state.site)
            )
            morality += concept_rows
            if state is concept:
                activation = by_layer[concept_layer]
    else:  # only the summary's layer is needed
        activation = concept_activation(reader, records, concept, concept_layer, inputs.get(concept.site))
    requested, depth = requested_band(reader, config)
    band = primary.layers if primary.site == FINAL_STATE_SITE else band_layers(requested, primary.layers)
    summary: dict[str, Any] = {
        "band": {
            "first": band[0],
            "last": band[-1],
            "layers": list(band),
            "requested": list(requested),
            "fraction": list(config.layer_band_fraction) if config.layer_band_fraction is not None else None,
            "depth": depth,
        },
        "concept_activation": {
            "site": concept.site,
            "layer": concept_layer,
            "input": config.concept_input,
            "statement": config.concept_statement,
            "uncertainty": records.uncertainty_measure,
        },
        "concept_uncertainty": concept_uncertainty_correlations(records, activation),
        "regressions": regression_summary(
            records,
            activation,
            read_layers(reader, stored_site(reader, concept.site, concept.position), [concept_layer])[:, 0],
            config.seed,
        ),
        "band_measures": [],
    }
    for state in states:
        if state.site in BAND_SITES and "band_cosine" in config.measures:
            # a probed band site holds every probed layer, one added for the band only the band's
            site_band = band_layers(requested, state.layers)
            morality += band_cosine_rows(reader, records, state, site_band, config.seed)
            summary["band_measures"].append(
                {"site": state.site, "first": site_band[0], "last": site_band[-1], "layers": list(site_band)}
            )
    final_probe = next((probe for probe in probes if probe.provenance.site == FINAL_STATE_SITE), None)
    if final_probe is not None and "final_probe_cosine" in config.measures:
        for dataset in reader.spec.datasets:
            if dataset.site in BAND_SITES and dataset.position == final_probe.provenance.position:
                site_band = band_layers(requested, dataset.layers)
                morality += final_probe_rows(reader, records, final_probe, dataset.site, site_band, config.seed)
                summary["band_measures"].append(
                    {
                        "site": dataset.site,
                        "first": site_band[0],
                        "last": site_band[-1],
                        "layers": list(site_band),
                        "probe": f"{FINAL_STATE_SITE}@{final_probe.provenance.position}",
                    }
                )
    level = np.mean([readings.probability[primary.site, layer] for layer in band], axis=0)
    summary["morality_level"] = {"measure": "probe_probability", "site": primary.site, "layers": list(band)}
    tables = {
        "morality": morality,
        "concept_uncertainty": concept_uncertainty_rows(records, activation),
        "probe_interactions": interaction_rows(records, level, "morality_probe_probability", config.seed),
    }
    return summary, tables


def steer(
    reader: CacheReader,
    model: LoadedModel,
    probes: list[SavedProbe],
    site: ProbeSite,
    layers: tuple[int, ...],
    config: ProbeConfig,
) -> list[dict[str, object]]:
    """Steering rows at each of ``layers`` of ``site`` along that layer's probe direction."""
    by_layer = {p.provenance.layer: p for p in probes if p.provenance.site == site.site}
    missing = sorted(set(layers) - set(by_layer))
    if missing:
        raise ProbeConfigError(
            f"[probe] steering_layers {missing} have no probe at {site.site}; probed layers: {list(site.layers)}"
        )
    prompts = round_zero_prompts(reader, config.max_steering_prompts, config.seed)
    return [
        row
        for layer in layers
        for row in steering_rows(
            model,
            prompts,
            site.site,
            layer,
            by_layer[layer].coef,
            config.steering_alphas,
            seed=config.seed,
            batch_size=config.batch_size,
        )
    ]
