"""Escaping of every dataset or run string that reaches the report: the HTML page, or a plotly figure.

Dataset text can hold anything, markup included (``<script>``, ``<img onerror=...>``, ``<b>``). The
two places it lands need different escaping:

- The index page is HTML: :func:`escape_html` escapes ``& < > " '`` (attribute-safe).
- Plotly figure strings (hover text, axis tick labels, legend names, subplot and axis titles,
  Sankey node labels) are not HTML: plotly.js splits them at ``<...>`` tags, keeps a small set
  (``<br>``, ``<b>``, ``<i>``, ``<sup>``, ``<sub>``, ``<span>``, ``<a>``, ...) and inserts every other
  piece as an SVG text node after decoding only the entities ``&amp; &lt; &gt; &nbsp; &mu; &times;
  &plusmn; &deg;`` and numeric ones. :func:`plotly_text` therefore escapes ``&``, ``<`` and ``>``
  only, so that no tag is interpreted and the reader sees ``"``, ``'``, ``&``, ``<b>`` and
  ``<script>`` literally; ``&quot;`` would be shown as the six characters ``&quot;``. The figure
  JSON is written into a ``<script>`` block by plotly's own JSON writer, which escapes ``"`` and
  ``/``.
"""

from __future__ import annotations

import html

from workbench.protocols.conditions import condition_label
from workbench.run_tables import ItemAnswer

PROMPT_EXCERPT_CHARS = 160
ANSWER_CHARS = 120


def _shortened(text: str, max_chars: int | None) -> str:
    if max_chars is not None and len(text) > max_chars:
        return text[: max_chars - 1] + "…"
    return text


def escape_html(text: str, max_chars: int | None = None) -> str:
    """``text`` cut to ``max_chars`` characters (with an ellipsis), escaped for HTML text or attributes."""
    return html.escape(_shortened(text, max_chars), quote=True)


def plotly_text(text: str, max_chars: int | None = None) -> str:
    """``text`` cut to ``max_chars`` characters (with an ellipsis), escaped for a plotly text field.

    Only ``&``, ``<`` and ``>`` become entities (``&amp; &lt; &gt;``, which plotly.js decodes back
    when it draws); quotes stay as they are, since plotly.js does not decode ``&quot;``.
    """
    return html.escape(_shortened(text, max_chars), quote=False)


def item_hover_text(item: ItemAnswer) -> str:
    """Plotly hover text of one item's answer: item id, condition (human label and raw name), round, prompt
    excerpt and answer."""
    correctness = {True: "correct", False: "wrong", None: "no gold answer"}[item.correct]
    return "<br>".join(
        (
            f"item {plotly_text(item.item_id)}",
            f"{plotly_text(condition_label(item.condition))} ({plotly_text(item.condition)}), round {item.round}"
            if condition_label(item.condition) != item.condition
            else f"{plotly_text(item.condition)}, round {item.round}",
            f"prompt: {plotly_text(item.prompt_excerpt, PROMPT_EXCERPT_CHARS)}",
            f"answer: {plotly_text(item.answer, ANSWER_CHARS)}",
            f"predicted ({plotly_text(item.predicted)}), {correctness}",
        )
    )
