"""The debiasing commands of ``workbench``: ``bias``, ``attribute``, ``debias`` and ``finetune``.

Every command reads one TOML file whose tables ``[bias]``, ``[attribution]``, ``[debias]`` and
``[finetune]`` configure the stages (example: workbench/configs/debiasing.toml; user guide:
workbench/DEBIASING.md), writes into the run folder given by ``--run`` (RUN_FOLDER.md:
``attribution/*.csv`` and ``checkpoints/``) and prints its result. Relative paths inside the TOML
are read from the current directory.

Bias levels of every checkpoint accumulate in ``attribution/bias_levels.csv`` under a label
(``pretrained``, ``debiased``, ``finetuned-prosocial``, ...); ``bias``, ``debias`` and
``finetune`` print all of them side by side.

``attribute`` and ``debias`` need a causal LM (next-token logits); ``finetune`` also takes a BERT
or RoBERTa encoder ([CLS] head, workbench/finetune/encoders.py), and ``bias`` measures an encoder
with ``[bias] likelihood = "masked"``. An encoder given where it cannot serve is refused in one
line before its weights load.
"""

from __future__ import annotations

import argparse
import csv
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from workbench.cli.errors import CheckpointKindError, CheckpointLabelError, DebiasingConfigError
from workbench.run_folder import RunFolder, RunFolderError

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

    from workbench.bias.levels import BiasConfig
    from workbench.finetune.train import FinetuneConfig
    from workbench.models.architecture import ModelArchitecture
    from workbench.models.loading import LoadedModel

console = Console(stderr=True)
out = Console()

CONFIG_TABLES = ("bias", "attribution", "debias", "finetune")
EXAMPLE_CONFIG = "workbench/configs/debiasing.toml"
PATCHING_METHODS = ("activation_patching", "attribution_patching")
AGREEMENT_TOP_K = 10
StageConfig = TypeVar("StageConfig")


ENCODER_FIXES = {
    "attribute": "attribute a causal LM (an embedded name, a .gguf file, or a Llama/Qwen/GPT-2 folder or hub id); "
    "for an encoder, bring selected heads from your own analysis to `workbench finetune --selected-heads CSV`",
    "debias": "this CDA continues next-token training; debias the encoder with a masked-LM method elsewhere and "
    "pass its folder to `workbench finetune --debiased DIR`",
}


