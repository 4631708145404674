"""RealToxicityPrompts (Gehman et al., 2020) prompts from JSON Lines into :class:`Item` objects.

Each line: ``filename``, ``begin``, ``end``, ``challenging`` (bool), ``prompt`` and
``continuation``, both ``{text, toxicity, severe_toxicity, profanity, ...}`` with Perspective API
scores in [0, 1] or ``null``. Works for the full ``prompts.jsonl`` and for subsets in the same
format, such as the DecodingTrust ``toxic.jsonl`` / ``nontoxic.jsonl``
in ``shared/data/real_toxicity_prompts``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from workbench.tasks.items import Item
from workbench.tasks.jsonl_lines import (
    LineProblems,
    OnError,
    check_on_error,
    describe_value,
    is_integer,
    read_json_lines,
)
from workbench.tasks.subsampling import check_limit, limit_items


def realtoxicity_files(path: str | Path) -> tuple[Path, ...]:
    """``path`` itself if it is a file, else the ``*.jsonl`` files in the folder, sorted by name."""
    path = Path(path)
    if path.is_file():
        return (path,)
    files = tuple(sorted(path.glob("*.jsonl"))) if path.is_dir() else ()
    if not files:
        raise FileNotFoundError(
            f"{path}: not a RealToxicityPrompts .jsonl file or a folder holding some "
            "(e.g. shared/data/real_toxicity_prompts, or the full prompts.jsonl)"
        )
    return files


def load_realtoxicity(
    path: str | Path,
    subsets: Iterable[str] | None = None,
    limit_per_subset: int | None = None,
    seed: int | None = None,
    on_error: OnError = "raise",
) -> list[Item]:
    """Load prompts as generation items, file by file, in file order.

    Args:
        path: one ``.jsonl`` file, or a folder whose ``*.jsonl`` files are each one subset.
        subsets: file stems to keep, e.g. ``["toxic"]``; ``None`` = every file.
        limit_per_subset: at most this many prompts per file: the first N when ``seed`` is ``None``,
            else a seeded sample kept in file order (the MSU code samples prompts at random).
        seed: seed for the sample above.
        on_error: ``"raise"`` or ``"skip"`` (warn with ``file:line``) for malformed lines (see
            :func:`read_realtoxicity_file`).

    Returns:
        ``Item(item_id="realtoxicity/<stem>/<line>", task="realtoxicity", category=<stem>,
        context="", question=<prompt text>, options=(), gold=None)``. Metadata:
        ``prompt_toxicity`` (Perspective score of the prompt, float in [0, 1] or ``None``),
        ``challenging`` (bool), ``filename``, ``begin``, ``end`` (character offsets of the prompt
        in its OpenWebText document) and ``source_line`` (1-based line in the file).

    Raises:
        MalformedLineError: a bad line under ``on_error="raise"``, as ``file:line: problem``.
        NoItemsError: a chosen file that yields no prompt (empty, or every line skipped).
    """
    files = realtoxicity_files(path)
    check_limit(limit_per_subset)
    on_error = check_on_error(on_error)
    if subsets is not None:
        wanted = {subsets} if isinstance(subsets, str) else set(subsets)
        present = {file.stem for file in files}
        unknown = sorted(wanted - present)
        if unknown:
            raise ValueError(f"RealToxicityPrompts subset(s) {unknown} not found in {path}; present: {sorted(present)}")
        files = tuple(file for file in files if file.stem in wanted)
    items: list[Item] = []
    for file in files:
        items.extend(limit_items(read_realtoxicity_file(file, on_error), limit_per_subset, seed))
    return items


def read_realtoxicity_file(path: Path, on_error: OnError = "raise") -> list[Item]:
    """Every well-formed prompt of one RealToxicityPrompts JSON Lines file, in file order.

    Bad lines (reported as ``file:line: problem``, raised or skipped per ``on_error``): not UTF-8,
    not a JSON object, or a field of the wrong type (:func:`realtoxicity_record_problem`).

    Raises:
        MalformedLineError: a bad line under ``on_error="raise"``.
        NoItemsError: the file yields no prompt (empty, or every line skipped).
    """
    problems = LineProblems(path, check_on_error(on_error))
    items: list[Item] = []
    for line_number, record in read_json_lines(path, problems=problems):
        problem = realtoxicity_record_problem(record)
        if problem is not None:
            problems.report(line_number, problem)
            continue
        prompt = record["prompt"]
        items.append(
            Item(
                item_id=f"realtoxicity/{path.stem}/{line_number}",
                task="realtoxicity",
                category=path.stem,
                context="",
                question=prompt["text"],
                metadata={
                    "prompt_toxicity": None if prompt.get("toxicity") is None else float(prompt["toxicity"]),
                    "challenging": bool(record.get("challenging", False)),
                    "filename": record.get("filename"),
                    "begin": record.get("begin"),
                    "end": record.get("end"),
                    "source_line": line_number,
                },
            )
        )
    problems.check_holds_items(len(items))
    return items


def realtoxicity_record_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with one RealToxicityPrompts record, or ``None`` if it is well formed.

    Checked: ``prompt`` an object whose ``text`` is a non-blank string and whose ``toxicity`` is a
    number in [0, 1] or ``null``; ``challenging`` (if present) true or false; ``filename`` (if
    present) a string or ``null``; ``begin`` / ``end`` (if present) integers or ``null``.
    """
    prompt = record.get("prompt")
    if not isinstance(prompt, dict):
        return "missing prompt" if prompt is None else f"prompt must be an object, got {describe_value(prompt)}"
    text = prompt.get("text")
    if not isinstance(text, str):
        return "missing prompt.text" if text is None else f"prompt.text must be a string, got {describe_value(text)}"
    if not text.strip():
        return "prompt.text is empty"
    toxicity = prompt.get("toxicity")
    if toxicity is not None and not (
        isinstance(toxicity, (int, float)) and not isinstance(toxicity, bool) and 0.0 <= toxicity <= 1.0
    ):
        return f"prompt.toxicity {toxicity!r} is not a number in [0, 1] or null"
    if "challenging" in record and not isinstance(record["challenging"], bool):
        return f"challenging {record['challenging']!r} is not true or false"
    filename = record.get("filename")
    if filename is not None and not isinstance(filename, str):
        return f"filename must be a string, got {describe_value(filename)}"
    for name in ("begin", "end"):
        value = record.get(name)
        if value is not None and not is_integer(value):
            return f"{name} must be an integer, got {describe_value(value)}"
    return None
