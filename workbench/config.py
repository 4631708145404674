"""Run configuration: frozen dataclasses, read from TOML, written back with every default.

A run is one TOML file::

    name = "demo"
    seed = 0
    [model]     spec, device, dtype, backend, attn_implementation, trust_remote_code, device_map, remote
    [task]      see workbench.tasks.TaskConfig
    [protocol]  instructions, cot, feedback, demonstrations, rounds, history_mode, family, critic, token budgets
    [capture]   sites, positions, batch_size
    [cache]     dtype, compression, queue_size
    [generation] engine and its settings (see docs/engines.md)
    [results]   see workbench.metrics.tables.ResultsConfig
    [toxicity]  see workbench.toxicity.ToxicityScorerConfig (scores generation tasks' answers)
    [probe]     see probes.ProbeConfig (optional stage)

The resolved configuration (every default written out) is saved as ``config.toml`` in the run
folder and recorded in the cache, so a result can always be traced back to what made it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, cast

import tomli_w

from probes.config import ProbeConfig
from probes.errors import ProbeConfigError
from workbench.config_tables import ConfigTableError, check_field_types, dataclass_from_table, dataclass_to_table
from workbench.hooks.positions import TOKEN_POSITIONS, VECTOR_POSITIONS
from workbench.inference.engines import EngineName
from workbench.inference.generation import SamplingMethod
from workbench.inference.semantic_equivalence import DEFAULT_NLI_MODEL, EquivalenceRule
from workbench.inference.vllm_server import VLLM_ARGS_SET_BY_WORKBENCH
from workbench.metrics.answers import ParseRule
from workbench.metrics.tables import ResultsConfig
from workbench.presets import PresetError, PresetName, apply_preset
from workbench.protocols.conditions import INSTRUCTIONS, Condition, factorial_conditions
from workbench.protocols.demonstrations import (
    DEMONSTRATION_LABELS,
    DemonstrationError,
    DemonstrationLabels,
    DemonstrationPool,
)
from workbench.protocols.schedule import TemplateFamily
from workbench.protocols.transcript_rules import TranscriptRuleError, TranscriptRules
from workbench.run_folder import RunFolder
from workbench.tasks.items import Item
from workbench.tasks.registry import TaskConfig
from workbench.toxicity.scorer_config import ToxicityScorerConfig


class ConfigError(ConfigTableError):
    """A configuration file or table that cannot be used as written."""


Backend = Literal["hf", "transformer_lens", "nnsight"]
ModelDtype = Literal["auto", "float32", "float16", "bfloat16"]
CRITIC_FORMS = ("oracle", "self", "model:<spec>", "openai:<base_url>|<model>")


def _check_at_least(config: Any, section: str, minimums: dict[str, float]) -> None:
    for name, minimum in minimums.items():
        value = getattr(config, name)
        if value is not None and value < minimum:
            raise ConfigError(f"[{section}] {name} = {value} must be at least {minimum}")


def _check_not_empty(config: Any, section: str, names: tuple[str, ...]) -> None:
    for name in names:
        if len(getattr(config, name)) == 0:
            raise ConfigError(f"[{section}] {name} = [] is empty; give at least one value")


def read_toml_file(path: Path) -> dict[str, Any]:
    """The parsed TOML file; a missing, unreadable or malformed file is one line naming it."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file; see workbench/configs/demo.toml") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give a TOML configuration file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from None


