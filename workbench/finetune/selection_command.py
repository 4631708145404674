"""``workbench select``: rank the CDA corpus by uncertainty and concept activation, select, and compare arms.

One TOML file (example: workbench/configs/selection.toml; guide: workbench/DEBIASING.md, "Sample
selection") with the tables ``[select]`` (and ``[select.bbq]``), ``[debias]`` and ``[bias]``:

1. score every candidate line of the ``[debias]`` corpus and write ``attribution/selection.csv``
   (workbench/finetune/selection.py);
2. for each of ``[select] arms``, CDA-debias a fresh copy of ``--model`` on that arm (the
   selection, the random baseline of the same size, the whole corpus) with the same ``[debias]``
   training budget, saving ``checkpoints/<checkpoint_name>-<arm>/``;
3. measure ``pretrained`` and every arm with ``[bias]`` (CrowS-Pairs, SEAT) and ``[select.bbq]``
   (BBQ, workbench/finetune/bbq_levels.py) into ``attribution/bias_levels.csv`` under the labels
   ``pretrained`` and ``<checkpoint_name>-<arm>``, and print all of them side by side.

Every input is checked before the model loads. Rerunning replaces the selection, the arms'
checkpoints and their rows of bias_levels.csv (other rows are kept).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from workbench.cli.debiasing import (
    CONFIG_TABLES,
    bias_levels_table,
    read_config_tables,
    require_input_file,
    stage_config,
)
from workbench.cli.errors import CheckpointKindError, DebiasingConfigError
from workbench.run_folder import RunFolder, RunFolderError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from probes.concept_sets import ConceptExample
    from workbench.bias.levels import BiasConfig
    from workbench.finetune.bbq_levels import BBQLevelConfig
    from workbench.finetune.debias import DebiasConfig
    from workbench.finetune.selection import SelectionConfig
    from workbench.models.loading import LoadedModel
    from workbench.run_tables import SelectionCandidate
    from workbench.tasks.items import Item

console = Console(stderr=True)
out = Console()

TABLES = (*CONFIG_TABLES, "select")
EXAMPLE_CONFIG = "workbench/configs/selection.toml"
PRETRAINED = "pretrained"
SHOWN_ROWS = 10
HELP = "rank CDA samples by uncertainty and latent concept, select, debias selected vs random vs all, compare bias"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``workbench select`` (help line: :data:`HELP`); sets ``handler`` to :func:`run_command`."""
    parser.description = (
        "Score every candidate line of the [debias] corpus by the model's uncertainty and its activation of a "
        "latent concept ([select]), write RUN/attribution/selection.csv (the top fraction and a random "
        "baseline of the same size), then CDA-debias a fresh copy of --model on each of [select] arms "
        "(selected, random, all) with the same [debias] budget, measure each with [bias] and [select.bbq] into "
        "bias_levels.csv and print them side by side (value [95% CI])."
    )
    parser.add_argument("--run", type=Path, required=True, metavar="DIR", help="the run folder (created if missing)")
    parser.add_argument(
        "--config",
        type=Path,
        required=True,
        metavar="FILE",
        help=f"TOML file with [select], [debias] and [bias] tables (example: {EXAMPLE_CONFIG}); relative paths "
        "inside are read from the current directory",
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="SPEC",
        help="the causal LM to score with and to debias: embedded name, .gguf file or saved model folder",
    )
    parser.add_argument(
        "--select-only",
        action="store_true",
        help="write selection.csv and stop: no debiasing, no bias levels (whatever [select] arms says)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device of the model: auto (GPU when present), cpu, cuda, mps (default: auto)",
    )
    parser.set_defaults(handler=run_command)


def read_tables(path: Path) -> dict[str, dict[str, Any]]:
    """The tables of a selection TOML file; a table other than :data:`TABLES` is an error."""
    return read_config_tables(path, TABLES, EXAMPLE_CONFIG)


