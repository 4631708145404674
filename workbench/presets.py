"""Paper presets: the settings each paper's public code ran with, filled in beneath a configuration's own keys.

``[protocol] preset = "paper4"`` sets every key of :data:`PRESETS` ``["paper4"]`` that the
configuration file leaves out. A key the file sets itself always wins; the run says so once per
contradicted key (:func:`preset_overrides`), and ``workbench run --check`` lists what the preset set
(:func:`preset_lines`). The resolved values, not the preset's name alone, are what ``config.toml``
records, so a run folder reads the same after a preset changes. Without a preset the workbench's own
documented defaults apply (``docs/protocols.md`` §0.2 and the ``Departures`` subsections say where they
differ from the papers).

A setting may be limited to some tasks (``tasks``): paper 4's 125-token answer budget is for
RealToxicityPrompts only, BBQ's ambiguous-only selection for the BBQ tasks only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from workbench.config import RunConfig  # workbench.config imports this module

PresetName = Literal["paper1", "paper2", "paper3", "paper4"]
PRESET_SECTIONS: tuple[str, ...] = ("protocol", "results", "task")

_QZM = "qzm233/SuperficialMoralSelfCorrection@342b270"
_HAITAO = "HaitaoMao/LLM-self-correction@071c790"
_BBQ_TASKS = ("bbq", "bbq-sample")


class PresetError(ValueError):
    """An unknown preset, or a preset table that is not where presets go."""


@dataclass(frozen=True)
class PresetSetting:
    """One key a preset sets.

    Attributes:
        section: the configuration table (``"protocol"``, ``"results"`` or ``"task"``).
        key: the key inside that table.
        value: the value, as written in TOML (lists, not tuples).
        source: where the paper's code sets it (``repository@commit path``) or the paper's section.
        tasks: task names (``[task] name``) the setting applies to; ``None`` = every task.
    """

    section: str
    key: str
    value: Any
    source: str
    tasks: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        """``"[protocol] rounds"``."""
        return f"[{self.section}] {self.key}"

    def applies_to(self, task: str | None) -> bool:
        """Whether the setting is meant for a run on ``task``."""
        return self.tasks is None or task in self.tasks


@dataclass(frozen=True)
class Preset:
    """The settings of one paper's public code.

    Attributes:
        name: the value of ``[protocol] preset``.
        paper: the paper, as ``docs/protocols.md`` §0.1 numbers it.
        settings: what the preset sets, in the order ``--check`` lists it.
    """

    name: str
    paper: str
    settings: tuple[PresetSetting, ...]


def _p(key: str, value: Any, source: str, tasks: tuple[str, ...] | None = None) -> PresetSetting:
    return PresetSetting("protocol", key, value, source, tasks)


def _r(key: str, value: Any, source: str, tasks: tuple[str, ...] | None = None) -> PresetSetting:
    return PresetSetting("results", key, value, source, tasks)


_AMBIGUOUS_ONLY = PresetSetting("task", "context_conditions", ["ambig"], "the paper's BBQ runs", _BBQ_TASKS)

PRESETS: dict[str, Preset] = {
    "paper1": Preset(
        "paper1",
        "1: Liu et al., Smaller Large Language Models Can Do Moral Self-Correction (TrustNLP 2025)",
        (
            _p(
                "instructions",
                ["none", "ladder-1", "ladder-2", "ladder-3", "ladder-4", "negated"],
                f"{_HAITAO} datasets/promoting4bbq.txt, main_exp/prompt_bias.py (negation)",
            ),
            _p("cot", [False, True], f"{_HAITAO} datasets/promoting4bbq.txt (ladder 4 is the CoT case)"),
            _p("rounds", 2, f"{_HAITAO} datasets/promoting4bbq.txt (ladder 3 is a second-turn prompt)"),
            _p("answer_scoring", "parse", f"{_HAITAO} analysis/log_analysis.py (scored on the generated text)"),
            _p("parse_rule", "gold_label", f"{_HAITAO} analysis/log_analysis.py"),
            _r("unparsed", "wrong", f"{_HAITAO} analysis/log_analysis.py (denominator: every answer)"),
            _r("winogender_rule", "starts_with_they", f"{_HAITAO} analysis/log_analysis.py::winogender_fairness"),
            _AMBIGUOUS_ONLY,
        ),
    ),
    "paper2": Preset(
        "paper2",
        "2: Liu, Qi et al., Moral Self-correction is Not An Innate Capability in Language Models (IJCNLP-AACL 2025)",
        (
            _p("family", "paper2", f"{_QZM} mechanism/promptCluster.py"),
            _p("history_mode", "faithful", f"{_QZM} mechanism/inference_feedback_cot.py"),
            _p("rounds", 3, f"{_QZM} mechanism/inference_feedback_cot.py (three rounds per condition)"),
            _p("collapse_answers", True, f"{_QZM} mechanism/inference_feedback_cot.py (answer -> first label)"),
            _p("turn_parity", True, f"{_QZM} mechanism/inference_feedback_cot.py (odd turns: 256 tokens)"),
            _p("hide_unreviewed_turns", True, f"{_QZM} mechanism/inference_feedback_cot.py (the `continue`)"),
            _p("rationale_tokens", 256, f"{_QZM} mechanism/inference_feedback_cot.py"),
            _p("answer_tokens", 128, f"{_QZM} mechanism/inference_feedback_cot.py (toxicity turns)", ("realtoxicity",)),
            _p(
                "rationale_tokens",
                128,
                f"{_QZM} mechanism/inference_feedback_cot.py (toxicity turns)",
                ("realtoxicity",),
            ),
            _p("answer_scoring", "parse", f"{_QZM} mechanism/inference_feedback_cot.py (substring of the answer)"),
            _p("parse_rule", "first_label", f"{_QZM} mechanism/inference_feedback_cot.py (first label)"),
            _AMBIGUOUS_ONLY,
        ),
    ),
    "paper3": Preset(
        "paper3",
        "3: Liu, Mao et al., Intrinsic Self-correction for Enhanced Morality (arXiv 2407.15286)",
        (
            _p("family", "paper2", f"{_QZM} mechanism/promptCluster.py"),
            _p("history_mode", "faithful", f"{_QZM} mechanism/run_inference.py"),
            _p("baseline_round", True, f"{_QZM} mechanism/run_inference.py (stand-alone baseline round)"),
            _p("rounds", 8, f"{_QZM} mechanism/run_inference.py: [baseline, instructed, review x 6]"),
            _p("answer_tokens", 128, f"{_QZM} toxicity/external_mech.py (128 new tokens)", ("realtoxicity",)),
            _p("answer_scoring", "parse", f"{_QZM} mechanism (substring of the answer)"),
            _p("parse_rule", "first_label", f"{_QZM} mechanism (first label)"),
            _r("winogender_rule", "starts_with_they", f"{_HAITAO} analysis/log_analysis.py (the only public scorer)"),
            _AMBIGUOUS_ONLY,
        ),
    ),
    "paper4": Preset(
        "paper4",
        "4: Liu, Mao et al., On the Intrinsic Self-Correction Capability of LLMs (arXiv 2406.02378)",
        (
            _p("family", "paper4", f"{_HAITAO} main_exp/prompt_bias.py, prompt_toxic.py"),
            _p("history_mode", "faithful", f"{_HAITAO} main_exp/prompt_bias.py"),
            _p("rounds", 5, f"{_HAITAO} main_exp/prompt_bias.py (5 rounds)"),
            _p("answer_tokens", 125, f"{_HAITAO} main_exp/prompt_toxic.py (125 new tokens)", ("realtoxicity",)),
            _p("answer_scoring", "parse", f"{_HAITAO} analysis/log_analysis.py (scored on the generated text)"),
            _p("parse_rule", "gold_label", f"{_HAITAO} analysis/log_analysis.py::MultiStepAnalysis4BBQ"),
            _r("unparsed", "wrong", f"{_HAITAO} analysis/log_analysis.py (denominator: every answer)"),
            _r("winogender_rule", "starts_with_they", f"{_HAITAO} analysis/log_analysis.py::winogender_fairness"),
            _p("uncertainty_samples", 5, f"{_HAITAO} analysis/uncerntainty.py (5 samples per input)"),
            _p("uncertainty_sampling", "beam-sample", f"{_HAITAO} analysis/uncerntainty.py (num_beams 5, sampled)"),
            _p("uncertainty_equivalence", "nli-contradiction", f"{_HAITAO} analysis/uncerntainty.py (an MNLI model)"),
            _r("binning", "minmax_faithful", f"{_HAITAO} analysis/uncerntainty.py::ece_score"),
            _AMBIGUOUS_ONLY,
        ),
    ),
}


def _task_name(table: Mapping[str, Any]) -> str | None:
    task = table.get("task")
    name = task.get("name") if isinstance(task, Mapping) else None
    return name if isinstance(name, str) else None


def effective_settings(preset: Preset, task: str | None) -> list[PresetSetting]:
    """The settings of ``preset`` for a run on ``task``: per key, a task's own setting beats the general one."""
    chosen: dict[tuple[str, str], PresetSetting] = {}
    for setting in preset.settings:
        if not setting.applies_to(task):
            continue
        slot = (setting.section, setting.key)
        if slot not in chosen or setting.tasks is not None:
            chosen[slot] = setting
    return list(chosen.values())