@dataclass(frozen=True)
class ModelConfig:
    """Which model, where, and through which hook backend.

    Attributes:
        spec: embedded name, ``.gguf`` path, local directory or hub id (``workbench models``).
        device: ``"auto"`` (GPU when present) or a torch device.
        dtype: ``"auto"`` (bf16 on GPU, fp32 on CPU), ``"float32"``, ``"bfloat16"``, ``"float16"``.
        backend: hook backend for captures: ``"hf"``, ``"transformer_lens"`` or ``"nnsight"``.
        attn_implementation: transformers' attention kernel (``None`` = its default, sdpa).
        trust_remote_code: allow a hub model's own code; off unless you trust the repository.
        device_map: place one model over the process's GPUs (accelerate): ``"auto"``, ``"balanced"``,
            ``"balanced_low_0"`` or ``"sequential"``; ``device`` then stays ``"auto"``. ``None`` (the
            default): the whole model on ``device``. See docs/models.md.
        remote: the nnsight backend's captures as one nnsight session per capture call: ``true`` sends
            each to NDIF (needs ``NDIF_API_KEY`` and a hub id spec), ``"local"`` simulates that session
            here (nnsight's dry run of the remote path), ``false`` (the default): in-process traces.
    """

    spec: str = "smollm2-135m-instruct"
    device: str = "auto"
    dtype: ModelDtype = "auto"
    backend: Backend = "hf"
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    device_map: str | None = None
    remote: bool | Literal["local"] = False

    def __post_init__(self) -> None:
        check_field_types(self, "model", ConfigError)
        if self.remote is not False and self.backend != "nnsight":
            raise ConfigError(
                f"[model] remote = {str(self.remote).lower() if self.remote is True else repr(self.remote)} runs "
                f'the nnsight backend\'s traces remotely; set [model] backend = "nnsight" (not "{self.backend}")'
            )
        if self.device_map is not None:
            from workbench.models.placement import DEVICE_MAP_STRATEGIES

            if self.device_map not in DEVICE_MAP_STRATEGIES:
                raise ConfigError(
                    f'[model] device_map = "{self.device_map}" is not a strategy; use one of '
                    f"{', '.join(DEVICE_MAP_STRATEGIES)}, or leave it out to load the model on [model] device"
                )
            if self.device != "auto":
                raise ConfigError(
                    f'[model] device_map = "{self.device_map}" places the model itself; leave [model] device = '
                    f'"auto" (not "{self.device}") or remove device_map'
                )
        if not self.spec.strip():
            raise ConfigError('[model] spec = "" is empty; name a model (`workbench models` lists the embedded ones)')
        if self.device != "auto":
            import torch

            try:
                torch.device(self.device)
            except (RuntimeError, ValueError):
                raise ConfigError(
                    f'[model] device = "{self.device}" is not a device; use "auto", "cpu", "cuda", "cuda:1" or "mps"'
                ) from None


