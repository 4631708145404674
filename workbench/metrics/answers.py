"""Answer parsing: generated text -> option index, or ``None`` when the text names no option.

Two rules:

- ``"label"`` (default): the earliest option label in the text, written ``(a)``, ``(A)`` or ``a)``
  (only letters of existing options count); failing that, the one option whose text occurs in the
  answer (case-insensitive; when several option texts occur the answer is unparsed).
- ``"msu_substring"``: the MSU scripts' rule (``inference_feedback_cot.py``): the first of
  ``(a)``, ``(b)``, ``(c)``, ... in *label order* that occurs anywhere in the lower-cased text.

An unparsed answer is reported as ``None``; metrics exclude it and count it separately, never as
right or wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from workbench.tasks.items import OPTION_LETTERS

ParseRule = Literal["label", "msu_substring"]
_LABEL = re.compile(r"\(([a-j])\)|(?<![\w(])([a-j])\)", re.IGNORECASE)


def parse_option(text: str, options: Sequence[str], rule: ParseRule = "label") -> int | None:
    """Index of the option ``text`` chooses among ``options``, or ``None``.

    ``parse_option("The answer is (c).", ["x", "y", "z"])`` -> ``2``.
    """
    n = len(options)
    if rule == "msu_substring":
        lowered = text.lower()
        return next((i for i in range(n) if f"({OPTION_LETTERS[i]})" in lowered), None)
    if rule != "label":
        raise ValueError(f"unknown parse rule {rule!r}; choose 'label' or 'msu_substring'")
    for match in _LABEL.finditer(text):
        index = OPTION_LETTERS.index((match.group(1) or match.group(2)).lower())
        if index < n:
            return index
    lowered = text.lower()
    found = [i for i, option in enumerate(options) if option and option.lower() in lowered]
    return found[0] if len(found) == 1 else None


def option_letter(index: int | None) -> str:
    """``0`` -> ``"a"``; ``None`` -> ``"unparsed"`` (the run folder's spelling)."""
    return "unparsed" if index is None else OPTION_LETTERS[index]