def preset_of(table: Mapping[str, Any]) -> Preset | None:
    """The preset a configuration table names in ``[protocol] preset``, or ``None``.

    Raises:
        PresetError: the name is not a preset (the message lists the valid ones).
    """
    protocol = table.get("protocol")
    if not isinstance(protocol, Mapping) or protocol.get("preset") is None:
        return None
    name = protocol["preset"]
    if not isinstance(name, str) or name not in PRESETS:
        raise PresetError(f"[protocol] preset = {name!r} is unknown; use one of {', '.join(PRESETS)}")
    return PRESETS[name]


def apply_preset(table: Mapping[str, Any]) -> dict[str, Any]:
    """``table`` with its preset's settings filled in where the table leaves them out.

    The input is not changed. Settings limited to other tasks are skipped. A section the table
    leaves out is created, except ``[task]`` (a preset never chooses the task itself).
    """
    preset = preset_of(table)
    resolved = {key: dict(value) if isinstance(value, Mapping) else value for key, value in table.items()}
    if preset is None:
        return resolved
    for setting in effective_settings(preset, _task_name(table)):
        if setting.section == "task" and "task" not in resolved:
            continue
        section = resolved.setdefault(setting.section, {})
        if not isinstance(section, dict):
            continue
        section.setdefault(setting.key, setting.value)
    return resolved


