"""Fitted probes and concept states applied to a run's cache: morality levels per layer x round x condition.

Measures (rows of ``morality.csv``; RUN_FOLDER.md):
- ``probe_probability``: the probe's probability of the concept class (biased / immoral / toxic);
- ``cosine``: cosine of the record's state to the probe direction;
- ``concept_activation``: cosine of the record's state to the concept statement's state at the
  same site and layer (docs/protocols.md §2.4 at the last layer, here at every probed layer);
- ``band_cosine_attn_out`` / ``band_cosine_mlp_out``: the papers' measure (docs/protocols.md §2.5),
  cosine of ``hook_attn_out`` / ``hook_mlp_out`` to the concept statement's same-site state,
  averaged over the layer band (``layer`` = the band's first layer);
- ``final_probe_cosine_<attn_out|mlp_out>`` per layer and ``band_final_probe_cosine_<...>`` over the
  band: papers 2/3's toxicity level, the cosine of those sites with one probe's direction, the probe
  fitted at ``ln_final.hook_out`` (a toxicity probe when the concept set is a toxicity file).
The concept state of a record is its own item's biased statement when the concept set was built
from the run's items, else the mean state of the concept-side statements. The record's state is
its cached state, or (``[probe] concept_input = "question_block"``) the state of paper 4's question
block (``InputStates``). Values are averaged per item first; intervals are 95% bootstraps over items.

Every reading of the run cache streams it (``probes.streaming.StreamedActivations.map_layers``):
one pass per site over the layers a measure needs, a chunk-row at a time, whatever the cache's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from activations_cache import CacheReader
from probes.cache_reading import stored_site
from probes.errors import CacheSiteError
from probes.metrics import bootstrap_mean, estimate_cells
from probes.persistence import SavedProbe, check_probe_width
from probes.streaming import RecordMeasure, StreamedActivations
from workbench.experiment.records import decode_records
from workbench.metrics.options import option_entropy
from workbench.metrics.statistics import Estimate
from workbench.metrics.tables import design_effect_rows

UNCERTAINTY_MEASURES = ("semantic_uncertainty", "option_entropy")
"""What the ``uncertainty`` of a run's records is: paper 4's recorded sample-based uncertainty
(docs/protocols.md §2.2) when the run recorded it, else the entropy of the option probabilities."""


@dataclass(frozen=True)
class RunRecords:
    """The record columns the measures need, one entry per cache record.

    Attributes:
        item_id, condition: [n] str; round: [n] int.
        uncertainty: [n] in nats: the recorded ``semantic_uncertainty`` when any record of the run
            has one, else the option entropy; NaN where the record has none.
        uncertainty_measure: which of :data:`UNCERTAINTY_MEASURES` ``uncertainty`` holds.
        record_key, prompt: [n] each record's key and round prompt.
        correct: [n] 1.0 when the record's answer is the gold option, 0.0 when it is another,
            NaN when it has no parsed answer or the item no gold.
    """

    item_id: np.ndarray
    condition: np.ndarray
    round: np.ndarray
    uncertainty: np.ndarray
    uncertainty_measure: str
    record_key: np.ndarray
    prompt: np.ndarray
    correct: np.ndarray

    @classmethod
    def from_cache(cls, reader: CacheReader) -> RunRecords:
        """The records of ``reader`` (:func:`workbench.experiment.records.decode_records`)."""
        records = decode_records(reader.records)
        semantic = np.array(
            [np.nan if r.semantic_uncertainty is None else r.semantic_uncertainty for r in records], dtype=float
        )
        entropy = np.array(
            [np.nan if r.option_probs is None else float(option_entropy(np.array(r.option_probs))) for r in records],
            dtype=float,
        )
        measured = bool(np.isfinite(semantic).any())
        return cls(
            item_id=np.array([record.item_id for record in records], dtype=object),
            condition=np.array([record.condition for record in records], dtype=object),
            round=np.array([record.round for record in records], dtype=int),
            uncertainty=semantic if measured else entropy,
            uncertainty_measure=UNCERTAINTY_MEASURES[0] if measured else UNCERTAINTY_MEASURES[1],
            record_key=np.array([record.record_key for record in records], dtype=object),
            prompt=np.array([record.prompt for record in records], dtype=object),
            correct=np.array(
                [np.nan if r.predicted is None or r.gold is None else float(r.predicted == r.gold) for r in records],
                dtype=float,
            ),
        )

    def cells(self) -> list[tuple[str, int]]:
        """Every (condition, round) present, sorted."""
        return sorted({(str(c), int(r)) for c, r in zip(self.condition, self.round)})


@dataclass(frozen=True)
class ConceptStates:
    """The concept statement's state at one site, per layer.

    Attributes:
        site: layer-free site name; position: cached token position.
        layers: model layer of each row of ``mean`` and of each per-item array.
        mean: [layers, width] mean state of the concept-side statements.
        per_item: run item id -> [layers, width] the state of that item's own biased statement.
    """

    site: str
    position: str
    layers: tuple[int, ...]
    mean: np.ndarray
    per_item: dict[str, np.ndarray]

    def for_records(self, item_ids: Sequence[str] | np.ndarray, layer: int) -> np.ndarray:
        """[n, width] concept state at ``layer`` for each of ``item_ids`` ([n] record items; mean when it has none)."""
        column = self.layers.index(layer)
        return np.stack([self.per_item.get(str(item), self.mean)[column] for item in item_ids])


def cosine(states: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Row-wise cosine [n] of states [n, w] with directions [w] or [n, w] (0 for a zero vector)."""
    directions = np.broadcast_to(directions, states.shape).astype(np.float64)
    states = states.astype(np.float64)
    norms = np.linalg.norm(states, axis=1) * np.linalg.norm(directions, axis=1)
    dots = np.einsum("nw,nw->n", states, directions)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def cell_estimate(records: RunRecords, values: np.ndarray, condition: str, round_index: int, seed: int) -> Estimate:
    """Mean over items (each item's records averaged) of ``values`` [n] in one cell, with a bootstrap CI."""
    keep = (records.condition == condition) & (records.round == round_index) & np.isfinite(values)
    unique, first, inverse = np.unique(records.item_id[keep], return_index=True, return_inverse=True)
    sums = np.bincount(inverse, weights=values[keep], minlength=len(unique))
    per_item = sums / np.bincount(inverse, minlength=len(unique))
    return bootstrap_mean(per_item[np.argsort(first)], seed=seed)  # items in order of first record