def add_debiasing_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bias``, ``attribute``, ``debias`` and ``finetune`` to the ``workbench`` subcommands.

    Each subcommand sets ``handler`` (a function of the parsed namespace returning the exit status).
    """
    bias = subparsers.add_parser(
        "bias",
        help="measure intrinsic bias (CrowS-Pairs, SEAT) of checkpoints and compare them side by side",
        description="Measure each --model with the [bias] table (CrowS-Pairs preference share, SEAT effect "
        "size) into RUN/attribution/bias_levels.csv, then print every checkpoint recorded there side by side "
        "(rows = measures, columns = checkpoints, cells = value [95% CI]). Without --model, only print.",
    )
    _add_run_options(bias, config_required=False)
    bias.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="SPEC",
        help="a checkpoint to measure: embedded name, .gguf file or saved model folder (e.g. "
        "RUN/checkpoints/debiased); repeat for several",
    )
    bias.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME",
        help="the name of each --model in bias_levels.csv, in the same order (default: the spec's last "
        "path part, e.g. 'debiased'); use pretrained / debiased / finetuned-<mode> to line up with the other commands",
    )
    bias.set_defaults(handler=run_bias_command)

    attribute = subparsers.add_parser(
        "attribute",
        help="per-head effects on gender bias; with --debiased, select the successfully debiased heads",
        description="Attribute the Winogender contrast-pair bias (logit of the stereotypical pronoun minus the "
        "other) to every attention head with the [attribution] methods; write RUN/attribution/heads.csv and "
        "each checkpoint's winogender.* levels to bias_levels.csv. With --debiased, also write "
        "selected_heads.csv: heads whose |effect| fell most from --model to --debiased (ProSocialTuning's heads).",
    )
    _add_run_options(attribute, config_required=True)
    attribute.add_argument(
        "--model",
        required=True,
        metavar="SPEC",
        help="the base (pretrained) checkpoint: embedded name, .gguf file or saved model folder",
    )
    attribute.add_argument(
        "--debiased",
        metavar="SPEC",
        help="the debiased checkpoint of the same architecture (e.g. RUN/checkpoints/debiased)",
    )
    attribute.add_argument(
        "--label",
        metavar="NAME",
        help="name of --model in heads.csv and bias_levels.csv (default: the spec's last path part)",
    )
    attribute.add_argument(
        "--debiased-label",
        metavar="NAME",
        help="name of --debiased in heads.csv and bias_levels.csv (default: its last path part)",
    )
    attribute.add_argument(
        "--top",
        type=positive_int,
        default=10,
        metavar="N",
        help="how many heads to print, largest |effect| or drop first (default: 10)",
    )
    attribute.set_defaults(handler=run_attribute_command)

    debias = subparsers.add_parser(
        "debias",
        help="CDA-debias a model: gender-swap a corpus and continue language-model training on it",
        description="Counterfactual data augmentation: add the gender-swapped copy of every [debias] corpus "
        "line that has a gendered word, continue next-token training on the result, and save the checkpoint "
        "to RUN/checkpoints/<checkpoint_name>/ with debias_provenance.json. With a [bias] table, the debiased "
        "model's bias level is measured too and compared with the other checkpoints. A corpus without "
        "gendered words is an error (on_no_gendered_words = 'warn' trains anyway and says so).",
    )
    _add_run_options(debias, config_required=True)
    debias.add_argument(
        "--model",
        required=True,
        metavar="SPEC",
        help="the checkpoint to debias: embedded name, .gguf file or saved model folder",
    )
    debias.set_defaults(handler=run_debias_command)

    finetune = subparsers.add_parser(
        "finetune",
        help="fine-tune on a downstream task (plain, ProSocialTuning, PAC-tuning), then measure bias",
        description="Fine-tune --model (a causal LM: last-token head; or a BERT/RoBERTa encoder: [CLS] head) on the "
        "[finetune] task with a classification head, checkpointing every "
        "checkpoint_every steps to RUN/checkpoints/<checkpoint_name>-<mode>/ (rerunning resumes from the "
        "newest checkpoint), print the held-out accuracy, then measure the fine-tuned model with [bias] into "
        "bias_levels.csv under the label <checkpoint_name>-<mode> and print it next to the other checkpoints.",
    )
    _add_run_options(finetune, config_required=True)
    finetune.add_argument(
        "--model",
        required=True,
        metavar="SPEC",
        help="the checkpoint to fine-tune, usually the debiased one (RUN/checkpoints/debiased); a causal LM, or a "
        "BERT/RoBERTa encoder folder or hub id (e.g. bert-base-uncased; measure it with [bias] likelihood = 'masked')",
    )
    finetune.add_argument(
        "--mode",
        metavar="MODE",
        help="plain | prosocial (head penalty toward the debiased checkpoint) | pac (PAC-tuning) | "
        "pac+prosocial; overrides [finetune] mode",
    )
    finetune.add_argument(
        "--selected-heads",
        type=Path,
        metavar="CSV",
        help="heads for the prosocial penalty (default: [finetune] selected_heads_path, else "
        "RUN/attribution/selected_heads.csv)",
    )
    finetune.add_argument(
        "--debiased",
        type=Path,
        metavar="DIR",
        help="debiased checkpoint the penalty pulls the heads toward (default: [finetune] debiased_checkpoint, "
        "else RUN/checkpoints/<[debias] checkpoint_name>)",
    )
    finetune.add_argument(
        "--stop-after-steps",
        type=positive_int,
        metavar="N",
        help="stop once N steps in total are done, with a checkpoint and no evaluation; rerun without it to "
        "resume (splits a long fine-tune across jobs)",
    )
    finetune.set_defaults(handler=run_finetune_command)


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _add_run_options(parser: argparse.ArgumentParser, config_required: bool) -> None:
    parser.add_argument(
        "--run",
        type=Path,
        required=True,
        metavar="DIR",
        help="the run folder (created if missing); results go to DIR/attribution/ and DIR/checkpoints/",
    )
    parser.add_argument(
        "--config",
        type=Path,
        required=config_required,
        metavar="FILE",
        help=f"TOML file with [bias], [attribution], [debias], [finetune] tables (example: {EXAMPLE_CONFIG}); "
        "relative paths inside are read from the current directory"
        + ("" if config_required else "; needed when --model is given"),
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device of the model: auto (GPU when present), cpu, cuda, mps (default: auto)",
    )


# --- configuration -------------------------------------------------------------------------


def read_config_tables(
    path: Path, allowed: tuple[str, ...] = CONFIG_TABLES, example: str = EXAMPLE_CONFIG
) -> dict[str, dict[str, Any]]:
    """The tables of a debiasing TOML file; a table other than ``allowed`` is an error (``example``:
    the example file the message points to)."""
    path = Path(path)
    if not path.is_file():
        raise DebiasingConfigError(f"{path}: no such configuration file; see {example}")
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise DebiasingConfigError(f"{path}: invalid TOML ({error})") from None
    unknown = sorted(set(tables) - set(allowed))
    if unknown:
        raise DebiasingConfigError(f"{path}: unknown table(s) {unknown}; use {list(allowed)}")
    return tables


def stage_config(
    path: Path, tables: dict[str, dict[str, Any]], table: str, from_dict: Callable[[dict[str, Any]], StageConfig]
) -> StageConfig:
    """Build one stage's configuration from its table, naming the file and table on any error."""
    if table not in tables:
        raise DebiasingConfigError(f"{path}: no [{table}] table, which this command needs; see {EXAMPLE_CONFIG}")
    try:
        return from_dict(tables[table])
    except (TypeError, ValueError) as error:
        message = str(error)
        where = f"{path}: " if message.startswith(f"[{table}") else f"{path} [{table}]: "
        raise DebiasingConfigError(where + message) from None


