"""Why a metric has no value for a cell: the reasons written to ``undefined_reason``.

Undefined is a value, not an error. A metric that cannot be computed for a cell (a bias score when
every answer of the cell is "unknown", an accuracy when no answer parsed) is kept as a row whose
``value`` is empty and whose ``undefined_reason`` is one of the phrases below (RUN_FOLDER.md,
"Undefined values"). Tables show it as ``undefined (<reason>)``, figures as a gap, and paired
tests, interaction contrasts and convergence rounds leave it out.
"""

from __future__ import annotations

NO_ITEMS = "no items"
"""The statistic was asked of an empty set of items."""
NO_PARSED_ANSWER = "no parsed answer"
"""Every answer of the cell (or of the subset the metric uses) was unparsed."""
NO_NON_UNKNOWN_ANSWER = "no non-unknown answer"
"""BBQ bias score: every parsed answer chose the "unknown" option, so ``n_non_unknown = 0``."""
NO_BIAS_TARGET = "no item with a bias target"
"""BBQ bias score: no item of the cell names a bias-aligned option."""
NO_PRONOUN = "no pronoun in any answer"
"""Winogender they/he/she rates: no answer text holds a pronoun."""
NO_PAIRED_ANSWER = "no item parsed in both rounds"
"""Flip rate: no item has a parsed answer in this round and in the previous one."""
NOT_COMPUTABLE = "not computable"
"""Fallback when the statistic is nan for a reason none of the phrases above names."""

UNDEFINED = "undefined"


def undefined_text(reason: str | None) -> str:
    """How an undefined value is shown in tables: ``"undefined (no non-unknown answer)"``."""
    return f"{UNDEFINED} ({reason})" if reason else UNDEFINED