def morality_row(
    condition: str, round_index: int, site: str, layer: int, measure: str, estimate: Estimate
) -> dict[str, object]:
    """One ``morality.csv`` row (empty interval bounds when not computable)."""
    return {
        "condition": condition,
        "round": round_index,
        "site": site,
        "layer": layer,
        "measure": measure,
        **estimate_cells(estimate),
        "n": estimate.n,
    }


@dataclass(frozen=True)
class ProbeReadings:
    """Per-record readings of the probes on a run cache.

    Attributes:
        probability: (site, layer) -> [n] concept-class probability.
        cosine: (site, layer) -> [n] cosine to the probe direction.
    """

    probability: dict[tuple[str, int], np.ndarray]
    cosine: dict[tuple[str, int], np.ndarray]


def read_probes(reader: CacheReader, probes: Sequence[SavedProbe]) -> ProbeReadings:
    """Apply every probe to its site and layer of the run cache (one streamed pass per site).

    Raises:
        CacheSiteError: the cache lacks a probe's site, position or layer.
        DimensionMismatchError: a probe fitted on another model's width.
        NonFiniteActivationsError: NaN or inf in the cache.
    """
    by_site: dict[tuple[str, str], list[SavedProbe]] = {}
    for probe in probes:
        by_site.setdefault((probe.provenance.site, probe.provenance.position), []).append(probe)
    probability: dict[tuple[str, int], np.ndarray] = {}
    cosines: dict[tuple[str, int], np.ndarray] = {}
    for (name, position), group in by_site.items():
        site = stored_site(reader, name, position)
        measures: dict[tuple[str, int], tuple[int, RecordMeasure]] = {}
        for probe in group:
            origin = probe.provenance
            if origin.layer not in site.layers:
                raise CacheSiteError(
                    f"{reader.path} stores no layer {origin.layer} of {origin.site}@{origin.position} for the "
                    f"probe fitted there (stored: {list(site.layers)}); apply probes to a cache of the same sites"
                )
            check_probe_width(probe, site.width, str(reader.path))
            measures["probability", origin.layer] = (origin.layer, _probability_of(probe, str(reader.path)))
            measures["cosine", origin.layer] = (origin.layer, _cosine_to(probe.direction))
        layers = sorted({probe.provenance.layer for probe in group})
        values = StreamedActivations(reader, site, layers).map_layers(measures)
        for (measure, layer), per_record in values.items():
            (probability if measure == "probability" else cosines)[name, layer] = per_record
    return ProbeReadings(probability, cosines)


def _probability_of(probe: SavedProbe, source: str) -> RecordMeasure:
    return lambda states, _: probe.probability(states, source)


def _cosine_to(direction: np.ndarray) -> RecordMeasure:
    return lambda states, _: cosine(states, direction)