def _configs(path: Path, select_only: bool) -> tuple[SelectionConfig, DebiasConfig, BiasConfig | None]:
    """The three stage configurations, every input path checked."""
    from workbench.bias.levels import BiasConfig
    from workbench.finetune.debias import DebiasConfig
    from workbench.finetune.selection import SelectionConfig

    tables = read_tables(path)
    select = stage_config(path, tables, "select", SelectionConfig.from_dict)
    debias = stage_config(path, tables, "debias", DebiasConfig.from_dict)
    require_input_file(path, "debias", "corpus_path", debias.corpus_path)
    if debias.selection_path is not None:
        raise DebiasingConfigError(
            f"{path} [debias] selection_path is set; `workbench select` writes the selection and chooses each arm "
            "itself: leave selection_path out of this file (it is for `workbench debias`)"
        )
    bias = None
    if "bias" in tables:
        bias = stage_config(path, tables, "bias", BiasConfig.from_dict)
        if bias.crows_pairs_path is not None:
            require_input_file(path, "bias", "crows_pairs_path", bias.crows_pairs_path)
        for seat_path in bias.seat_paths:
            require_input_file(path, "bias", "seat_paths", seat_path)
    if select.bbq is not None and select.bbq.path != "embedded":
        require_input_file(path, "select.bbq", "path", select.bbq.path)
    _, _, concept_path = select.concept_set.partition(":")
    if concept_path:
        require_input_file(path, "select", "concept_set", concept_path)
    if select.arms and not select_only and bias is None and select.bbq is None:
        raise DebiasingConfigError(
            f"{path}: [select] arms = {list(select.arms)} are compared by their bias levels, but there is no [bias] "
            "table and no [select.bbq] table; add one, or set arms = [] to select only"
        )
    return select, debias, bias


def _scores_table(rows: list[SelectionCandidate], size: int, total: int) -> Table:
    table = Table(title=f"selection: the top {size} of {total} candidates, best first")
    for column in ("rank", "line", "uncertainty (nats)", "concept activation", "score", "random", "text"):
        table.add_column(column, justify="left" if column == "text" else "right")

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    for row in rows[:SHOWN_ROWS]:
        table.add_row(
            str(row.rank),
            str(row.line),
            number(row.uncertainty),
            number(row.concept_activation),
            f"{row.score:.3f}",
            "yes" if row.random else "",
            escape(row.text[:60]),
        )
    return table


def _arm_summary(rows: list[SelectionCandidate]) -> Table:
    """Mean scores of the selected and the random arm (what the selection changed about the samples)."""
    table = Table(title="arms: mean scores of their samples")
    for column in ("arm", "samples", "mean uncertainty (nats)", "mean concept activation", "shared with selected"):
        table.add_column(column, justify="right")
    for arm in ("selected", "random"):
        members = [row for row in rows if getattr(row, arm)]
        table.add_row(
            arm,
            str(len(members)),
            _mean_text([row.uncertainty for row in members]),
            _mean_text([row.concept_activation for row in members]),
            str(sum(row.selected for row in members)),
        )
    return table


def _mean_text(values: list[float | None]) -> str:
    """The mean of the finite values to 4 decimals, ``-`` when there is none."""
    finite = [value for value in values if value is not None and np.isfinite(value)]
    return f"{np.mean(finite):.4f}" if finite else "-"


def select_samples(
    loaded: LoadedModel,
    texts: list[str],
    config: SelectionConfig,
    run: RunFolder,
    statements: Sequence[ConceptExample] | None = None,
) -> Path:
    """Score the candidate lines of ``texts``, write selection.csv and print its top rows; returns its path.

    ``statements``: the concept set, when read already.
    """
    from workbench.finetune.selection import (
        candidate_pool,
        limit_candidates,
        rank_candidates,
        score_candidates,
        selection_size,
        write_selection,
    )

    candidates = limit_candidates(loaded, candidate_pool(texts, config), config)
    console.print(f"scoring {len(candidates)} candidate samples ({config.uncertainty_measure} uncertainty)")
    rows = rank_candidates(score_candidates(loaded, candidates, config, statements), config)
    path = write_selection(run.root, rows)
    out.print(_scores_table(rows, selection_size(len(rows), config.fraction), len(rows)))
    out.print(_arm_summary(rows))
    return path


