"""HTML escaping of every dataset or run string that reaches hover text, titles or the index page.

Dataset text can hold anything, markup included (``<script>``, ``<img onerror=...>``). Plotly
renders its labels as a subset of HTML and the index page is HTML, so every such string goes
through :func:`escape_text` first. Plotly turns the entities back into plain characters when it
draws, so the reader still sees the original text.
"""

from __future__ import annotations

import html

from reports.tables import ItemAnswer

PROMPT_EXCERPT_CHARS = 160
ANSWER_CHARS = 120


def escape_text(text: str, max_chars: int | None = None) -> str:
    """``text`` cut to ``max_chars`` characters (with an ellipsis) and then HTML-escaped."""
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return html.escape(text, quote=True)


def item_hover_text(item: ItemAnswer) -> str:
    """Hover text of one item's answer: item id, condition, round, prompt excerpt and answer."""
    correctness = {True: "correct", False: "wrong", None: "no gold answer"}[item.correct]
    return "<br>".join(
        (
            f"item {escape_text(item.item_id)}",
            f"{escape_text(item.condition)}, round {item.round}",
            f"prompt: {escape_text(item.prompt_excerpt, PROMPT_EXCERPT_CHARS)}",
            f"answer: {escape_text(item.answer, ANSWER_CHARS)}",
            f"predicted ({escape_text(item.predicted)}), {correctness}",
        )
    )