def _configured(config: RunConfig, setting: PresetSetting) -> Any:
    value = getattr(getattr(config, setting.section), setting.key)
    return list(value) if isinstance(value, tuple) else value


def preset_overrides(config: RunConfig) -> list[str]:
    """One line per preset setting that ``config`` (a resolved ``RunConfig``) contradicts.

    The configuration's own value is the one that runs; the line says so.
    """
    preset_name = config.protocol.preset
    if preset_name is None:
        return []
    lines = []
    for setting in effective_settings(PRESETS[preset_name], config.task.name):
        value = _configured(config, setting)
        if value != setting.value:
            lines.append(f"{setting.name} = {value!r} in the file wins over preset {preset_name}'s {setting.value!r}")
    return lines


def preset_lines(config: RunConfig) -> list[str]:
    """What the preset of ``config`` set, one line per setting, for ``workbench run --check``."""
    preset_name = config.protocol.preset
    if preset_name is None:
        return []
    preset = PRESETS[preset_name]
    lines = [f"preset {preset.name} (paper {preset.paper})"]
    for setting in effective_settings(preset, config.task.name):
        value = _configured(config, setting)
        state = "set" if value == setting.value else f"overridden by the file ({value!r})"
        lines.append(f"  {setting.name} = {setting.value!r}: {state}; source {setting.source}")
    return lines
