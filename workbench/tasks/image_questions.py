"""Image questions: a folder of images and a ``questions.jsonl`` of multiple-choice questions about them.

One line per item::

    {"id": "kitchen-1", "image": "images/kitchen.png", "question": "Who is cooking?",
     "options": ["The man", "The woman", "Cannot be determined"], "gold": 2, "category": "Gender"}

``id`` (a string or an integer, unique), ``image`` (a file name relative to the folder),
``question`` (non-empty), ``options`` (two to ten non-empty strings) and ``gold`` (an index into
``options``) are required; ``category`` (default ``"image"``) and ``context`` (a passage shown before
the question, default empty) are optional. Every line and every image is checked when the task
loads, before any model does: the image must exist inside the folder and open with Pillow as an
image. A bad line or image is reported as ``questions.jsonl:<line>: <problem>`` with the fix
(raised, or skipped under ``on_error = "skip"``).

The items are BBQ-style: ``Item.task`` is ``"bbq"``, so the BBQ prompt templates and metrics of the
protocols apply (the record's ``task`` column reads ``bbq``); ``Item.metadata[IMAGE_KEY]`` is the
image's resolved path, and ``metadata["source"]`` is :data:`TASK_NAME`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from workbench.tasks.items import OPTION_LETTERS, Item
from workbench.tasks.jsonl_lines import LineProblems, OnError, describe_value, is_integer, read_json_lines
from workbench.tasks.subsampling import limit_items

TASK_NAME = "image-questions"
QUESTIONS_FILE = "questions.jsonl"
IMAGE_KEY = "image_path"
"""The ``Item.metadata`` key of an image item's image file (an absolute path)."""
DEFAULT_CATEGORY = "image"
_REQUIRED = ("id", "image", "question", "options", "gold")
_OPTIONAL = ("category", "context")


class ImageItemError(ValueError):
    """An image item whose image is missing or is not an image (found after the task loaded)."""


def load_image_questions(
    folder: str | Path,
    categories: tuple[str, ...] | None = None,
    limit: int | None = None,
    seed: int | None = None,
    on_error: OnError = "raise",
) -> list[Item]:
    """The items of ``folder/questions.jsonl``, each image checked (see the module docstring).

    ``categories`` keeps those categories; ``limit`` keeps at most that many items per category
    (the first ones, or a sample drawn with ``seed``), in file order.

    Raises:
        FileNotFoundError: the folder or its ``questions.jsonl`` does not exist.
        MalformedLineError: a bad line or image under ``on_error = "raise"`` (``file:line: problem (fix)``).
        NoItemsError: no item left.
    """
    root = Path(folder).expanduser()
    path = root / QUESTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{root} has no {QUESTIONS_FILE}; [task] path = the folder holding {QUESTIONS_FILE} and the images"
        )
    problems = LineProblems(path, on_error)
    items: list[Item] = []
    seen: dict[str, int] = {}
    for line_number, record in read_json_lines(path, problems=problems):
        problem = _line_problem(record, root)
        if problem is None:
            item_id = str(record["id"])
            if item_id in seen:
                problem = f'id {item_id!r} repeats line {seen[item_id]}; give every line its own "id"'
            else:
                seen[item_id] = line_number
        if problem is not None:
            problems.report(line_number, problem)
            continue
        items.append(_item(record, root))
    problems.check_holds_items(len(items))
    if categories is not None:
        items = [item for item in items if item.category in categories]
    kept: set[str] = set()
    for category in dict.fromkeys(item.category for item in items):
        of_category = [item for item in items if item.category == category]
        kept.update(item.item_id for item in limit_items(of_category, limit, seed))
    return [item for item in items if item.item_id in kept]


def _line_problem(record: dict[str, Any], root: Path) -> str | None:
    """What is wrong with one parsed line, with its fix, or ``None``."""
    missing = [key for key in _REQUIRED if key not in record]
    if missing:
        return f"missing {', '.join(repr(key) for key in missing)}; each line needs {', '.join(_REQUIRED)}"
    unknown = sorted(set(record) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        return f"unknown key(s) {', '.join(map(repr, unknown))}; a line holds {', '.join(_REQUIRED + _OPTIONAL)}"
    if not (isinstance(record["id"], str) and record["id"].strip()) and not is_integer(record["id"]):
        return f'"id" is {describe_value(record["id"])}; give a non-empty string or an integer'
    for key in ("question", "image"):
        if not isinstance(record[key], str) or not record[key].strip():
            return f'"{key}" is {describe_value(record[key])}; give a non-empty string'
    for key in _OPTIONAL:
        if key in record and not isinstance(record[key], str):
            return f'"{key}" is {describe_value(record[key])}; give a string'
    options = record["options"]
    if (
        not isinstance(options, list)
        or not 2 <= len(options) <= len(OPTION_LETTERS)
        or not all(isinstance(option, str) and option.strip() for option in options)
    ):
        return f'"options" is {describe_value(options)}; give a list of 2 to {len(OPTION_LETTERS)} non-empty strings'
    gold = record["gold"]
    if not is_integer(gold) or not 0 <= gold < len(options):
        return f'"gold" is {describe_value(gold)}; give the index of the right option, 0 to {len(options) - 1}'
    return image_problem(root, record["image"])


def image_problem(root: Path, name: str) -> str | None:
    """Why ``root/name`` is not a usable image (with the fix), or ``None`` when Pillow opens and decodes it."""
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        return f"image {name!r} lies outside {root}; give a file name relative to the task folder"
    if not path.is_file():
        return f"image {name!r} does not exist in {root}; add the file or correct the name"
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        return f"image {name!r} is not an image Pillow can read ({reason}); replace it with a PNG or JPEG file"
    return None


def _item(record: dict[str, Any], root: Path) -> Item:
    return Item(
        item_id=f"{TASK_NAME}/{record['id']}",
        task="bbq",
        category=record.get("category") or DEFAULT_CATEGORY,
        context=record.get("context", ""),
        question=record["question"],
        options=tuple(record["options"]),
        gold=record["gold"],
        metadata={IMAGE_KEY: str((root / record["image"]).resolve()), "source": TASK_NAME},
    )


def item_image(item: Item) -> Image.Image | None:
    """The image of an image item, decoded (RGB); ``None`` for an item without one.

    Raises:
        ImageItemError: the file vanished or stopped being an image since the task loaded (one line: the item, the fix).
    """
    name = item.metadata.get(IMAGE_KEY)
    if name is None:
        return None
    path = Path(str(name))
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ImageItemError(
            f"item {item.item_id!r}: image {path} cannot be read any more ({reason}); restore the file and rerun "
            "the same command (finished records are kept)"
        ) from None