def require_input_file(config_path: Path, table: str, key: str, value: str | Path) -> None:
    """Refuse a configured input path that does not exist, saying where relative paths are read from."""
    if not Path(value).exists():
        raise DebiasingConfigError(
            f"{config_path} [{table}] {key} = {str(value)!r} does not exist (relative paths are read from "
            f"{Path.cwd()}); run from the repository root or fix the path"
        )


def _bias_config(config_path: Path, tables: dict[str, dict[str, Any]]) -> BiasConfig:
    from workbench.bias.levels import BiasConfig

    config = stage_config(config_path, tables, "bias", BiasConfig.from_dict)
    if config.crows_pairs_path is not None:
        require_input_file(config_path, "bias", "crows_pairs_path", config.crows_pairs_path)
    for seat_path in config.seat_paths:
        require_input_file(config_path, "bias", "seat_paths", seat_path)
    return config


def _run_folder(path: Path) -> RunFolder:
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"--run {path} is a file; give a folder (it is created if missing)")
    path.mkdir(parents=True, exist_ok=True)
    return RunFolder(path)


def checkpoint_label(spec: str) -> str:
    """Short name of a model spec: a ``.gguf`` file's stem, else the last path part
    (``runs/a/checkpoints/debiased`` -> ``debiased``, ``org/Model`` -> ``Model``)."""
    path = Path(spec)
    return path.stem if spec.endswith(".gguf") else (path.name or spec)


