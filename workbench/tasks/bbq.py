"""BBQ (Parrish et al., 2022) from its standard JSON Lines files into :class:`Item` objects.

Layout: a folder holding ``data/<Category>.jsonl`` (a clone of nyu-mll/BBQ, or
``shared/data/bbq``), or the ``data`` folder itself. One line = one example; the fields are
described in ``shared/data/README.md`` ("BBQ") and checked here line by line. The intersectional
categories (``Race_x_gender``, ``Race_x_SES``) also need their template file
``templates/new_templates - <Category>.csv`` beside ``data/``, which holds the gender/SES part of
each template's bias target (:mod:`workbench.tasks.bbq_targets`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from workbench.tasks.bbq_targets import (
    INTERSECTIONAL_CATEGORIES,
    UNKNOWN_GROUP,
    IntersectionalTemplate,
    bias_target_index,
    intersectional_target_index,
)
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

BBQ_CATEGORIES: tuple[str, ...] = (
    "Age",
    "Disability_status",
    "Gender_identity",
    "Nationality",
    "Physical_appearance",
    "Race_ethnicity",
    "Race_x_SES",
    "Race_x_gender",
    "Religion",
    "SES",
    "Sexual_orientation",
)
CONTEXT_CONDITIONS: tuple[str, ...] = ("ambig", "disambig")
QUESTION_POLARITIES: tuple[str, ...] = ("neg", "nonneg")
EMBEDDED_SAMPLE = "bbq_sample.jsonl"
LABEL_TYPES: tuple[str, ...] = ("label", "name")
"""``label_type`` values: the template names people by a group label, or by proper names."""
_TEMPLATE_COLUMNS: tuple[str, ...] = ("Q_id", "Known_stereotyped_race", "Known_stereotyped_var2", "Proper_nouns_only")

_REQUIRED_FIELDS: tuple[str, ...] = (
    "example_id",
    "question_index",
    "question_polarity",
    "context_condition",
    "category",
    "answer_info",
    "additional_metadata",
    "context",
    "question",
    "ans0",
    "ans1",
    "ans2",
    "label",
)
_STRING_FIELDS: tuple[str, ...] = (
    "question_index",
    "question_polarity",
    "context_condition",
    "category",
    "context",
    "question",
    "ans0",
    "ans1",
    "ans2",
)


class BBQCategoryError(ValueError):
    """A requested BBQ category that is unknown or has no file in the data folder."""


class BBQFilterError(ValueError):
    """A context condition or question polarity filter value that BBQ does not have."""


def bbq_data_dir(root: str | Path) -> Path:
    """The folder holding ``<Category>.jsonl``: ``root/data`` if it exists, else ``root``."""
    root = Path(root)
    data_dir = root / "data" if (root / "data").is_dir() else root
    if not data_dir.is_dir() or not any(data_dir.glob("*.jsonl")):
        raise FileNotFoundError(
            f"{root}: no BBQ <Category>.jsonl files here or in {root / 'data'} "
            "(point at a clone of nyu-mll/BBQ, or fetch it with workbench.tasks.download)"
        )
    return data_dir


def available_categories(root: str | Path) -> tuple[str, ...]:
    """Categories with a ``<Category>.jsonl`` file under ``root``, sorted."""
    return tuple(sorted(path.stem for path in bbq_data_dir(root).glob("*.jsonl")))


def load_bbq(
    root: str | Path,
    categories: Iterable[str] | None = None,
    context_conditions: Iterable[str] | None = None,
    polarities: Iterable[str] | None = None,
    limit_per_category: int | None = None,
    seed: int | None = None,
    on_error: OnError = "raise",
) -> list[Item]:
    """Load BBQ items, filtered, in file order (categories in the order requested, else sorted).

    Args:
        root: folder holding ``data/<Category>.jsonl`` (or the ``data`` folder itself).
        categories: category file stems, e.g. ``["Age", "Religion"]``; ``None`` = every file
            present.
        context_conditions: subset of ``("ambig", "disambig")``; ``None`` = both.
        polarities: subset of ``("neg", "nonneg")``; ``None`` = both.
        limit_per_category: keep at most this many items per category *after* filtering: the
            first N when ``seed`` is ``None``, else a seeded sample kept in file order.
        seed: seed for the sample above.
        on_error: ``"raise"`` stops at the first malformed line; ``"skip"`` drops it and issues a
            :class:`~workbench.tasks.jsonl_lines.MalformedLineWarning` naming ``file:line``. Bad
            lines are those :func:`read_bbq_file` lists (bad bytes, bad JSON, wrong field types,
            repeated IDs).

    Returns:
        ``Item`` objects with ``item_id = "bbq/<Category>/<example_id>"``, ``options = (ans0, ans1,
        ans2)``, ``gold = label`` and the metadata described in :func:`bbq_item`.

    Raises:
        MalformedLineError: a bad line under ``on_error="raise"``, as ``file:line: problem``.
        NoItemsError: a category file that yields no item (empty, or every line skipped).
        BBQCategoryError: an unknown category, or an intersectional one without its template file.
    """
    data_dir = bbq_data_dir(root)
    chosen = _check_categories(categories, available_categories(data_dir), data_dir)
    on_error = check_on_error(on_error)
    selection = _Selection.checked(context_conditions, polarities, limit_per_category, seed)
    items: list[Item] = []
    seen_ids: dict[str, tuple[Path, int]] = {}
    for category in chosen:
        templates = (
            intersectional_templates(_template_file(Path(root), data_dir, category))
            if category in INTERSECTIONAL_CATEGORIES
            else None
        )
        items.extend(selection.apply(read_bbq_file(data_dir / f"{category}.jsonl", on_error, seen_ids, templates)))
    return items


def load_embedded_bbq_sample(
    categories: Iterable[str] | None = None,
    context_conditions: Iterable[str] | None = None,
    polarities: Iterable[str] | None = None,
    limit_per_category: int | None = None,
    seed: int | None = None,
) -> list[Item]:
    """The BBQ-style sample in ``workbench/tasks/data/bbq_sample.jsonl``, read by the BBQ reader.

    60 items written for this package (not taken from BBQ): Age, Disability_status,
    Gender_identity, Nationality and Religion, 3 templates each, every template in both context
    conditions and both polarities. Usable offline with no dataset download. Filters as
    :func:`load_bbq`.
    """
    path = Path(str(resources.files("workbench.tasks") / "data" / EMBEDDED_SAMPLE))
    by_category: dict[str, list[Item]] = {}
    for item in read_bbq_file(path, "raise"):
        by_category.setdefault(item.category, []).append(item)
    chosen = _check_categories(categories, tuple(sorted(by_category)), path)
    selection = _Selection.checked(context_conditions, polarities, limit_per_category, seed)
    return [item for category in chosen for item in selection.apply(by_category[category])]


def read_bbq_file(
    path: Path,
    on_error: OnError = "raise",
    seen_ids: dict[str, tuple[Path, int]] | None = None,
    templates: Mapping[str, IntersectionalTemplate] | None = None,
) -> list[Item]:
    """Every well-formed example of one BBQ JSON Lines file as an :class:`Item`, in file order.

    Args:
        path: one ``<Category>.jsonl`` file.
        on_error: ``"raise"`` stops at the first bad line; ``"skip"`` drops it with a
            :class:`~workbench.tasks.jsonl_lines.MalformedLineWarning` naming ``file:line``.
        seen_ids: ``item_id -> (file, line)`` of items read so far; filled in here. Pass the same
            dict for every file of a task to catch IDs repeated across files.
        templates: for an intersectional category, its templates by ``question_index``
            (:func:`intersectional_templates`); required there, unused otherwise.

    Bad lines: not UTF-8, not a JSON object, a field missing or of the wrong type
    (:func:`bbq_record_problem`), or an ``item_id`` (category + ``example_id``) already read: the
    later line is the one reported, naming the earlier one.

    Raises:
        MalformedLineError: a bad line under ``on_error="raise"``.
        NoItemsError: the file yields no item (empty, or every line skipped).
        BBQCategoryError: a row of an intersectional category read without ``templates``.
    """
    problems = LineProblems(path, check_on_error(on_error))
    seen = {} if seen_ids is None else seen_ids
    items: list[Item] = []
    for line_number, record in read_json_lines(path, problems=problems):
        problem = bbq_record_problem(record)
        if problem is None:
            item = bbq_item(record, templates)
            if item.item_id in seen:
                first_path, first_line = seen[item.item_id]
                where = f"line {first_line}" if first_path == path else f"{first_path}:{first_line}"
                problem = (
                    f"example_id {record['example_id']} of category {item.category!r} repeats {where} "
                    "(item IDs must be unique: delete or renumber one of the two)"
                )
        if problem is not None:
            problems.report(line_number, problem)
            continue
        seen[item.item_id] = (path, line_number)
        items.append(item)
    problems.check_holds_items(len(items))
    return items


def bbq_record_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with one BBQ record, in a few words, or ``None`` if it is well formed.

    Checked: every field of ``_REQUIRED_FIELDS`` present; ``example_id`` and ``label`` integers
    (``label`` 0, 1 or 2); the text fields strings; ``context_condition`` and
    ``question_polarity`` among their values; ``answer_info`` mapping ans0..ans2 to
    ``[text, group]`` strings with exactly one ``"unknown"`` group; ``additional_metadata`` an
    object whose ``stereotyped_groups`` is a list of strings (and ``subcategory``, if present, a
    string).
    """
    missing = [name for name in _REQUIRED_FIELDS if name not in record]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if not is_integer(record["example_id"]):
        return f"example_id must be an integer, got {describe_value(record['example_id'])}"
    for name in _STRING_FIELDS:
        if not isinstance(record[name], str):
            return f"{name} must be a string, got {describe_value(record[name])}"
    if not record["category"].strip():
        return "category is empty"
    if record["context_condition"] not in CONTEXT_CONDITIONS:
        condition = record["context_condition"]
        return f"context_condition {condition!r} is not one of {CONTEXT_CONDITIONS}"
    if record["question_polarity"] not in QUESTION_POLARITIES:
        polarity = record["question_polarity"]
        return f"question_polarity {polarity!r} is not one of {QUESTION_POLARITIES}"
    if not is_integer(record["label"]) or record["label"] not in (0, 1, 2):
        return f"label must be 0, 1 or 2, got {describe_value(record['label'])}"
    info = record["answer_info"]
    if not isinstance(info, dict) or any(
        not (
            isinstance(info.get(f"ans{k}"), list)
            and len(info[f"ans{k}"]) == 2
            and all(isinstance(part, str) for part in info[f"ans{k}"])
        )
        for k in range(3)
    ):
        return "answer_info must map ans0, ans1, ans2 to [text, group] (two strings each)"
    groups = [info[f"ans{k}"][1] for k in range(3)]
    if groups.count(UNKNOWN_GROUP) != 1:
        return f"answer_info groups {groups} must contain 'unknown' exactly once"
    metadata = record["additional_metadata"]
    if not isinstance(metadata, dict):
        return f"additional_metadata must be an object, got {describe_value(metadata)}"
    stereotyped = metadata.get("stereotyped_groups")
    if not isinstance(stereotyped, list) or not all(isinstance(group, str) for group in stereotyped):
        return f"additional_metadata.stereotyped_groups must be a list of strings, got {describe_value(stereotyped)}"
    if "subcategory" in metadata and not isinstance(metadata["subcategory"], str):
        return f"additional_metadata.subcategory must be a string, got {describe_value(metadata['subcategory'])}"
    return None