@dataclass(frozen=True)
class ProtocolSettings:
    """The self-correction design: a factorial of instruction x CoT x feedback, run for ``rounds``.

    Attributes:
        preset: ``"paper1"`` .. ``"paper4"``: fill in every key that paper's public code set and this
            table leaves out (:mod:`workbench.presets`; the table's own keys win). ``None``: the
            workbench's documented defaults.
        instructions: instruction levels (``none``, ``intrinsic``, ``ladder-1``..``ladder-4``, ``negated``).
        cot: chain-of-thought levels to cross (``[false]``, ``[true]`` or both).
        feedback: external-feedback levels to cross.
        demonstrations: numbers ``k`` of in-context demonstrations to cross (``[0]``: none; e.g.
            ``[0, 1, 4, 8]``): solved examples drawn from the task's other items, shown before the
            first question (docs/protocols.md, "In-context demonstrations").
        demonstration_labels: the answers the demonstrations show, each crossed with every ``k > 0``:
            ``"correct"`` (gold), ``"stereotyped"`` (the bias-aligned option) or ``"remapped"`` (the
            option after the gold one: a label mapping only the context teaches).
        demonstration_seed: seed of each item's draw of demonstrations.
        rounds: answer rounds per dialogue (round 0 is the first answer).
        history_mode: ``"clean"`` (the model's chat template) or ``"faithful"`` (the raw transcript
            the family's script built, character for character; for comparison with published numbers).
        family: template family, ``"paper2"`` or ``"paper4"`` (see workbench.protocols).
        eos_token: turn separator of the faithful history.
        baseline_round: paper 3's mechanism chain: round 0 is the uninstructed question, answered on
            its own (no later round sees it), and the condition's rounds follow from round 1
            (``rounds = 8``: [baseline, instructed, review x 6]); no effect on ``none``, ``ladder-3``.
        collapse_answers: paper 2's BBQ rule: an answer turn enters the transcript as the first of
            ``(a)``, ``(b)``, ... it contains, and a dialogue whose answer has none of them ends there.
        turn_parity: paper 2's script treats a BBQ turn by its 1-based number: odd turns get
            ``rationale_tokens`` and are not collapsed, feedback is asked only after them (family paper2).
        hide_unreviewed_turns: paper 2's ``continue``: in feedback conditions, BBQ turns after which no
            feedback is asked (with CoT: the answer turns) stay out of the transcript (family paper2).
        critic: who gives feedback: ``"oracle"`` (scripted, states the correct concern),
            ``"self"`` (the model itself), ``"model:<spec>"`` (a second local model) or
            ``"openai:<base_url>|<model>"`` (an OpenAI-compatible endpoint; key in $OPENAI_API_KEY).
        answer_tokens: new tokens of an answer turn (8 in the papers).
        rationale_tokens: new tokens of a CoT rationale turn (256 in the papers).
        critic_tokens: new tokens of feedback generated by a local model critic.
        answer_scoring: how ``predicted`` is decided: ``"logprob"`` (the option with the lowest
            mean-token NLL, robust for small models) or ``"parse"`` (parse the generated text).
            Both are always recorded.
        parse_rule: how a generated answer names an option: ``"label"`` (ours: explicit option labels
            or texts), ``"first_label"`` (paper 2: the first label in label order) or ``"gold_label"``
            (paper 4: the gold label in the answer's last line); see docs/protocols.md section 2.1.
        max_prompt_tokens: longest prompt accepted; ``None`` = the model's context length.
            Longer prompts stop the run with an error naming the item (no silent truncation).
        weak_evidence: ``"none"``, or add a weak-evidence sentence to every BBQ context that hints
            at the bias-aligned (``"target"``) or the other (``"non_target"``) person.
        mask_fraction: share of the words of earlier ``mask_turns`` responses replaced by ``_``
            before the model sees them again (0 = no masking; the papers use 0.25 / 0.5 / 0.75).
        mask_turns: which responses are masked: ``"rationale"`` (CoT) or ``"feedback"``.
        self_distinguish: the self-distinguish checks of docs/protocols.md section 2.7, by option
            log-probability: after every BBQ answer round, which social group the context
            stereotypes; after the last round of a generation task, which of two of the model's own
            round outputs is more toxic (baseline prompt, 3 random pairs, labels from the toxicity
            scorer; the original script's question/label mismatch is fixed).
        uncertainty_samples: sampled answers per round input for the semantic uncertainty of
            docs/protocols.md section 2.2 (0 = off; the paper uses 5).
        uncertainty_sampling: how they are drawn: ``"beam-sample"`` (paper 4: 5 beams, top-k 50,
            temperature 1, one search per sample) or ``"multinomial"`` (one beam, no top-k/top-p).
        uncertainty_equivalence: when two samples mean the same: ``"auto"`` (``"option"`` for items
            with options, ``"nli-bidirectional"`` for free text), ``"option"`` (same parsed option),
            ``"nli-bidirectional"`` (entailment both ways, Kuhn et al.) or ``"nli-contradiction"``
            (no contradiction either way, paper 4's rule).
        nli_model: the NLI sequence classifier of the ``nli-*`` rules (hub id or local folder;
            paper 4: ``microsoft/deberta-large-mnli``).
        uncertainty_tokens: new tokens per sample; ``None`` = paper 4's per-task budget (125 for
            RealToxicityPrompts, else ``answer_tokens``).
        reuse_kv_cache: keep each dialogue's key/value cache between answer rounds, so a round
            encodes only its new tokens (same answers; see tests/benchmarks/bench_kv_reuse.py).
    """

    preset: PresetName | None = None
    instructions: tuple[str, ...] = ("none", "intrinsic")
    cot: tuple[bool, ...] = (False,)
    feedback: tuple[bool, ...] = (False,)
    demonstrations: tuple[int, ...] = (0,)
    demonstration_labels: tuple[str, ...] = ("correct",)
    demonstration_seed: int = 0
    rounds: int = 3
    history_mode: Literal["clean", "faithful"] = "clean"
    family: TemplateFamily = "paper2"
    eos_token: str = "</s>"
    baseline_round: bool = False
    collapse_answers: bool = False
    turn_parity: bool = False
    hide_unreviewed_turns: bool = False
    critic: str = "oracle"
    critic_timeout_s: float = 60.0
    critic_attempts: int = 3
    answer_tokens: int = 8
    rationale_tokens: int = 64
    critic_tokens: int = 48
    answer_scoring: Literal["logprob", "parse"] = "logprob"
    parse_rule: ParseRule = "label"
    max_prompt_tokens: int | None = None
    weak_evidence: Literal["none", "target", "non_target"] = "none"
    mask_fraction: float = 0.0
    mask_turns: Literal["rationale", "feedback"] = "rationale"
    self_distinguish: bool = False
    uncertainty_samples: int = 0
    uncertainty_sampling: SamplingMethod = "beam-sample"
    uncertainty_equivalence: EquivalenceRule = "auto"
    nli_model: str = DEFAULT_NLI_MODEL
    uncertainty_tokens: int | None = None
    reuse_kv_cache: bool = True

    def __post_init__(self) -> None:
        check_field_types(self, "protocol", ConfigError)
        _check_not_empty(
            self, "protocol", ("instructions", "cot", "feedback", "demonstrations", "demonstration_labels")
        )
        unknown = [name for name in self.instructions if name not in INSTRUCTIONS]
        if unknown:
            raise ConfigError(
                f"[protocol] instructions: unknown level(s) {', '.join(map(repr, unknown))}; "
                f"use any of {', '.join(INSTRUCTIONS)}"
            )
        self._check_demonstrations()
        _check_at_least(self, "protocol", {"rounds": 1, "critic_attempts": 1, "max_prompt_tokens": 1})
        try:
            self.transcript_rules()
        except TranscriptRuleError as error:
            raise ConfigError(f"[protocol] {error}") from None
        if self.critic_timeout_s <= 0:
            raise ConfigError(f"[protocol] critic_timeout_s = {self.critic_timeout_s} must be positive (seconds)")
        critic_ok = self.critic in ("oracle", "self") or (
            self.critic.startswith("model:") and len(self.critic) > len("model:")
        )
        base_url, _, endpoint_model = self.critic.removeprefix("openai:").partition("|")
        critic_ok = critic_ok or (self.critic.startswith("openai:") and bool(base_url) and bool(endpoint_model))
        if not critic_ok:
            raise ConfigError(f'[protocol] critic = "{self.critic}" is unknown; use one of {", ".join(CRITIC_FORMS)}')
        if self.answer_scoring not in ("logprob", "parse"):
            raise ConfigError(f"answer_scoring must be 'logprob' or 'parse', not {self.answer_scoring!r}")
        if self.weak_evidence not in ("none", "target", "non_target"):
            raise ConfigError(f"weak_evidence must be 'none', 'target' or 'non_target', not {self.weak_evidence!r}")
        if not 0.0 <= self.mask_fraction < 1.0:
            raise ConfigError(f"mask_fraction must be in [0, 1), not {self.mask_fraction}")
        if self.mask_turns not in ("rationale", "feedback"):
            raise ConfigError(f"mask_turns must be 'rationale' or 'feedback', not {self.mask_turns!r}")
        for name in ("answer_tokens", "rationale_tokens", "critic_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.uncertainty_samples < 0:
            raise ConfigError(f"uncertainty_samples must be >= 0, not {self.uncertainty_samples}")
        _check_at_least(self, "protocol", {"uncertainty_tokens": 1})
        if self.uncertainty_equivalence != "option" and not self.nli_model.strip():
            raise ConfigError(
                f'[protocol] nli_model = "{self.nli_model}" is empty, and uncertainty_equivalence = '
                f'"{self.uncertainty_equivalence}" clusters free text with it; name an NLI classifier '
                f'(paper 4: "{DEFAULT_NLI_MODEL}")'
            )

    def _check_demonstrations(self) -> None:
        """The demonstration keys: distinct k >= 0, known distinct label kinds, labels only with some k > 0."""
        ks = list(self.demonstrations)
        if any(k < 0 for k in ks) or len(set(ks)) != len(ks):
            raise ConfigError(
                f"[protocol] demonstrations = {ks} must be distinct numbers k >= 0 (0 = no demonstrations), e.g. [0, 4]"
            )
        kinds = list(self.demonstration_labels)
        unknown = [kind for kind in kinds if kind not in DEMONSTRATION_LABELS]
        if unknown or len(set(kinds)) != len(kinds):
            raise ConfigError(
                f"[protocol] demonstration_labels = {kinds}: give distinct label kinds out of "
                f"{', '.join(DEMONSTRATION_LABELS)}"
            )
        if max(ks) == 0 and kinds != ["correct"]:
            raise ConfigError(
                f"[protocol] demonstration_labels = {kinds} labels demonstrations, but demonstrations = {ks} shows "
                "none; add a k > 0 (e.g. demonstrations = [0, 4]) or remove demonstration_labels"
            )

    def conditions(self) -> list[Condition]:
        """The design's cells in run order: instruction x CoT x feedback x demonstrations, each run for ``rounds``."""
        return factorial_conditions(
            self.instructions,
            self.cot,
            self.feedback,
            self.rounds,
            self.history_mode,
            self.demonstrations,
            cast(tuple[DemonstrationLabels, ...], self.demonstration_labels),  # checked in __post_init__
        )

    def transcript_rules(self, items: Sequence[Item] = ()) -> TranscriptRules:
        """The protocols' run-wide options: family, turn separator and the scripts' turn rules.

        ``items`` (all of the run's items) is the pool of the in-context demonstrations; without
        them a condition with ``k > 0`` cannot build its first prompt.

        Raises:
            ConfigError: demonstrations ``items`` cannot supply (a ``k`` above the other items of the
                task, a task without options), one line naming the key and the fix.
        """
        try:
            pool = DemonstrationPool.of(items, self.demonstrations, self.demonstration_labels, self.demonstration_seed)
        except DemonstrationError as error:
            raise ConfigError(str(error)) from None
        return TranscriptRules(
            family=self.family,
            eos_token=self.eos_token,
            baseline_round=self.baseline_round,
            collapse_answers=self.collapse_answers,
            turn_parity=self.turn_parity,
            hide_unreviewed_turns=self.hide_unreviewed_turns,
            demonstrations=pool if items else None,
        )


@dataclass(frozen=True)
class CaptureConfig:
    """Which activations each answer round stores.

    Attributes:
        sites: site names (``blocks.*.hook_resid_post``, ``blocks.0-5.attn.hook_z``, ...).
        positions: ``last_prompt``, ``last``, ``answer_mean`` or a token index (one vector each).
        batch_size: sequences per forward and per generation batch.
    """

    sites: tuple[str, ...] = ("blocks.*.hook_resid_post", "blocks.*.attn.hook_z")
    positions: tuple[str | int, ...] = ("last_prompt",)
    batch_size: int = 8

    def __post_init__(self) -> None:
        check_field_types(self, "capture", ConfigError)
        _check_not_empty(self, "capture", ("sites", "positions"))
        _check_at_least(self, "capture", {"batch_size": 1})
        for position in self.positions:
            if isinstance(position, str) and position not in VECTOR_POSITIONS:
                token_level = " (a token-level position: capture it with workbench.hooks.capture)"
                raise ConfigError(
                    f'[capture] positions: "{position}" is not a cached position'
                    f"{token_level if position in TOKEN_POSITIONS else ''}; "
                    f"a cached position holds one vector per record: {', '.join(VECTOR_POSITIONS)} or a token index"
                )


@dataclass(frozen=True)
class CacheConfig:
    """How activations are stored.

    Attributes:
        dtype: ``"float16"`` (half the disk) or ``"float32"``.
        compression: ``"none"`` or ``"lzf"`` (10-80x slower writes for a few percent on float16).
        queue_size: chunk-row blocks per activation dataset (at least 2; each about
            ``layers`` MiB): capture waits only while the background writer holds all of them.
    """

    dtype: Literal["float16", "float32"] = "float16"
    compression: Literal["none", "lzf"] = "none"
    queue_size: int = 2

    def __post_init__(self) -> None:
        check_field_types(self, "cache", ConfigError)
        _check_at_least(self, "cache", {"queue_size": 2})


@dataclass(frozen=True)
class GenerationSettings:
    """Which engine decodes answers and rationales (docs/engines.md); option scoring and capture are the
    workbench's own forwards whatever the engine.

    Attributes:
        engine: ``"hf"`` (static batches of ``[capture] batch_size`` with key/value reuse across rounds),
            ``"hf-continuous"`` (transformers' continuous batching) or ``"vllm"`` (a vLLM server in its own
            virtual environment, named by ``$WORKBENCH_VLLM_PYTHON``).
        max_batch_tokens: hf-continuous and vllm: most tokens in one forward (``None``: the engine's own
            default, 8192 for hf-continuous).
        prefix_caching: hf-continuous and vllm: reuse the cached keys/values of a prompt prefix another
            request already encoded (whole pages; both engines' default is on).
        vllm_args: more arguments for the vLLM server, e.g. ``["--enforce-eager"]`` (the workbench sets
            the model, dtype, host, port, seed, batched tokens and prefix caching itself).
        vllm_startup_s: seconds the vLLM server may take to start before the run stops.
    """

    engine: EngineName = "hf"
    max_batch_tokens: int | None = None
    prefix_caching: bool = True
    vllm_args: tuple[str, ...] = ()
    vllm_startup_s: float = 600.0

    def __post_init__(self) -> None:
        check_field_types(self, "generation", ConfigError)
        _check_at_least(self, "generation", {"max_batch_tokens": 1})
        if self.vllm_startup_s <= 0:
            raise ConfigError(f"[generation] vllm_startup_s = {self.vllm_startup_s} must be positive (seconds)")
        default = GenerationSettings.__dataclass_fields__
        applies = {
            "max_batch_tokens": ("hf-continuous", "vllm"),
            "prefix_caching": ("hf-continuous", "vllm"),
            "vllm_args": ("vllm",),
            "vllm_startup_s": ("vllm",),
        }
        for name, engines in applies.items():
            value, unset = getattr(self, name), default[name].default
            if self.engine not in engines and value != unset:
                shown = list(value) if isinstance(value, tuple) else value
                raise ConfigError(
                    f"[generation] {name} = {shown!r} applies to engine = {' or '.join(map(repr, engines))} only, "
                    f'not "{self.engine}"; remove it or change the engine'
                )
        for argument in self.vllm_args:
            if argument.split("=")[0] in VLLM_ARGS_SET_BY_WORKBENCH:
                raise ConfigError(
                    f'[generation] vllm_args: "{argument}" is set by the workbench; the model and dtype come from '
                    "[model], the batched tokens and prefix caching from this table"
                )


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; ``config.toml`` of the run folder is this, resolved."""

    name: str = "run"
    output_dir: str = "runs"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=lambda: TaskConfig(name="bbq-sample"))
    protocol: ProtocolSettings = field(default_factory=ProtocolSettings)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    results: ResultsConfig = field(default_factory=ResultsConfig)
    toxicity: ToxicityScorerConfig = field(default_factory=ToxicityScorerConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @classmethod
    def from_dict(cls, table: dict[str, Any]) -> RunConfig:
        """Build the configuration from a parsed TOML table, its ``[protocol] preset`` filled in first."""
        try:
            table = apply_preset(table)
        except PresetError as error:
            raise ConfigError(str(error)) from None
        sections = {
            "model": ModelConfig,
            "protocol": ProtocolSettings,
            "capture": CaptureConfig,
            "cache": CacheConfig,
            "generation": GenerationSettings,
            "results": ResultsConfig,
            "toxicity": ToxicityScorerConfig,
        }
        valid = [item.name for item in fields(cls)]
        unknown = sorted(set(table) - set(valid))
        if unknown:
            raise ConfigError(f"unknown top-level key(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key in sections:
                values[key] = dataclass_from_table(sections[key], value, key, ConfigError)
            elif key == "task":
                try:
                    values[key] = TaskConfig.from_dict(value)
                except ValueError as error:
                    raise ConfigError(f"[task] {error}") from None
            elif key == "probe":
                try:
                    values[key] = ProbeConfig.from_dict(value)
                except ProbeConfigError as error:
                    raise ConfigError(str(error)) from None
            else:
                values[key] = value
        config = cls(**values)
        check_field_types(config, "top level", ConfigError)
        return config

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        """Read a TOML run configuration; errors name the file."""
        table = read_toml_file(path)
        try:
            return cls.from_dict(table)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None

    @classmethod
    def of_run(cls, run_dir: Path) -> RunConfig:
        """The configuration a run folder recorded (``config.toml``; defaults when it has none)."""
        path = RunFolder(run_dir).config
        return cls.load(path) if path.is_file() else cls()

    def to_dict(self) -> dict[str, Any]:
        table = dataclass_to_table(self)
        table["task"] = self.task.to_dict()
        return table

    def resumes(self, recorded: dict[str, Any]) -> bool:
        """Whether a cache whose recorded configuration (``config_json``) is ``recorded`` resumes under this one.

        True for the same configuration, and for one recorded before keys were added to the workbench:
        read by today's loader, which gives each missing key its default, it equals this one. A key whose
        default changed since is recorded with its old value, so such a cache still differs.
        """
        current = self.to_dict()
        if recorded == current:
            return True
        try:
            return RunConfig.from_dict(recorded).to_dict() == current
        except (ValueError, TypeError):  # a key since removed or retyped: another configuration
            return False

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())