def _load(spec: str, device: str, command: str, bias_config: BiasConfig | None = None) -> LoadedModel:
    """Load ``spec`` for ``command``: a causal LM, or (``bias``, ``finetune``) a BERT/RoBERTa encoder.

    Raises:
        CheckpointKindError: ``spec`` is an encoder and ``command`` needs a causal LM, or ``bias_config``
            scores CrowS-Pairs with the causal likelihood (checked from the config, before any weights load).
    """
    from workbench.finetune.encoders import encoder_model_type, load_encoder
    from workbench.models.loading import load_model

    encoder = encoder_model_type(spec)
    if encoder is not None:
        if command in ENCODER_FIXES:
            raise CheckpointKindError(
                f"{spec} is a {encoder} encoder checkpoint, but `workbench {command}` needs a causal LM (it reads "
                f"next-token logits); {ENCODER_FIXES[command]}"
            )
        if bias_config is not None and bias_config.crows_pairs_path is not None and bias_config.likelihood == "causal":
            raise CheckpointKindError(
                f'{spec} is a {encoder} encoder checkpoint, but [bias] likelihood = "causal" scores CrowS-Pairs '
                'by next-token likelihood; set likelihood = "masked" in the [bias] table for encoders'
            )
    console.print(f"loading {spec}")
    return load_encoder(spec, device=device) if encoder is not None else load_model(spec, device=device)


# --- bias levels ---------------------------------------------------------------------------


def _format_level(row: dict[str, str]) -> str:
    value = f"{float(row['value']):.3f}"
    if row["ci_low"] and row["ci_high"]:
        return f"{value} [{float(row['ci_low']):.3f}, {float(row['ci_high']):.3f}]"
    return value


def bias_levels_table(path: Path) -> Table:
    """All checkpoints of a bias_levels.csv side by side: rows = measures, columns =
    checkpoints (both in order of first appearance), cells ``value [ci_low, ci_high]``."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    checkpoints = list(dict.fromkeys(row["checkpoint"] for row in rows))
    measures = list(dict.fromkeys(row["measure"] for row in rows))
    cells = {(row["measure"], row["checkpoint"]): _format_level(row) for row in rows}
    table = Table(
        title=f"bias levels ({path})",
        caption="value [95% bootstrap CI]. crows_pairs*: share of pairs whose more stereotypical sentence is more "
        "likely (0.5 = unbiased), except crows_pairs.likelihood_diff* (mean |log-likelihood difference|, nats) "
        "and crows_pairs.neutral (share of tied pairs); seat.*: WEAT effect size d and permutation p; "
        "winogender.*: logits of the "
        "stereotypical pronoun minus the other (0 = unbiased). - = not measured.",
    )
    table.add_column("measure")
    for checkpoint in checkpoints:
        table.add_column(escape(checkpoint), justify="right")
    for measure in measures:
        table.add_row(escape(measure), *(cells.get((measure, checkpoint), "-") for checkpoint in checkpoints))
    return table


def _print_bias_levels(run: RunFolder) -> None:
    path = run.table("bias_levels")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist yet; measure a checkpoint with `workbench bias --model SPEC`")
    out.print(bias_levels_table(path))


def _measure_and_record(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, config: BiasConfig, run: RunFolder, label: str
) -> None:
    from workbench.bias.levels import run_bias_stage

    console.print(f"measuring the bias level of {label}")
    run_bias_stage(model, tokenizer, config, run.root, label)


def run_bias_command(args: argparse.Namespace) -> int:
    """``workbench bias``: measure each --model, then print every recorded checkpoint side by side."""
    run = _run_folder(args.run)
    if args.label and len(args.label) != len(args.model):
        raise CheckpointLabelError(
            f"{len(args.label)} --label for {len(args.model)} --model; give one label per model, in order, or none"
        )
    labels = args.label or [checkpoint_label(spec) for spec in args.model]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise CheckpointLabelError(f"label(s) {repeated} name several models; give each --model its own --label")
    if args.model:
        if args.config is None:
            raise DebiasingConfigError("measuring a --model needs --config FILE with a [bias] table")
        config = _bias_config(args.config, read_config_tables(args.config))
        for spec, label in zip(args.model, labels):
            loaded = _load(spec, args.device, "bias", config)
            _measure_and_record(loaded.model, loaded.tokenizer, config, run, label)
    _print_bias_levels(run)
    return 0


# --- attribution ---------------------------------------------------------------------------


def effect_tables(path: Path, checkpoint: str) -> dict[str, np.ndarray]:
    """Method -> [n_layers, n_heads] effect table (logits) of one checkpoint, read back from heads.csv."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["checkpoint"] == checkpoint]
    n_layers = 1 + max(int(row["layer"]) for row in rows)
    n_heads = 1 + max(int(row["head"]) for row in rows)
    tables: dict[str, np.ndarray] = {}
    for row in rows:
        table = tables.setdefault(row["method"], np.full((n_layers, n_heads), np.nan))
        table[int(row["layer"]), int(row["head"])] = float(row["effect"])
    return tables