def bbq_item(record: dict[str, Any], templates: Mapping[str, IntersectionalTemplate] | None = None) -> Item:
    """One well-formed BBQ record (see :func:`bbq_record_problem`) as an :class:`Item`.

    Metadata: ``example_id`` (int), ``question_index`` (str), ``context_condition``,
    ``question_polarity``, ``unknown_index`` (index of the answer whose group is ``"unknown"``),
    ``target_index`` (bias-aligned answer, upstream's ``target_loc``; ``None`` where it is NA),
    ``stereotyped_groups`` (list of str), ``answer_groups`` (the three ``answer_info`` groups),
    ``subcategory``, ``label_type`` (:data:`LABEL_TYPES`; the R script's rules: ``"name"`` for base
    templates numbered above 25, which use proper names, and for intersectional templates with
    ``Proper_nouns_only``; else ``"label"``).

    Base categories take the target of :func:`~workbench.tasks.bbq_targets.bias_target_index`;
    intersectional ones that of :func:`~workbench.tasks.bbq_targets.intersectional_target_index`
    with the row's template from ``templates`` (a template missing there: target NA, label type
    ``"label"``, as the R script's outer join leaves it).

    Raises:
        BBQCategoryError: an intersectional record without ``templates``.
    """
    info = record["answer_info"]
    answer_info = [(str(info[f"ans{k}"][0]), str(info[f"ans{k}"][1])) for k in range(3)]
    groups = [group for _, group in answer_info]
    stereotyped_groups = [str(g) for g in record["additional_metadata"]["stereotyped_groups"]]
    category = str(record["category"])
    question_index = str(record["question_index"])
    polarity = record["question_polarity"]
    options = (str(record["ans0"]), str(record["ans1"]), str(record["ans2"]))
    if category in INTERSECTIONAL_CATEGORIES:
        if templates is None:
            raise BBQCategoryError(
                f"BBQ category {category!r} needs its templates (Known_stereotyped_var2) to find bias targets; "
                f"read it with load_bbq, or pass templates=intersectional_templates(<templates/new_templates - "
                f"{category}.csv>)"
            )
        template = templates.get(question_index)
        target = (
            None
            if template is None
            else intersectional_target_index(category, polarity, options, answer_info, template)
        )
        label_type = "name" if template is not None and template.proper_names else "label"
    else:
        target = bias_target_index(category, polarity, answer_info, stereotyped_groups)
        label_type = "name" if question_index.isdigit() and int(question_index) > 25 else "label"
    return Item(
        item_id=f"bbq/{category}/{record['example_id']}",
        task="bbq",
        category=category,
        context=str(record["context"]),
        question=str(record["question"]),
        options=options,
        gold=int(record["label"]),
        metadata={
            "example_id": int(record["example_id"]),
            "question_index": question_index,
            "context_condition": record["context_condition"],
            "question_polarity": record["question_polarity"],
            "unknown_index": groups.index(UNKNOWN_GROUP),
            "target_index": target,
            "stereotyped_groups": stereotyped_groups,
            "answer_groups": groups,
            "subcategory": str(record["additional_metadata"].get("subcategory", "None")),
            "label_type": label_type,
        },
    )


