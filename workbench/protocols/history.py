"""How round k sees rounds 0..k-1: the clean chat-message history and the scripts' faithful strings.

Faithful mode rebuilds, character for character, the raw string each paper's script fed its model
(``docs/protocols.md`` §1.4). ``x_k`` is the filled template of turn k, ``y_k`` the reply as the
scripts keep it (``" ".join(reply.strip().split("\\n"))``) and ``eos`` the end-of-turn string:

- ``"paper2"``: ``qzm233/SuperficialMoralSelfCorrection@342b270 mechanism/inference_feedback_cot.py``
  (``get_bbq_result``, ``get_toxicity_result``) and ``feedback_answer.py``, every task::

      inp_k = history + "\\n" + x_k              # the first turn too
      history = inp_k + y_k + eos                # no strip, no duplication

- ``"paper2-mechanism"``: the mechanism runs (``mechanism/run_inference.py``,
  ``1.run_inference.py``): as ``"paper2"``, but the first turn the transcript holds is ``x_k``
  alone (``if round_ >= 2: query = history + "\\n" + query``).
- ``"paper4"``: ``HaitaoMao/LLM-self-correction@071c790 main_exp/prompt_bias.py`` (BBQ; also used
  for Winogender, whose script is not public)::

      inp_k = x_k if k == 1 else history + "\\n" + x_k
      history = history + inp_k.strip() + " " + y_k + eos

  ``history`` appends ``inp_k``, which already holds the old history, so from the third turn on
  earlier turns appear more than once: the quirk is kept on purpose, it is what the script ran.
- ``"paper4-toxicity"``: ``main_exp/prompt_toxic.py``: ``inp_k = history + x_k`` and
  ``history = history + x_k.strip() + " " + y_k + eos`` (the template alone is appended).

The dialogue given to these functions is the transcript the next turn sees: turns that a rule
keeps out of it (:mod:`workbench.protocols.schedule`) are removed by the caller.
"""

from __future__ import annotations

from typing import Literal

from workbench.protocols.dialogue import Dialogue, PendingTurn

ChatMessage = dict[str, str]
TranscriptRule = Literal["paper2", "paper2-mechanism", "paper4", "paper4-toxicity"]
TRANSCRIPT_RULES: tuple[str, ...] = ("paper2", "paper2-mechanism", "paper4", "paper4-toxicity")


def clean_messages(dialogue: Dialogue, pending: PendingTurn) -> list[ChatMessage]:
    """Chat messages for the pending turn: one user/assistant pair per earlier model turn, then
    the pending user message. The assistant prefix is not included: the runner appends
    ``pending.assistant_prefix`` after the chat template's generation prompt.
    """
    messages: list[ChatMessage] = []
    for turn in dialogue.model_turns:
        messages.append({"role": "user", "content": turn.user})
        messages.append({"role": "assistant", "content": turn.reply})
    messages.append({"role": "user", "content": pending.user})
    return messages


def script_reply(response: str) -> str:
    """A reply as the scripts keep it: stripped, newlines replaced by spaces."""
    return " ".join(response.strip().split("\n"))


def _model_input(history: str, template: str, rule: TranscriptRule, first: bool) -> str:
    """``inp_k`` from the history of the earlier turns and the filled template ``x_k``."""
    if rule == "paper2":
        return history + "\n" + template
    if rule == "paper4-toxicity":
        return history + template
    if rule in ("paper2-mechanism", "paper4"):
        return template if first else history + "\n" + template
    raise ValueError(f"unknown transcript rule {rule!r}; choose one of {', '.join(TRANSCRIPT_RULES)}")


def faithful_history(dialogue: Dialogue, eos_token: str = "</s>", rule: TranscriptRule = "paper2") -> str:
    """The script's ``history`` string after every model turn of ``dialogue`` (empty if none)."""
    history = ""
    for k, turn in enumerate(dialogue.model_turns):
        model_input = _model_input(history, turn.raw_prompt, rule, first=k == 0)
        reply = script_reply(turn.response)
        if rule in ("paper2", "paper2-mechanism"):
            history = model_input + reply + eos_token
        elif rule == "paper4":
            history = history + model_input.strip() + " " + reply + eos_token
        else:
            history = history + turn.raw_prompt.strip() + " " + reply + eos_token
    return history


def faithful_prompt(
    dialogue: Dialogue, pending: PendingTurn, eos_token: str = "</s>", rule: TranscriptRule = "paper2"
) -> str:
    """The raw model input ``inp_k`` of the pending turn (its assistant prefix is already inside)."""
    history = faithful_history(dialogue, eos_token, rule)
    return _model_input(history, pending.raw_prompt, rule, first=not dialogue.model_turns)