def _top_heads_table(tables: dict[str, np.ndarray], method: str, label: str, top: int) -> Table:
    effects = tables[method]
    order = np.argsort(-np.abs(effects).reshape(-1), kind="stable")[:top]
    table = Table(title=f"top heads of {label} by |effect| ({method}, logits)")
    for column in ("layer", "head", *tables):
        table.add_column(column, justify="right")
    for flat in order:
        layer, head = divmod(int(flat), effects.shape[1])
        table.add_row(str(layer), str(head), *(f"{tables[m][layer, head]:+.4f}" for m in tables))
    return table


def _print_agreement(tables: dict[str, np.ndarray], label: str) -> None:
    from workbench.attribution.selection import rank_correlation, top_k_agreement

    if not all(method in tables for method in PATCHING_METHODS):
        return
    exact, estimate = (tables[method] for method in PATCHING_METHODS)
    out.print(
        f"{label}: attribution patching vs activation patching: Spearman rho of |effect| = "
        f"{rank_correlation(exact, estimate):.3f}, top-{AGREEMENT_TOP_K} agreement = "
        f"{top_k_agreement(exact, estimate, AGREEMENT_TOP_K):.2f}"
    )


def run_attribute_command(args: argparse.Namespace) -> int:
    """``workbench attribute``: heads.csv for --model (and --debiased), selected_heads.csv with both."""
    from workbench.attribution.attribute import AttributionConfig, attribute
    from workbench.attribution.selection import require_same_architecture

    run = _run_folder(args.run)
    config = stage_config(args.config, read_config_tables(args.config), "attribution", AttributionConfig.from_dict)
    require_input_file(args.config, "attribution", "occupations_path", config.occupations_path)
    base_label = args.label or checkpoint_label(args.model)
    debiased_label = args.debiased_label or (checkpoint_label(args.debiased) if args.debiased else None)
    if debiased_label == base_label:
        raise CheckpointLabelError(
            f"--model and --debiased both have the label {base_label!r}; set --label / --debiased-label apart"
        )
    debiased_name = debiased_label or "debiased"
    base = _load(args.model, args.device, "attribute")
    debiased = None
    if args.debiased:
        debiased = _load(args.debiased, args.device, "attribute")
        require_same_architecture(base.architecture, debiased.architecture)
    console.print(f"attributing bias to heads with {', '.join(config.methods)}")
    selected = attribute(base, config, run.root, debiased, base_label, debiased_name)
    heads_path = run.table("heads")
    base_tables = effect_tables(heads_path, base_label)
    out.print(_top_heads_table(base_tables, config.selection_method, base_label, args.top))
    _print_agreement(base_tables, base_label)
    out.print(f"heads: {heads_path}")
    if debiased is None:
        return 0
    _print_agreement(effect_tables(heads_path, debiased_name), debiased_name)
    table = Table(
        title=f"successfully debiased heads ({config.selection_method}: |effect| fell from "
        f"{base_label} to {debiased_name}, logits)"
    )
    for column in ("layer", "head", "effect before", "effect after", "drop"):
        table.add_column(column, justify="right")
    for row in selected[: args.top]:
        table.add_row(
            str(row.layer), str(row.head), f"{row.effect_before:+.4f}", f"{row.effect_after:+.4f}", f"{row.drop:.4f}"
        )
    out.print(table)
    selected_path = run.table("selected_heads")
    if selected:
        out.print(f"{len(selected)} heads selected: {selected_path}")
    else:
        console.print(
            f"[yellow]no head's |effect| fell[/] from {base_label} to {debiased_name}: {selected_path} "
            "is empty; the prosocial modes need at least one head (debias longer or relax top_k / min_drop)"
        )
    return 0