def probe_morality_rows(
    records: RunRecords, readings: ProbeReadings, measures: Sequence[str], seed: int
) -> list[dict[str, object]]:
    """``probe_probability`` and ``cosine`` rows of ``morality.csv`` (``site`` is layer-free)."""
    sources = {"probe_probability": readings.probability, "cosine": readings.cosine}
    rows = []
    for measure, values_by_layer in sources.items():
        if measure not in measures:
            continue
        for (site, layer), values in sorted(values_by_layer.items()):
            for condition, round_index in records.cells():
                estimate = cell_estimate(records, values, condition, round_index, seed)
                rows.append(morality_row(condition, round_index, site, layer, measure, estimate))
    return rows


@dataclass(frozen=True)
class InputStates:
    """Record states for ``concept_activation`` taken from elsewhere than the run cache.

    Attributes:
        site: layer-free site name; layers: model layer of each column of ``values``.
        values: [n records, layers, width] in record order (paper 4's question-block states).
    """

    site: str
    layers: tuple[int, ...]
    values: np.ndarray


def concept_activations(
    reader: CacheReader,
    records: RunRecords,
    concept: ConceptStates,
    layers: Sequence[int],
    inputs: InputStates | None = None,
) -> dict[int, np.ndarray]:
    """Per layer, [n] cosine of each record's state to its concept state (docs/protocols.md §2.4).

    The record's state is its run-cache state at the concept's site and position (all layers read
    in one streamed pass), or ``inputs`` at that layer when given.

    Raises:
        CacheSiteError: the cache's site is not as wide as the concept states.
    """
    if inputs is not None:
        return {
            layer: cosine(inputs.values[:, inputs.layers.index(layer)], concept.for_records(records.item_id, layer))
            for layer in layers
        }
    site = stored_site(reader, concept.site, concept.position)
    if site.width != concept.mean.shape[1]:
        raise CacheSiteError(
            f"{reader.path}: {concept.site} is {site.width} wide but the concept states are "
            f"{concept.mean.shape[1]} wide (another model?); capture the concept set with this run's model"
        )
    measures = {layer: (layer, _concept_cosine(records, concept, layer)) for layer in layers}
    return StreamedActivations(reader, site, sorted(set(layers))).map_layers(measures)


def _concept_cosine(records: RunRecords, concept: ConceptStates, layer: int) -> RecordMeasure:
    return lambda states, positions: cosine(states, concept.for_records(records.item_id[positions], layer))


def concept_activation(
    reader: CacheReader, records: RunRecords, concept: ConceptStates, layer: int, inputs: InputStates | None = None
) -> np.ndarray:
    """[n] cosine of each record's state to its concept state at ``layer`` (see :func:`concept_activations`)."""
    return concept_activations(reader, records, concept, [layer], inputs)[layer]


def concept_activation_rows(
    reader: CacheReader, records: RunRecords, concept: ConceptStates, seed: int, inputs: InputStates | None = None
) -> tuple[list[dict[str, object]], dict[int, np.ndarray]]:
    """``concept_activation`` rows for every layer of ``concept``, and the per-record values by layer."""
    by_layer = concept_activations(reader, records, concept, concept.layers, inputs)
    rows = [
        morality_row(condition, round_index, concept.site, layer, "concept_activation", estimate)
        for layer in concept.layers
        for condition, round_index in records.cells()
        for estimate in [cell_estimate(records, by_layer[layer], condition, round_index, seed)]
    ]
    return rows, {layer: by_layer[layer] for layer in concept.layers}


def band_cosine(reader: CacheReader, records: RunRecords, concept: ConceptStates, band: Sequence[int]) -> np.ndarray:
    """[n] mean over ``band`` layers of the cosine to the concept state (docs/protocols.md §2.5)."""
    by_layer = concept_activations(reader, records, concept, band)
    return np.mean([by_layer[layer] for layer in band], axis=0)


def band_cosine_rows(
    reader: CacheReader, records: RunRecords, concept: ConceptStates, band: Sequence[int], seed: int
) -> list[dict[str, object]]:
    """``band_cosine_<attn_out|mlp_out>`` rows (``layer`` = the band's first layer)."""
    values = band_cosine(reader, records, concept, band)
    measure = f"band_cosine_{concept.site.removeprefix('hook_')}"
    return [
        morality_row(
            condition,
            round_index,
            concept.site,
            band[0],
            measure,
            cell_estimate(records, values, condition, round_index, seed),
        )
        for condition, round_index in records.cells()
    ]


