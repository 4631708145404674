"""Run-wide protocol options: the template family, the turn separator and the public scripts' turn rules.

Every option but ``family`` and ``eos_token`` is off by default and reproduces one behaviour of a
paper's script that the workbench does not do on its own (``docs/protocols.md`` §1.4, §4, §5):

- ``baseline_round``: the mechanism runs' chain (``qzm233/SuperficialMoralSelfCorrection@342b270
  mechanism/run_inference.py``, ``1.run_inference.py``): round 0 is the uninstructed question,
  answered on its own (``if round_ >= 2: query = history + "\\n" + query`` and ``if round_ >= 1:
  history = ...``, so no later round sees it), then the condition's own rounds follow. With
  ``rounds = 8`` and ``intrinsic``: [baseline, instructed, review x 6].
- ``collapse_answers``: paper 2's BBQ answer collapse (``mechanism/inference_feedback_cot.py``,
  ``get_bbq_result``): an answer turn is replaced by the first of ``(a)``, ``(b)``, ``(c)`` (in label
  order) that occurs in it before later turns see it; an answer with none of them ends the dialogue.
- ``turn_parity``: the same script decides by the parity of a turn's 1-based number, not by its
  kind: odd turns get 256 new tokens (``rationale_tokens``) and are never collapsed, even turns get
  8 (``answer_tokens``), and feedback is asked for only after odd turns. With CoT that is the same
  as deciding by kind; without CoT rounds 0, 2, ... become long answers. BBQ only, family paper2.
- ``hide_unreviewed_turns``: the script's ``continue`` before the history update: in a feedback
  condition, a BBQ turn after which no feedback is asked for is left out of the transcript that
  later turns see (with CoT every answer turn, the critic reviewing rationales). Family paper2.

``demonstrations`` is not a script rule but the run's item pool for in-context demonstrations
(:mod:`workbench.protocols.demonstrations`): the conditions with ``k > 0`` draw their examples from
it, so it must hold every item of the run (``ProtocolSettings.transcript_rules(items)`` builds it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from workbench.protocols.demonstrations import DemonstrationPool

TemplateFamily = Literal["paper2", "paper4"]
TEMPLATE_FAMILIES: tuple[str, ...] = ("paper2", "paper4")


class TranscriptRuleError(ValueError):
    """A protocol option that does not exist, or options that do not go together."""


@dataclass(frozen=True)
class TranscriptRules:
    """Settings shared by every condition of a run.

    Attributes:
        family: ``"paper2"`` (instruction x CoT x feedback templates, qzm233 scripts) or
            ``"paper4"`` (HaitaoMao scripts). In faithful mode it also picks the transcript rule.
        eos_token: the string closing each turn in the faithful transcript (``"</s>"`` for
            Llama-2/Mistral, ``"<|eot_id|>"`` for Llama-3, ``"<end_of_turn>"`` for Gemma-2).
        baseline_round: prepend paper 3's stand-alone uninstructed round 0 (module docstring).
        collapse_answers: paper 2's BBQ answer collapse and dialogue ending.
        turn_parity: paper 2's odd/even turn rules (BBQ; family paper2).
        hide_unreviewed_turns: paper 2's ``continue`` quirk (BBQ feedback conditions; family paper2).
        demonstrations: the pool in-context demonstrations are drawn from; ``None`` when no
            condition shows any (a condition with ``k > 0`` then stops with an error naming the fix).
    """

    family: TemplateFamily = "paper2"
    eos_token: str = "</s>"
    baseline_round: bool = False
    collapse_answers: bool = False
    turn_parity: bool = False
    hide_unreviewed_turns: bool = False
    demonstrations: DemonstrationPool | None = None

    def __post_init__(self) -> None:
        if self.family not in TEMPLATE_FAMILIES:
            raise TranscriptRuleError(f"family = {self.family!r} is unknown; choose paper2 or paper4")
        for name in ("turn_parity", "hide_unreviewed_turns"):
            if getattr(self, name) and self.family != "paper2":
                raise TranscriptRuleError(
                    f"{name} = true reproduces a rule of paper 2's script (family paper2); "
                    f"family = {self.family!r} has no such rule"
                )


DEFAULT_PROTOCOL = TranscriptRules()
"""The defaults: family paper2, ``"</s>"``, no script rule switched on."""