# --- CDA debiasing -------------------------------------------------------------------------


def run_debias_command(args: argparse.Namespace) -> int:
    """``workbench debias``: CDA + continued training; reports the checkpoint and lines changed."""
    from workbench.finetune.cda import NoGenderedWordsError
    from workbench.finetune.debias import PROVENANCE_FILE, DebiasConfig, debias

    run = _run_folder(args.run)
    tables = read_config_tables(args.config)
    config = stage_config(args.config, tables, "debias", DebiasConfig.from_dict)
    require_input_file(args.config, "debias", "corpus_path", config.corpus_path)
    if config.selection_path is not None:  # a selection of another corpus is refused before the model loads
        from workbench.finetune.cda import read_corpus
        from workbench.finetune.selection import selected_texts

        require_input_file(args.config, "debias", "selection_path", config.selection_path)
        corpus = read_corpus(Path(config.corpus_path), config.column)
        selected_texts(corpus, Path(config.selection_path), config.selection_arm)
    bias_config = _bias_config(args.config, tables) if "bias" in tables else None
    loaded = _load(args.model, args.device, "debias")
    console.print(f"CDA debiasing: {config.steps} steps of {config.batch_size} texts")
    try:
        checkpoint = debias(loaded.model, loaded.tokenizer, config, run.root, loaded.model_id)
    except NoGenderedWordsError as error:
        raise NoGenderedWordsError(f"{config.corpus_path}: {error}") from None
    provenance = json.loads((checkpoint / PROVENANCE_FILE).read_text(encoding="utf-8"))
    changed, original = provenance["lines_changed"], provenance["lines_original"]
    out.print(f"checkpoint: {checkpoint}")
    if changed == 0:
        console.print(
            f"[yellow]CDA changed nothing[/]: none of the {original} lines of {config.corpus_path} has a gendered "
            "word, so this checkpoint is plain continued training, not a debiased model"
        )
    else:
        out.print(
            f"CDA changed {changed} of {original} corpus lines (their gender-swapped copies were added); "
            f"final loss {provenance['final_loss']:.3f} nats/token"
        )
    if bias_config is not None:
        _measure_and_record(loaded.model, loaded.tokenizer, bias_config, run, config.checkpoint_name)
        _print_bias_levels(run)
    return 0


# --- fine-tuning ---------------------------------------------------------------------------


def require_heads_in_range(path: Path, architecture: ModelArchitecture, model_name: str) -> None:
    """Refuse a selected_heads.csv row whose layer or head does not exist in the model."""
    from workbench.finetune.prosocial import HeadParameterError, read_selected_heads

    for line, head in enumerate(read_selected_heads(path), start=2):
        if not (0 <= head.layer < architecture.n_layers and 0 <= head.head < architecture.n_heads):
            raise HeadParameterError(
                f"{path}:{line}: head (layer {head.layer}, head {head.head}) is out of range for {model_name} "
                f"(layers 0..{architecture.n_layers - 1}, heads 0..{architecture.n_heads - 1}); rerun "
                "`workbench attribute` with this model's base and debiased checkpoints"
            )


def _finetune_table(args: argparse.Namespace, tables: dict[str, dict[str, Any]], run: RunFolder) -> dict[str, Any]:
    """The [finetune] table with the command line's mode, the per-mode checkpoint folder and,
    for the prosocial modes, the selected heads and debiased checkpoint filled in."""
    from workbench.finetune.debias import DebiasConfig
    from workbench.finetune.train import FinetuneConfig

    if "finetune" not in tables:
        raise DebiasingConfigError(
            f"{args.config}: no [finetune] table, which this command needs; see {EXAMPLE_CONFIG}"
        )
    table = dict(tables["finetune"])
    mode = args.mode or table.get("mode", FinetuneConfig.mode)
    table["mode"] = mode
    table["checkpoint_name"] = f"{table.get('checkpoint_name', FinetuneConfig.checkpoint_name)}-{mode}"
    if "prosocial" in mode:
        debiased_name = tables.get("debias", {}).get("checkpoint_name", DebiasConfig.checkpoint_name)
        defaults = {
            "selected_heads_path": (args.selected_heads, run.table("selected_heads")),
            "debiased_checkpoint": (args.debiased, run.checkpoint(debiased_name)),
        }
        for key, (given, fallback) in defaults.items():
            table[key] = str(given or table.get(key) or fallback)
    return table