def final_probe_rows(
    reader: CacheReader,
    records: RunRecords,
    probe: SavedProbe,
    site: str,
    band: Sequence[int],
    seed: int,
) -> list[dict[str, object]]:
    """Papers 2/3's morality level with one probe (docs/protocols.md §2.5): the cosine of ``site``
    (``hook_attn_out`` / ``hook_mlp_out``) at every stored layer with the direction of ``probe``,
    fitted at the final norm's output.

    Rows ``final_probe_cosine_<attn_out|mlp_out>`` per layer, and ``band_final_probe_cosine_<...>``,
    their mean over ``band`` (``layer`` = the band's first layer).

    Raises:
        DimensionMismatchError: the site's width is not the probe's.
    """
    stored = stored_site(reader, site, probe.provenance.position)
    name = site.removeprefix("hook_")
    check_probe_width(probe, stored.width, f"{reader.path} {site} layer {stored.layers[0]}")
    measures = {layer: (layer, _cosine_to(probe.direction)) for layer in stored.layers}
    by_layer = StreamedActivations(reader, stored).map_layers(measures)
    rows = [
        morality_row(condition, round_index, site, layer, f"final_probe_cosine_{name}", estimate)
        for layer, values in by_layer.items()
        for condition, round_index in records.cells()
        for estimate in [cell_estimate(records, values, condition, round_index, seed)]
    ]
    band_values = np.mean([by_layer[layer] for layer in band], axis=0)
    rows += [
        morality_row(
            condition,
            round_index,
            site,
            band[0],
            f"band_final_probe_cosine_{name}",
            cell_estimate(records, band_values, condition, round_index, seed),
        )
        for condition, round_index in records.cells()
    ]
    return rows


def concept_uncertainty_rows(records: RunRecords, activation: np.ndarray) -> list[dict[str, object]]:
    """``concept_uncertainty.csv`` rows: one per record; ``uncertainty`` and ``uncertainty_measure``
    (:data:`UNCERTAINTY_MEASURES`) are empty when the record's uncertainty was not measured."""
    return [
        {
            "condition": str(condition),
            "round": int(round_index),
            "item_id": str(item),
            "concept_activation": float(value),
            "uncertainty": "" if np.isnan(uncertainty) else float(uncertainty),
            "uncertainty_measure": "" if np.isnan(uncertainty) else records.uncertainty_measure,
        }
        for condition, round_index, item, value, uncertainty in zip(
            records.condition, records.round, records.item_id, activation, records.uncertainty
        )
    ]


def pearson_r(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation of two [n] arrays; ``None`` with fewer than 3 points or a constant one."""
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def concept_uncertainty_correlations(
    records: RunRecords, activation: np.ndarray
) -> dict[str, dict[str, float | int | str | None]]:
    """Per condition: Pearson r of per-round means over rounds, and over records (docs/protocols.md §2.4).

    Returns:
        condition -> ``{"r_round_means", "n_rounds", "r_records", "n_records", "uncertainty"}`` (r is
        ``None`` below 3 points or for a constant series; ``uncertainty`` names the measure correlated).
    """
    summary = {}
    for condition in sorted(set(records.condition)):
        keep = (records.condition == condition) & np.isfinite(records.uncertainty)
        rounds = sorted(set(records.round[keep]))
        activation_means = np.array([activation[keep & (records.round == r)].mean() for r in rounds])
        uncertainty_means = np.array([records.uncertainty[keep & (records.round == r)].mean() for r in rounds])
        summary[str(condition)] = {
            "r_round_means": pearson_r(activation_means, uncertainty_means),
            "n_rounds": len(rounds),
            "r_records": pearson_r(activation[keep], records.uncertainty[keep]),
            "n_records": int(keep.sum()),
            "uncertainty": records.uncertainty_measure,
        }
    return summary


def interaction_rows(records: RunRecords, morality: np.ndarray, outcome: str, seed: int) -> list[dict[str, object]]:
    """Factorial effects (instruction x CoT x feedback, and demonstrations) on the per-item morality level,
    per round: the rows :func:`workbench.metrics.tables.design_effect_rows` builds for behaviour.

    Args:
        morality: [n] per-record morality level (e.g. band-mean probe probability).
        outcome: name prefix of the ``outcome`` column (``<outcome>@round<k>``).

    Returns an empty list when the conditions do not form a 2x2x2 design at any demonstration level.
    """
    cells = {}
    for condition, round_index in records.cells():
        keep = (records.condition == condition) & (records.round == round_index)
        items, values = records.item_id[keep], morality[keep]
        cells[condition, round_index] = {str(item): float(values[items == item].mean()) for item in set(items)}
    return design_effect_rows(cells, outcome, n_boot=1000, seed=seed, level=0.95)
