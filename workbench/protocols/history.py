"""How round k sees rounds 0..k-1: the clean chat-message history and the faithful MSU string.

Faithful mode reproduces ``HaitaoMao/LLM-self-correction`` ``main_exp/prompt_bias.py`` @071c790
(docs/protocols.md §1.4) exactly::

    history = ""
    for k, x_k in enumerate(turn_prompts, start=1):
        inp_k = x_k if k == 1 else history + separator + x_k
        y_k = generate(inp_k)
        history = history + inp_k.strip() + " " + y_k + eos

``history`` appends ``inp_k``, which already holds the old history, so from the third turn on the
earlier turns appear more than once in the context. That quirk is kept on purpose (it is what the
papers ran); use the clean mode for a transcript without it. Newlines in a response are replaced by
spaces before it enters the history, as in the scripts. The separator is ``"\\n"`` (BBQ,
Winogender) or ``""`` (toxicity, ``inp_k = history + x_k``).
"""

from __future__ import annotations

from workbench.protocols.dialogue import Dialogue, PendingTurn

ChatMessage = dict[str, str]


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


def faithful_history(dialogue: Dialogue, eos_token: str = "</s>", separator: str = "\n") -> str:
    """The scripts' ``history`` string after every model turn of ``dialogue`` (empty if none)."""
    history = ""
    for k, turn in enumerate(dialogue.model_turns):
        model_input = turn.raw_prompt if k == 0 else history + separator + turn.raw_prompt
        response = turn.response.replace("\n", " ")
        history = history + model_input.strip() + " " + response + eos_token
    return history


def faithful_prompt(dialogue: Dialogue, pending: PendingTurn, eos_token: str = "</s>", separator: str = "\n") -> str:
    """The raw model input ``inp_k`` of the pending turn (its assistant prefix is already inside)."""
    if not dialogue.model_turns:
        return pending.raw_prompt
    return faithful_history(dialogue, eos_token, separator) + separator + pending.raw_prompt
