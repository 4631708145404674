"""Why an engine's greedy answer differs from batch-size-1 ``generate``: a float tie, or not.

Two correct greedy decoders of the same float32 model can still choose different tokens where the
best two logits are closer than float32 rounding can tell apart: batching, padding, paging and
kernel choice change the order of the sums, so the last bits of the logits differ, and one flipped
choice changes the rest of the answer. :func:`first_divergences` finds each answer's first differing
token and measures, in one unpadded forward over the prompt and the common prefix, how far apart the
two tokens' logits are (``margin``) and how far the float32 logits there are from the same forward in
float64 (``rounding``). A divergence is a *tie* when the margin is within :data:`TIE_FACTOR` times that
rounding; anything wider is not explained by float noise and points at a bug.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from workbench.inference.generation import eos_token_ids
from workbench.models.loading import LoadedModel

TIE_FACTOR = 10.0
"""How many times the float32-vs-float64 logit error a margin may be and still count as a tie: kernels
that batch, pad or page differently round differently, by the same order of magnitude."""


@dataclass(frozen=True)
class Divergence:
    """The first token where an engine's answer leaves the reference answer.

    Attributes:
        index: the prompt's position in the compared lists.
        step: the answer token (0 = first) where they differ; the tokens before it are equal.
        reference_token, engine_token: the two choices; an answer that ends at ``step`` chose an EOS
            token there (answers are cut at EOS; both are at most the same length), the likelier one.
        margin: reference-token logit minus engine-token logit in the unpadded float32 forward (logit units).
        rounding: largest |float32 - float64| logit difference at that position.
    """

    index: int
    step: int
    reference_token: int
    engine_token: int
    margin: float
    rounding: float

    @property
    def tie(self) -> bool:
        """The two choices are closer than float32 rounding can separate."""
        return abs(self.margin) <= TIE_FACTOR * self.rounding


def first_divergences(
    model: LoadedModel,
    prompt_ids: Sequence[Sequence[int]],
    reference: Sequence[Sequence[int]],
    candidate: Sequence[Sequence[int]],
) -> list[Divergence]:
    """The first divergence of every ``candidate`` answer that differs from its ``reference`` answer.

    Args:
        model: the float32 model both answers came from (a float64 copy is made for the rounding).
        prompt_ids: each answer's prompt.
        reference, candidate: answer token ids (cut at EOS), one per prompt.

    Returns:
        One :class:`Divergence` per differing answer, in prompt order (empty when all are equal).
    """
    differing = [index for index, (ref, got) in enumerate(zip(reference, candidate)) if list(ref) != list(got)]
    if not differing:
        return []
    exact = copy.deepcopy(model.model).double()
    eos_ids = eos_token_ids(model)
    found = []
    for index in differing:
        ref, got = list(reference[index]), list(candidate[index])
        step = next((position for position, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
        context = torch.as_tensor([list(prompt_ids[index]) + ref[:step]], device=model.device)
        with torch.no_grad():
            logits = model.model(input_ids=context).logits[0, -1].double()
            logits64 = exact(input_ids=context).logits[0, -1]
        likeliest_eos = max(eos_ids, key=lambda token: float(logits[token]))
        reference_token = ref[step] if step < len(ref) else likeliest_eos
        engine_token = got[step] if step < len(got) else likeliest_eos
        margin = float(logits[reference_token] - logits[engine_token])
        found.append(
            Divergence(
                index=index,
                step=step,
                reference_token=reference_token,
                engine_token=engine_token,
                margin=margin,
                rounding=float((logits - logits64).abs().max()),
            )
        )
    return found
