"""The ``workbench attribute`` stage: head effects of one or two checkpoints on the Winogender
contrast pairs (head_effects.py: patching, mean ablation, Vig et al.'s attention mediation, direct
logit attribution), written as ``attribution/heads.csv`` (checkpoint, method, layer, head, effect)
and, when a debiased checkpoint is given, ``attribution/selected_heads.csv`` (layer, head,
effect_before, effect_after, drop) from the configured method's table (RUN_FOLDER.md).

Each checkpoint's contrast-pair bias also goes to ``attribution/bias_levels.csv``:
``winogender.logit_difference`` (mean clean m, logits) and ``winogender.total_effect`` (mean
m(counterfactual) - m(clean)), with 95 % bootstrap CIs over pairs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.attribution.contrast import (
    DEFAULT_TEMPLATE,
    tokenize_contrast_pairs,
    winogender_contrast_pairs,
)
from workbench.attribution.head_effects import DEFAULT_METHODS, METHODS, bias_measure, head_effects, total_effect
from workbench.attribution.selection import require_same_architecture, select_debiased_heads
from workbench.bias.bootstrap import bootstrap_mean_interval
from workbench.bias.levels import write_bias_levels
from workbench.config_tables import dataclass_from_table
from workbench.models.loading import LoadedModel
from workbench.run_folder import RUN_TABLES, RunFolder
from workbench.run_tables import BiasLevel, DebiasedHead, HeadEffect, row_cells


@dataclass(frozen=True)
class AttributionConfig:
    """Head attribution.

    Attributes:
        occupations_path: winogender/occupations-stats.tsv.
        template: prompt template with one ``{}`` for the occupation / group noun.
        methods: any of activation_patching, attribution_patching, mean_ablation, attention_mediation
            (Vig et al.'s mediation through attention weights), direct_logit_attribution; default
            all but attention_mediation.
        selection_method: the method whose tables select the debiased heads.
        top_k / min_drop: head selection (see selection.py).
        backend: hook-layer backend for the forward passes (hf, transformer_lens, nnsight).
    """

    occupations_path: str
    template: str = DEFAULT_TEMPLATE
    methods: tuple[str, ...] = DEFAULT_METHODS
    selection_method: str = "activation_patching"
    top_k: int | None = 10
    min_drop: float | None = None
    backend: str = "hf"

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"attribution.methods has unknown {unknown}; use {METHODS}")
        if self.selection_method not in self.methods:
            raise ValueError(
                f"attribution.selection_method {self.selection_method!r} must be one of methods {self.methods}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttributionConfig:
        """Build from a TOML ``[attribution]`` table; unknown keys are an error naming the valid ones."""
        return dataclass_from_table(cls, data, "attribution")


def checkpoint_effects(
    model: LoadedModel, config: AttributionConfig, checkpoint: str
) -> tuple[dict[str, np.ndarray], list[BiasLevel]]:
    """(method -> [n_layers, n_heads] effect table, the checkpoint's contrast-pair bias levels)."""
    pairs = winogender_contrast_pairs(Path(config.occupations_path), config.template)
    contrast = tokenize_contrast_pairs(model.tokenizer, pairs)
    tables = {m: t.numpy() for m, t in head_effects(model, contrast, config.methods, config.backend).items()}
    levels = []
    per_pair = {
        "winogender.logit_difference": bias_measure(model, contrast.clean, contrast, backend=config.backend),
        "winogender.total_effect": total_effect(model, contrast, config.backend),
    }
    for measure, values in per_pair.items():
        low, high = bootstrap_mean_interval(values.numpy())
        levels.append(BiasLevel(checkpoint, measure, float(values.mean()), low, high, int(values.numel())))
    return tables, levels


def write_head_effects(run_dir: Path, checkpoint: str, tables: dict[str, np.ndarray]) -> Path:
    """Append (or replace) this checkpoint's rows in ``attribution/heads.csv``.

    ``tables``: method -> [n_layers, n_heads] effects (logits).
    """
    path = RunFolder(Path(run_dir)).table("heads")
    columns = RUN_TABLES["heads"].columns
    path.parent.mkdir(parents=True, exist_ok=True)
    kept: list[list[str]] = []
    if path.exists():
        with path.open(newline="", encoding="utf-8") as handle:
            kept = [[row[c] for c in columns] for row in csv.DictReader(handle) if row["checkpoint"] != checkpoint]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(kept)
        for method, table in tables.items():
            for layer in range(table.shape[0]):
                for head in range(table.shape[1]):
                    writer.writerow(row_cells(HeadEffect(checkpoint, method, layer, head, float(table[layer, head]))))
    return path


def write_selected_heads(run_dir: Path, rows: list[DebiasedHead]) -> Path:
    """Write ``attribution/selected_heads.csv``."""
    path = RunFolder(Path(run_dir)).table("selected_heads")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(RUN_TABLES["selected_heads"].columns)
        writer.writerows(row_cells(row) for row in rows)
    return path


def attribute(
    base: LoadedModel,
    config: AttributionConfig,
    run_dir: Path,
    debiased: LoadedModel | None = None,
    base_name: str = "base",
    debiased_name: str = "debiased",
) -> list[DebiasedHead]:
    """Write heads.csv for ``base`` (and ``debiased``); with both, select and write the
    successfully debiased heads and return them."""
    if debiased is not None:
        require_same_architecture(base.architecture, debiased.architecture)
    before, levels = checkpoint_effects(base, config, base_name)
    write_head_effects(run_dir, base_name, before)
    if debiased is None:
        write_bias_levels(run_dir, levels)
        return []
    after, debiased_levels = checkpoint_effects(debiased, config, debiased_name)
    write_head_effects(run_dir, debiased_name, after)
    write_bias_levels(run_dir, levels + debiased_levels)
    rows = select_debiased_heads(
        before[config.selection_method], after[config.selection_method], config.top_k, config.min_drop
    )
    write_selected_heads(run_dir, rows)
    return rows