def measure(
    loaded: LoadedModel,
    label: str,
    run: RunFolder,
    bias: BiasConfig | None,
    bbq: BBQLevelConfig | None,
    bbq_items: list[Item],
) -> None:
    """Write ``label``'s rows of bias_levels.csv: [bias] (CrowS-Pairs, SEAT) and BBQ."""
    from workbench.bias.levels import run_bias_stage, write_bias_levels
    from workbench.finetune.bbq_levels import bbq_levels

    console.print(f"measuring the bias level of {label}")
    if bias is not None:
        run_bias_stage(loaded.model, loaded.tokenizer, bias, run.root, label)
    if bbq is not None:
        write_bias_levels(run.root, bbq_levels(loaded, bbq_items, bbq, label))


def compare_arms(
    loaded: LoadedModel,
    texts: list[str],
    select: SelectionConfig,
    debias_config: DebiasConfig,
    selection_path: Path,
    run: RunFolder,
    bias: BiasConfig | None,
    bbq_items: list[Item],
) -> list[str]:
    """Debias a fresh copy of ``loaded`` on each arm of ``select.arms`` and measure it; returns the labels measured.

    ``texts``: the ``[debias]`` corpus. The model's weights are restored from a copy before each
    arm, so every arm starts from the same checkpoint and trains with the same ``[debias]`` steps,
    batch size and seed. An arm CDA would not change is refused before any training (with
    ``[debias] on_no_gendered_words = "error"``, the default).
    """
    from workbench.finetune.debias import debias
    from workbench.finetune.selection import require_gendered_arms

    if debias_config.on_no_gendered_words == "error":
        require_gendered_arms(texts, selection_path, select.arms)
    initial = {name: tensor.detach().clone() for name, tensor in loaded.model.state_dict().items()}
    labels = []
    if select.measure_pretrained:
        measure(loaded, PRETRAINED, run, bias, select.bbq, bbq_items)
        labels.append(PRETRAINED)
    for arm in select.arms:
        loaded.model.load_state_dict(initial)
        config = replace(
            debias_config,
            checkpoint_name=f"{debias_config.checkpoint_name}-{arm}",
            selection_path=None if arm == "all" else str(selection_path),
            selection_arm="random" if arm == "random" else "selected",  # "all" reads no selection
        )
        console.print(f"CDA debiasing on the {arm} samples: {config.steps} steps of {config.batch_size} texts")
        checkpoint = debias(loaded.model, loaded.tokenizer, config, run.root, loaded.model_id)
        out.print(f"{arm}: {checkpoint}")
        measure(loaded, config.checkpoint_name, run, bias, select.bbq, bbq_items)
        labels.append(config.checkpoint_name)
    loaded.model.load_state_dict(initial)
    return labels


def run_command(args: argparse.Namespace) -> int:
    """``workbench select``: selection.csv, then (unless ``--select-only``) the arms side by side."""
    from workbench.finetune.cda import read_corpus
    from workbench.finetune.encoders import encoder_model_type
    from workbench.finetune.selection import candidate_pool, concept_statements
    from workbench.models.loading import load_model

    if args.run.exists() and not args.run.is_dir():
        raise RunFolderError(f"--run {args.run} is a file; give a folder (it is created if missing)")
    select, debias_config, bias = _configs(args.config, args.select_only)
    texts = read_corpus(Path(debias_config.corpus_path), debias_config.column)
    candidate_pool(texts, select)  # an empty pool is refused before the model loads
    statements = concept_statements(select) if select.concept_weight > 0 else None
    bbq_items = select.bbq.items() if select.bbq is not None and not args.select_only else []
    encoder = encoder_model_type(args.model)
    if encoder is not None:
        raise CheckpointKindError(
            f"{args.model} is a {encoder} encoder checkpoint, but `workbench select` needs a causal LM (it samples "
            "answers and continues next-token training); give a Llama/Qwen/GPT-2-style model"
        )
    args.run.mkdir(parents=True, exist_ok=True)
    run = RunFolder(args.run)
    console.print(f"loading {args.model}")
    loaded = load_model(args.model, device=args.device)
    selection_path = select_samples(loaded, texts, select, run, statements)
    out.print(f"selection: {selection_path}")
    if args.select_only or not select.arms:
        return 0
    compare_arms(loaded, texts, select, debias_config, selection_path, run, bias, bbq_items)
    out.print(bias_levels_table(run.table("bias_levels")))
    return 0
