"""``ProbeConfig``: the ``[probe]`` table of a run configuration, as a frozen dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from probes.errors import ProbeConfigError
from probes.persistence import PROBE_KINDS
from workbench.config_tables import dataclass_from_table

CONCEPT_SET_FORMS = ("embedded", "bbq-items", "crows_pairs:<path>", "ethics:<path>", "toxicity:<path>")
FILE_CONCEPT_SETS = ("crows_pairs", "ethics", "toxicity")
MEASURES = ("probe_probability", "cosine", "concept_activation", "band_cosine")
MINIMUMS = {"n_folds": 2, "n_repeats": 1, "batch_size": 1, "max_steering_prompts": 1}


@dataclass(frozen=True)
class ProbeConfig:
    """How the probe stage fits concept probes and applies them to a run's cache.

    Attributes:
        concept_set: ``"embedded"`` (BBQ contrast pairs of the embedded sample), ``"bbq-items"``
            (contrast pairs of the run's own task items), ``"crows_pairs:<path>"``,
            ``"ethics:<path>"`` (ETHICS commonsense) or ``"toxicity:<path>"`` (Wikipedia Talk).
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
        measures: which morality measures to write (``probe_probability``, ``cosine``,
            ``concept_activation``, ``band_cosine``; the last only when ``hook_attn_out`` /
            ``hook_mlp_out`` are cached).
        steering: run the steering check (it costs model forwards).
        steering_layers: layers to steer at; ``None`` picks the layer of best probe accuracy.
        steering_alphas: multiples of the unit probe direction added to the residual stream.
        max_steering_prompts: round-0 prompts the steering check scores at most.
        max_concept_examples: concept statements kept at most (whole groups, seeded choice);
            ``None`` keeps all.
        batch_size: sequences per forward in concept capture and steering.
    """

    concept_set: str = "embedded"
    kind: str = "logistic"
    sites: tuple[str, ...] | None = None
    position: str = "last_prompt"
    n_folds: int = 5
    n_repeats: int = 2
    seed: int = 0
    C: float = 1.0
    layer_band: tuple[int, int] = (15, 28)
    measures: tuple[str, ...] = MEASURES
    steering: bool = False
    steering_layers: tuple[int, ...] | None = None
    steering_alphas: tuple[float, ...] = (-8.0, 0.0, 8.0)
    max_steering_prompts: int = 64
    max_concept_examples: int | None = 2000
    batch_size: int = 8

    def __post_init__(self) -> None:
        name = self.concept_set.partition(":")[0]
        if self.concept_set not in ("embedded", "bbq-items") and (
            name not in FILE_CONCEPT_SETS or not self.concept_set.partition(":")[2]
        ):
            raise ProbeConfigError(
                f"[probe] concept_set {self.concept_set!r} is unknown; use one of {', '.join(CONCEPT_SET_FORMS)}"
            )
        if self.kind not in PROBE_KINDS:
            raise ProbeConfigError(f"[probe] kind {self.kind!r} is unknown; use one of {', '.join(PROBE_KINDS)}")
        unknown_measures = sorted(set(self.measures) - set(MEASURES))
        if unknown_measures:
            raise ProbeConfigError(f"[probe] measures {unknown_measures} are unknown; use any of {', '.join(MEASURES)}")
        if len(self.layer_band) != 2 or self.layer_band[0] > self.layer_band[1]:
            raise ProbeConfigError(f"[probe] layer_band {self.layer_band} must be [first, last] with first <= last")
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