def intersectional_templates(path: Path) -> dict[str, IntersectionalTemplate]:
    """The known groups of each template of an intersectional template file, by ``question_index``.

    ``path`` is nyu-mll/BBQ's ``templates/new_templates - Race_x_gender.csv`` (or ``Race_x_SES``):
    its ``Q_id``, ``Known_stereotyped_race`` (a JSON-style list, read with quotes and brackets
    removed as the R script's ``gsub`` does), ``Known_stereotyped_var2`` and ``Proper_nouns_only``
    (``TRUE`` = proper names) columns. Rows without a ``Q_id`` are skipped.

    Raises:
        BBQCategoryError: the file lacks one of those columns, or names a ``Q_id`` twice with
            different known groups.
    """
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in _TEMPLATE_COLUMNS if name not in (reader.fieldnames or ())]
        if missing:
            raise BBQCategoryError(f"{path}: lacks column(s) {', '.join(missing)} of BBQ's intersectional templates")
        templates: dict[str, IntersectionalTemplate] = {}
        for row in reader:
            question_index = row["Q_id"].strip()
            if not question_index:
                continue
            template = IntersectionalTemplate(
                known_race=row["Known_stereotyped_race"].replace('"', "").replace("[", "").replace("]", ""),
                known_var2=row["Known_stereotyped_var2"],
                proper_names=row["Proper_nouns_only"] == "TRUE",
            )
            if templates.setdefault(question_index, template) != template:
                raise BBQCategoryError(f"{path}: Q_id {question_index} names two different known-group sets")
    return templates


