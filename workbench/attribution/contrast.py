"""Contrast pairs for gender bias (Vig et al. 2020 style) and their token batches.

A pair is a clean prompt and a counterfactual with the group term swapped, plus the two
continuation tokens whose logit difference is the bias measure:

    bias(prompt) = logit(target | prompt) - logit(foil | prompt)   at the last token,

with ``target`` the stereotypical continuation (Winogender: "she" after a mostly-female
occupation by 2015 BLS share, else "he") and ``foil`` the other.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from workbench.hooks.positions import TokenBatch, in_context_continuation

DEFAULT_TEMPLATE = "The {} said that"


class ContrastPairError(ValueError):
    """Contrast pairs that cannot be patched position by position."""


@dataclass(frozen=True)
class ContrastPair:
    """A clean prompt, its counterfactual, and the target/foil continuations (single tokens)."""

    clean: str
    counterfactual: str
    target: str
    foil: str


@dataclass(frozen=True)
class ContrastBatch:
    """Token batches of the clean and counterfactual prompts (same lengths, left-padded) and the
    target/foil token ids, each of shape (n_pairs,)."""

    clean: TokenBatch
    counterfactual: TokenBatch
    target_ids: torch.Tensor
    foil_ids: torch.Tensor
    n_dropped: int


def winogender_contrast_pairs(occupations_stats: Path, template: str = DEFAULT_TEMPLATE) -> list[ContrastPair]:
    """One pair per Winogender occupation (occupations-stats.tsv): clean "The nurse said that",
    counterfactual with the anti-stereotypical gendered noun ("The man said that")."""
    pairs = []
    with Path(occupations_stats).open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            mostly_female = float(row["bls_pct_female"]) > 50.0
            target, foil = (" she", " he") if mostly_female else (" he", " she")
            swapped = "man" if mostly_female else "woman"
            pairs.append(ContrastPair(template.format(row["occupation"]), template.format(swapped), target, foil))
    return pairs


def _single_token(tokenizer: PreTrainedTokenizerBase, prompt: str, text: str, add_special_tokens: bool) -> int:
    """The one token ``text`` is after ``prompt``, tokenized as one string (a SentencePiece tokenizer
    splits ``" she"`` alone as ``▁ ▁she`` but as ``▁she`` after a prompt)."""
    context, ids = in_context_continuation(tokenizer, prompt, text, add_special_tokens=add_special_tokens)
    if context != list(tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"]):
        raise ContrastPairError(
            f"continuation {text!r} merges with the end of {prompt!r} for this tokenizer (the prompt's last "
            "token changes); end the template with a word, not a space"
        )
    if len(ids) != 1:
        raise ContrastPairError(
            f"continuation {text!r} is {len(ids)} tokens after {prompt!r} for this tokenizer; "
            "use single-token continuations"
        )
    return ids[0]


def tokenize_contrast_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[ContrastPair], add_special_tokens: bool = True
) -> ContrastBatch:
    """Tokenize both prompts of every pair; pairs whose prompts differ in length are dropped
    (position-wise patching needs aligned tokens) and counted in ``n_dropped``."""
    clean, counterfactual, targets, foils = [], [], [], []
    for pair in pairs:
        a = tokenizer(pair.clean, add_special_tokens=add_special_tokens)["input_ids"]
        b = tokenizer(pair.counterfactual, add_special_tokens=add_special_tokens)["input_ids"]
        if len(a) != len(b):
            continue
        clean.append(a)
        counterfactual.append(b)
        targets.append(_single_token(tokenizer, pair.clean, pair.target, add_special_tokens))
        foils.append(_single_token(tokenizer, pair.clean, pair.foil, add_special_tokens))
    if not clean:
        raise ContrastPairError(
            f"all {len(pairs)} contrast pairs have clean and counterfactual prompts of different token lengths; "
            "choose group terms that tokenize to as many tokens as the words they replace"
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return ContrastBatch(
        clean=TokenBatch.from_sequences(clean, [len(s) for s in clean], pad, "left"),
        counterfactual=TokenBatch.from_sequences(counterfactual, [len(s) for s in counterfactual], pad, "left"),
        target_ids=torch.tensor(targets),
        foil_ids=torch.tensor(foils),
        n_dropped=len(pairs) - len(clean),
    )


def logit_difference(logits: torch.Tensor, target_ids: torch.Tensor, foil_ids: torch.Tensor) -> torch.Tensor:
    """m = logit(target) - logit(foil) at the last position (left padding): [batch, seq, vocab] -> [batch]."""
    last = logits[:, -1]
    rows = torch.arange(last.shape[0], device=last.device)
    return last[rows, target_ids.to(last.device)] - last[rows, foil_ids.to(last.device)]