def _require_prosocial_inputs(args: argparse.Namespace, config: FinetuneConfig, loaded: LoadedModel) -> None:
    from transformers import AutoConfig

    from workbench.attribution.selection import require_same_architecture
    from workbench.finetune.train import WEIGHTS_FILE
    from workbench.models.architecture import ModelArchitecture

    heads, debiased = config.prosocial_paths()
    if not heads.is_file():
        raise FileNotFoundError(
            f"{heads} does not exist; run `workbench attribute --model BASE --debiased DEBIASED` first "
            "or pass --selected-heads"
        )
    if not (debiased / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{debiased} holds no {WEIGHTS_FILE}; run `workbench debias` first or pass --debiased DIR"
        )
    require_same_architecture(loaded.architecture, ModelArchitecture.from_config(AutoConfig.from_pretrained(debiased)))
    require_heads_in_range(heads, loaded.architecture, args.model)


def _fine_tuned_modes_table(run: RunFolder) -> Table:
    from workbench.finetune.train import RESULT_FILE

    table = Table(title="fine-tuned checkpoints (held-out task accuracy)")
    for column in ("checkpoint", "mode", "steps", "train / held-out", "final train loss", "accuracy"):
        table.add_column(column, justify="right")
    for path in sorted(run.checkpoints.glob(f"*/{RESULT_FILE}")):
        record = json.loads(path.read_text(encoding="utf-8"))
        result = record["result"]
        table.add_row(
            path.parent.name,
            record["config"]["mode"],
            str(result["steps"]),
            f"{result['n_train']} / {result['n_held_out']}",
            f"{result['final_train_loss']:.4f}",
            f"{result['held_out_accuracy']:.3f}",
        )
    return table


def run_finetune_command(args: argparse.Namespace) -> int:
    """``workbench finetune``: fine-tune (resumable), report accuracy, measure and compare bias."""
    from workbench.finetune.train import FinetuneConfig, finetune

    run = _run_folder(args.run)
    tables = read_config_tables(args.config)
    config = stage_config(
        args.config, {"finetune": _finetune_table(args, tables, run)}, "finetune", FinetuneConfig.from_dict
    )
    require_input_file(args.config, "finetune", "data_path", config.data_path)
    bias_config = _bias_config(args.config, tables)
    loaded = _load(args.model, args.device, "finetune", bias_config)
    if "prosocial" in config.mode:
        _require_prosocial_inputs(args, config, loaded)
    folder = run.checkpoint(config.checkpoint_name)
    done = sorted(folder.glob("step-*"))
    if done:
        console.print(f"resuming from {done[-1]}")
    console.print(f"fine-tuning {args.model} on {config.task} ({config.mode})")
    result = finetune(loaded.model, loaded.tokenizer, config, run.root, stop_after_steps=args.stop_after_steps)
    if result is None:
        out.print(
            f"stopped after step {args.stop_after_steps}: {folder / f'step-{args.stop_after_steps:06d}'}; "
            "rerun without --stop-after-steps to resume"
        )
        return 0
    out.print(
        f"{config.checkpoint_name}: held-out accuracy {result.held_out_accuracy:.3f} on {result.n_held_out} "
        f"examples after {result.steps} steps (final train loss {result.final_train_loss:.4f}); {folder}"
    )
    _measure_and_record(loaded.model, loaded.tokenizer, bias_config, run, config.checkpoint_name)
    out.print(_fine_tuned_modes_table(run))
    _print_bias_levels(run)
    return 0