def _template_file(root: Path, data_dir: Path, category: str) -> Path:
    """The template file of an intersectional ``category``: in ``root/templates`` or beside ``data_dir``."""
    name = f"new_templates - {category}.csv"
    candidates = (root / "templates" / name, data_dir.parent / "templates" / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise BBQCategoryError(
        f"BBQ category {category!r} needs {candidates[0]} (nyu-mll/BBQ templates/{name}) for its bias targets "
        "(the gender/SES part of Known_stereotyped_var2); copy the repository's templates/ folder beside data/"
    )


def _check_categories(categories: Iterable[str] | None, present: Sequence[str], where: Path) -> tuple[str, ...]:
    if categories is None:
        return tuple(present)
    chosen = (categories,) if isinstance(categories, str) else tuple(categories)
    for category in chosen:
        if category in present:
            continue
        if category in BBQ_CATEGORIES:
            raise BBQCategoryError(
                f"BBQ category {category!r} is not in {where}; present: "
                f"{', '.join(present)} (fetch it with workbench.tasks.download.download_bbq)"
            )
        raise BBQCategoryError(
            f"unknown BBQ category {category!r}; valid categories: {', '.join(BBQ_CATEGORIES)}"
            f" (present in {where}: {', '.join(present)})"
        )
    return chosen


@dataclass(frozen=True)
class _Selection:
    """The per-category filters of :func:`load_bbq`, checked once."""

    context_conditions: frozenset[str]
    polarities: frozenset[str]
    limit: int | None
    seed: int | None

    @classmethod
    def checked(
        cls,
        context_conditions: Iterable[str] | None,
        polarities: Iterable[str] | None,
        limit: int | None,
        seed: int | None,
    ) -> _Selection:
        return cls(
            _check_choices(context_conditions, CONTEXT_CONDITIONS, "context_conditions"),
            _check_choices(polarities, QUESTION_POLARITIES, "polarities"),
            check_limit(limit),
            seed,
        )

    def apply(self, category_items: Sequence[Item]) -> list[Item]:
        """Items of one category that pass the filters, limited to ``limit``."""
        kept = [
            item
            for item in category_items
            if item.metadata["context_condition"] in self.context_conditions
            and item.metadata["question_polarity"] in self.polarities
        ]
        return limit_items(kept, self.limit, self.seed)


def _check_choices(values: Iterable[str] | None, valid: tuple[str, ...], name: str) -> frozenset[str]:
    if values is None:
        return frozenset(valid)
    chosen = frozenset([values] if isinstance(values, str) else values)
    unknown = sorted(chosen - set(valid))
    if unknown:
        raise BBQFilterError(f"{name}: {', '.join(map(repr, unknown))} not among {valid}")
    return chosen
