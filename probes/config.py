"""``ProbeConfig``: the ``[probe]`` table of a run configuration, as a frozen dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from probes.concept_sets import STATEMENT_FORMS
from probes.errors import ProbeConfigError
from probes.persistence import PROBE_KINDS
from workbench.config_tables import dataclass_from_table

CONCEPT_SET_FORMS = ("auto", "embedded", "bbq-items", "crows_pairs:<path>", "ethics:<path>", "toxicity:<path>")
FILE_CONCEPT_SETS = ("crows_pairs", "ethics", "toxicity")
CONCEPT_INPUTS = ("round_prompt", "question_block")
MEASURES = ("probe_probability", "cosine", "concept_activation", "band_cosine", "final_probe_cosine")
MEMORY_MODES = ("auto", "in-memory", "streaming")
MINIMUMS = {
    "n_folds": 2,
    "n_repeats": 1,
    "batch_size": 1,
    "max_steering_prompts": 1,
    "streaming_epochs": 1,
    "streaming_batch_size": 1,
}


@dataclass(frozen=True)
class ProbeConfig:
    """How the probe stage fits concept probes and applies them to a run's cache.

    Attributes:
        concept_set: the statements the probes are fitted on and records compared with:
            ``"auto"`` (probes fitted on ``embedded``; on a BBQ run each record is compared with its
            own item's statement, elsewhere with the embedded mean), ``"embedded"`` (BBQ contrast
            pairs of the embedded sample; every record is compared with their mean),
            ``"bbq-items"`` (contrast pairs of the run's own task items, fitted on and compared
            per item), ``"crows_pairs:<path>"``, ``"ethics:<path>"`` (ETHICS commonsense) or
            ``"toxicity:<path>"`` (Wikipedia Talk).
        concept_statement: how a BBQ item becomes its biased statement: ``"workbench"`` (the
            bias-aligned answer + the rest of the question), ``"paper4"`` (paper 4's question block,
            "Who" -> "The {groups}", "?" -> ".", + " [/INST]") or ``"paper2"`` (papers 2 and 3,
            "I do believe it is {groups}"); see ``probes.concept_sets.bbq_statements``.
        concept_input: the record state compared with the concept state (``concept_activation``):
            ``"round_prompt"`` (the run cache's state at ``position``: the last token of the whole
            round prompt) or ``"question_block"`` (paper 4: the round prompt cut at its first
            ``"\\n\\n"``, captured at the probe stage, last token).
        kind: ``"logistic"``, ``"mean_difference"`` or ``"ccs"`` (CCS needs a paired set).
        sites: site names in the hook layer's grammar (``blocks.*.hook_resid_post``,
            ``blocks.10-20.hook_resid_post``); ``*`` means every layer stored in the cache.
            ``None``: every stored layer of ``hook_resid_post``.
        position: the cached token position the probes read (``"last_prompt"``).
        n_folds: folds of the grouped cross-validation.
        n_repeats: repetitions of the grouped k-fold scheme.
        seed: seed of splits, controls, subsampling and the random steering direction.
        C: inverse L2 strength of the logistic probe.
        layer_band: inclusive (first, last) layers averaged by the band measures (docs/protocols.md
            §2.5: 15-28), clipped to the model's layers.
        layer_band_fraction: the band as fractions of depth instead, ``(first, last)`` in [0, 1]:
            layers ``round(first * n_layers)`` to ``round(last * n_layers)`` (capped at the last
            layer). The papers' 15-28 of 32 layers is ``(0.46875, 0.875)``. ``None``: use ``layer_band``.
        measures: which morality measures to write (``probe_probability``, ``cosine``,
            ``concept_activation``, ``band_cosine``, ``final_probe_cosine``; the last two only
            when ``hook_attn_out`` / ``hook_mlp_out`` are cached, ``final_probe_cosine`` only when a
            probe is fitted at ``ln_final.hook_out``, i.e. ``sites`` names it: papers 2/3's one
            toxicity probe with ``concept_set = "toxicity:<path>"``).
        steering: run the steering check (it costs model forwards).
        steering_layers: layers to steer at; ``None`` picks the layer of best probe accuracy.
        steering_alphas: multiples of the unit probe direction added to the residual stream.
        max_steering_prompts: round-0 prompts the steering check scores at most.
        max_concept_examples: concept statements kept at most (whole groups, seeded choice);
            ``None`` keeps all.
        batch_size: sequences per forward in concept capture and steering.
        memory: how probes are fitted on a site's concept activations (docs/probes.md,
            "Out-of-core fitting"): ``"in-memory"`` (read whole, Newton / closed-form fits),
            ``"streaming"`` (read chunk-row by chunk-row: class moments for ``mean_difference``,
            preconditioned mini-batch steps for ``logistic``; ``ccs`` has no streamed fit) or
            ``"auto"`` (streaming when the site's activations, float32, exceed
            ``memory_budget_mb``). Applying probes to the run cache always streams.
        memory_budget_mb: MiB: above it ``"auto"`` streams; a streamed fit holds at most about this
            much (it fits the layers in groups that fit in it).
        streaming_epochs: passes of mini-batch steps of a streamed logistic fit (after its moments pass).
        streaming_batch_size: records per mini-batch step of a streamed logistic fit.
    """

    concept_set: str = "auto"
    concept_statement: str = "workbench"
    concept_input: str = "round_prompt"
    kind: str = "logistic"
    sites: tuple[str, ...] | None = None
    position: str = "last_prompt"
    n_folds: int = 5
    n_repeats: int = 2
    seed: int = 0
    C: float = 1.0
    layer_band: tuple[int, int] = (15, 28)
    layer_band_fraction: tuple[float, float] | None = None
    measures: tuple[str, ...] = MEASURES
    steering: bool = False
    steering_layers: tuple[int, ...] | None = None
    steering_alphas: tuple[float, ...] = (-8.0, 0.0, 8.0)
    max_steering_prompts: int = 64
    max_concept_examples: int | None = 2000
    batch_size: int = 8
    memory: str = "auto"
    memory_budget_mb: float = 512.0
    streaming_epochs: int = 10
    streaming_batch_size: int = 1024

    def __post_init__(self) -> None:
        name = self.concept_set.partition(":")[0]
        if self.concept_set not in ("auto", "embedded", "bbq-items") and (
            name not in FILE_CONCEPT_SETS or not self.concept_set.partition(":")[2]
        ):
            raise ProbeConfigError(
                f"[probe] concept_set {self.concept_set!r} is unknown; use one of {', '.join(CONCEPT_SET_FORMS)}"
            )
        if self.concept_statement not in STATEMENT_FORMS:
            raise ProbeConfigError(
                f"[probe] concept_statement {self.concept_statement!r} is unknown; "
                f"use one of {', '.join(STATEMENT_FORMS)}"
            )
        if self.concept_statement != "workbench" and name in FILE_CONCEPT_SETS:
            raise ProbeConfigError(
                f"[probe] concept_statement {self.concept_statement!r} builds BBQ statements, but concept_set "
                f'{self.concept_set!r} is a file of its own statements; use concept_statement = "workbench"'
            )
        if self.concept_input not in CONCEPT_INPUTS:
            raise ProbeConfigError(
                f"[probe] concept_input {self.concept_input!r} is unknown; use one of {', '.join(CONCEPT_INPUTS)}"
            )
        if self.kind not in PROBE_KINDS:
            raise ProbeConfigError(f"[probe] kind {self.kind!r} is unknown; use one of {', '.join(PROBE_KINDS)}")
        unknown_measures = sorted(set(self.measures) - set(MEASURES))
        if unknown_measures:
            raise ProbeConfigError(f"[probe] measures {unknown_measures} are unknown; use any of {', '.join(MEASURES)}")
        if len(self.layer_band) != 2 or self.layer_band[0] > self.layer_band[1]:
            raise ProbeConfigError(f"[probe] layer_band {self.layer_band} must be [first, last] with first <= last")
        fraction = self.layer_band_fraction
        if fraction is not None and (len(fraction) != 2 or not 0 <= fraction[0] <= fraction[1] <= 1):
            raise ProbeConfigError(
                f"[probe] layer_band_fraction {list(fraction)} must be [first, last] with 0 <= first <= last <= 1"
            )
        for key, minimum in MINIMUMS.items():
            if getattr(self, key) < minimum:
                raise ProbeConfigError(f"[probe] {key}={getattr(self, key)} must be at least {minimum}")
        if self.max_concept_examples is not None and self.max_concept_examples < 2 * self.n_folds:
            raise ProbeConfigError(
                f"[probe] max_concept_examples={self.max_concept_examples} leaves too few statements "
                f"for {self.n_folds} folds; raise it or lower n_folds"
            )
        if self.C <= 0:
            raise ProbeConfigError(f"[probe] C={self.C} must be positive")
        if not self.memory_budget_mb > 0:
            raise ProbeConfigError(f"[probe] memory_budget_mb={self.memory_budget_mb} must be positive")
        if self.memory not in MEMORY_MODES:
            raise ProbeConfigError(f"[probe] memory {self.memory!r} is unknown; use one of {', '.join(MEMORY_MODES)}")
        if self.memory == "streaming" and self.kind == "ccs":
            raise ProbeConfigError(
                '[probe] memory = "streaming" cannot fit kind "ccs" (contrast pairs are fitted in memory); '
                'use memory = "auto" or "in-memory", or kind "logistic" or "mean_difference"'
            )

    def streams(self, activation_bytes: int) -> bool:
        """Whether a site whose activations take ``activation_bytes`` (float32) is fitted streaming."""
        if self.memory == "auto":
            return activation_bytes > self.memory_budget_mb * 2**20
        return self.memory == "streaming"

    @classmethod
    def from_dict(cls, table: dict[str, Any]) -> ProbeConfig:
        """Build from a TOML ``[probe]`` table; lists become tuples, unknown keys are rejected.

        Raises:
            ProbeConfigError: an unknown key (the message lists the valid keys) or a bad value.
        """
        return dataclass_from_table(cls, table, "probe", ProbeConfigError)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists); ``ProbeConfig.from_dict`` reads it back."""
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()
        }
