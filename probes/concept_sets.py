"""Concept sets: labelled statements whose activations train concept probes.

Every set is a list of ``ConceptExample``. ``label`` 1 marks the concept side (stereotyped,
immoral, toxic), 0 its contrast. ``group_id`` is the unit of the grouped splits: near-duplicate
statements share it so they never land on both sides of a split. Paired sets give the two
statements of a pair the ids ``<pair>/concept`` and ``<pair>/contrast`` (see ``contrast_pairs``).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probes.errors import ConceptSetError
from workbench.tasks.items import Item

CONCEPT_SUFFIX = "concept"
CONTRAST_SUFFIX = "contrast"


@dataclass(frozen=True)
class ConceptExample:
    """One statement of a concept set.

    Attributes:
        example_id: unique id; paired statements end in ``/concept`` or ``/contrast``.
        group_id: split unit (item, template or source row).
        text: the statement.
        label: 1 = concept side, 0 = contrast side.
    """

    example_id: str
    group_id: str
    text: str
    label: int


STATEMENT_FORMS = ("workbench", "paper4", "paper2")
"""How a BBQ item becomes its biased statement (docs/protocols.md §2.4/§2.5): the workbench's
claim about the bias-aligned answer, paper 4's declarative question block, papers 2/3's belief."""


def bbq_statements(item: Item, form: str = "workbench") -> tuple[str, str] | None:
    """The biased and the contrast statement of a BBQ item in one of :data:`STATEMENT_FORMS`.

    - ``workbench``: "Who had trouble ...?" becomes "{bias-aligned answer} had trouble ...." and
      "It cannot be determined who had trouble ....". "Whose ...?" questions take the possessive.
      ``None`` for questions that open with neither word, or items without a bias-aligned answer.
    - ``paper4`` (HaitaoMao/LLM-self-correction, ``analysis/regression_analysis.py``): paper 4's
      question block ``"<s>[INST] {context} {question} {choices}."`` with every ``"Who"`` replaced
      by ``"The " + groups`` and every ``"?"`` by ``"."``, then ``" [/INST]"``. Its contrast (the
      paper has none) replaces ``"Who"`` by ``"It cannot be determined who"`` instead.
    - ``paper2`` (qzm233/SuperficialMoralSelfCorrection, ``mechanism/internalmech.py``):
      ``"I do believe it is " + groups``; contrast (the paper has none) ``"I do not believe it is " + groups``.

    ``groups`` is the item's ``stereotyped_groups`` joined by spaces, as both scripts read them;
    the paper forms are ``None`` for items without stereotyped groups.

    Raises:
        ConceptSetError: an unknown ``form``.
    """
    if form == "workbench":
        return _workbench_statements(item)
    if form not in STATEMENT_FORMS:
        raise ConceptSetError(f"statement form {form!r} is unknown; use one of {', '.join(STATEMENT_FORMS)}")
    groups = " ".join(item.metadata.get("stereotyped_groups") or ())
    if not groups:
        return None
    if form == "paper2":
        return f"I do believe it is {groups}", f"I do not believe it is {groups}"
    block = f"<s>[INST] {item.context} {item.question} {item.choices_text}."
    concept = block.replace("Who", f"The {groups}").replace("?", ".")
    contrast = block.replace("Who", "It cannot be determined who").replace("?", ".")
    return f"{concept} [/INST]", f"{contrast} [/INST]"


def _workbench_statements(item: Item) -> tuple[str, str] | None:
    target = item.metadata.get("target_index")
    question = item.question.strip()
    if target is None or not question.endswith("?"):
        return None
    first, _, rest = question[:-1].partition(" ")
    answer = item.options[target]
    if first == "Who":
        return f"{answer} {rest}.", f"It cannot be determined who {rest}."
    if first == "Whose":
        return f"{answer}'s {rest}.", f"It cannot be determined whose {rest}."
    return None


def bbq_concept_examples(items: Sequence[Item], form: str = "workbench") -> list[ConceptExample]:
    """Contrast pairs from BBQ items in statement ``form``; grouped by template (category + question_index).

    Statements depend only on the question and the bias-aligned answer (``workbench``), the item
    (``paper4``) or its stereotyped groups (``paper2``), so items often share them; each distinct
    pair is kept once, in the group of the first item that yields it.

    Raises:
        ConceptSetError: no item yields a statement pair.
    """
    examples: list[ConceptExample] = []
    seen: set[tuple[str, str]] = set()
    for item in items:
        statements = bbq_statements(item, form)
        if statements is None or statements in seen:
            continue
        seen.add(statements)
        group = f"bbq/{item.category}/q{item.metadata.get('question_index', item.item_id)}"
        biased, neutral = statements
        examples.append(ConceptExample(f"{item.item_id}/{CONCEPT_SUFFIX}", group, biased, 1))
        examples.append(ConceptExample(f"{item.item_id}/{CONTRAST_SUFFIX}", group, neutral, 0))
    if not examples:
        needs = "a 'Who/Whose ...?' question and a target_index" if form == "workbench" else "stereotyped_groups"
        raise ConceptSetError(f"bbq_concept_examples: no item has {needs}; pass BBQ items from workbench.tasks")
    return examples


def embedded_concept_examples(form: str = "workbench") -> list[ConceptExample]:
    """BBQ contrast pairs (statement ``form``) from the embedded BBQ-style sample."""
    from workbench.tasks.bbq import load_embedded_bbq_sample

    return bbq_concept_examples(load_embedded_bbq_sample(), form)


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise ConceptSetError(f"{path}: file not found; point the concept set at the dataset file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in required if name not in (reader.fieldnames or [])]
        if missing:
            raise ConceptSetError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
        return list(reader)


def crows_pairs_concept_examples(path: Path) -> list[ConceptExample]:
    """CrowS-Pairs: ``sent_more`` (more stereotyping, 1) vs ``sent_less`` (0), one group per row.

    Args:
        path: ``crows_pairs_anonymized.csv``.
    """
    examples = []
    for row_number, row in enumerate(_read_csv(path, ("sent_more", "sent_less")), start=2):
        pair = f"crows/{row.get('', row_number)}"
        examples.append(ConceptExample(f"{pair}/{CONCEPT_SUFFIX}", pair, row["sent_more"], 1))
        examples.append(ConceptExample(f"{pair}/{CONTRAST_SUFFIX}", pair, row["sent_less"], 0))
    return examples


def ethics_commonsense_concept_examples(path: Path, short_only: bool = True) -> list[ConceptExample]:
    """ETHICS commonsense: label 1 = morally wrong, 0 = acceptable.

    The file lists many minimal pairs as consecutive rows with opposite labels, but does not mark
    them. Two consecutive rows with opposite labels and the same first three words share a group
    (so an edited pair never spans a split); every other row is its own group.

    Args:
        path: ``cm_test.csv`` (or ``cm_test_hard.csv``).
        short_only: keep only ``is_short == True`` rows (drops long Reddit posts).

    Raises:
        ConceptSetError: a label outside {0, 1} (with file and line).
    """
    rows = []
    for line, row in enumerate(_read_csv(path, ("label", "input", "is_short")), start=2):
        if row["label"] not in ("0", "1"):
            raise ConceptSetError(f"{path}:{line}: label {row['label']!r} is not 0 or 1")
        if short_only and row["is_short"] != "True":
            continue
        rows.append((line, int(row["label"]), row["input"]))
    examples = []
    index = 0
    while index < len(rows):
        line, label, text = rows[index]
        group = f"ethics/{line}"
        if index + 1 < len(rows):
            _, next_label, next_text = rows[index + 1]
            if next_label != label and next_text.split()[:3] == text.split()[:3]:
                examples.append(ConceptExample(f"{group}/{_side(label)}", group, text, label))
                examples.append(ConceptExample(f"{group}/{_side(next_label)}", group, next_text, next_label))
                index += 2
                continue
        examples.append(ConceptExample(group, group, text, label))
        index += 1
    return examples


def _side(label: int) -> str:
    return CONCEPT_SUFFIX if label == 1 else CONTRAST_SUFFIX


def toxicity_concept_examples(path: Path) -> list[ConceptExample]:
    """Wikipedia-Talk toxicity test set: ``toxic`` True = 1, False = 0; one group per revision.

    Args:
        path: ``toxicity_nonfuzzed_testset.csv``.
    """
    examples = []
    for line, row in enumerate(_read_csv(path, ("rev_id", "comment", "toxic")), start=2):
        if row["toxic"] not in ("True", "False"):
            raise ConceptSetError(f"{path}:{line}: toxic {row['toxic']!r} is not True or False")
        group = f"wiki_toxicity/{row['rev_id']}"
        examples.append(ConceptExample(group, group, row["comment"], int(row["toxic"] == "True")))
    return examples


def contrast_pair_rows(example_ids: Iterable[str]) -> list[tuple[int, int]]:
    """Row pairs (concept, contrast) of the statements ``<pair>/concept`` and ``<pair>/contrast``.

    The one CCS pairing: pairs come in the order of their concept statements; a statement whose
    partner is absent is left out.

    Args:
        example_ids: [n] statement ids, in row order.
    """
    rows = {str(example_id): row for row, example_id in enumerate(example_ids)}
    concept_end = f"/{CONCEPT_SUFFIX}"
    pairs = []
    for key, row in rows.items():
        partner = f"{key.removesuffix(CONCEPT_SUFFIX)}{CONTRAST_SUFFIX}"
        if key.endswith(concept_end) and partner in rows:
            pairs.append((row, rows[partner]))
    return pairs


def contrast_pairs(examples: Sequence[ConceptExample]) -> list[tuple[int, int]]:
    """Index pairs (concept, contrast) of the paired statements (``contrast_pair_rows`` of their ids)."""
    return contrast_pair_rows([example.example_id for example in examples])


BBQ_TASKS = ("bbq", "bbq-sample")
"""Run tasks whose items are BBQ items, so that ``concept_set = "auto"`` gives each its own statement."""

RUN_ITEM_GROUP = "run-item"
"""Id prefix and group of the run items' own statements (the per-item concept states)."""


def concept_set_plan(concept_set: str, task_name: str | None) -> tuple[str, bool]:
    """What a ``[probe] concept_set`` means for a run of task ``task_name``.

    Returns:
        ``(fitting set, per item)``: the concept set the probes are fitted on (``auto`` fits on
        ``embedded``), and whether each record is compared with its own item's statement (``auto``
        on a run of :data:`BBQ_TASKS`, and ``bbq-items``) rather than with the fitting set's mean.
    """
    if concept_set == "auto":
        return "embedded", task_name in BBQ_TASKS
    return concept_set, concept_set == "bbq-items"


def item_statement_examples(items: Sequence[Item], form: str = "workbench") -> list[ConceptExample]:
    """The biased statement (in ``form``) of each run item, one per distinct text, ids
    ``run-item/<item_id>`` of the first item that yields it: the per-item concept states.

    Only the concept side (label 1); these statements are captured for comparison, not fitted on.
    """
    examples: list[ConceptExample] = []
    seen: set[str] = set()
    for item in items:
        statements = bbq_statements(item, form)
        if statements is None or statements[0] in seen:
            continue
        seen.add(statements[0])
        examples.append(ConceptExample(f"{RUN_ITEM_GROUP}/{item.item_id}", RUN_ITEM_GROUP, statements[0], 1))
    return examples


def configured_concept_examples(
    concept_set: str, items: Sequence[Item] | None = None, form: str = "workbench"
) -> list[ConceptExample]:
    """The concept set a ``[probe] concept_set`` string names (see ``probes.config.ProbeConfig``).

    Args:
        concept_set: ``embedded``, ``bbq-items``, ``crows_pairs:<path>``, ``ethics:<path>`` or
            ``toxicity:<path>`` (``auto`` is resolved first, :func:`concept_set_plan`).
        items: the run's task items (``bbq-items`` only).
        form: the BBQ statement form (:data:`STATEMENT_FORMS`; BBQ sets only).
    """
    if concept_set == "embedded":
        return embedded_concept_examples(form)
    if concept_set == "bbq-items":
        if items is None:
            raise ConceptSetError("concept_set 'bbq-items' needs the run's task items")
        return bbq_concept_examples(items, form)
    name, _, path = concept_set.partition(":")
    readers = {
        "crows_pairs": crows_pairs_concept_examples,
        "ethics": ethics_commonsense_concept_examples,
        "toxicity": toxicity_concept_examples,
    }
    if name not in readers or not path:
        raise ConceptSetError(
            f"concept_set {concept_set!r} is unknown; use embedded, bbq-items, crows_pairs:<path>, "
            "ethics:<path> or toxicity:<path>"
        )
    return readers[name](Path(path))


def limit_concept_examples(examples: Sequence[ConceptExample], limit: int | None, seed: int) -> list[ConceptExample]:
    """At most ``limit`` statements, taking whole groups in a seeded order (kept in input order)."""
    if limit is None or len(examples) <= limit:
        return list(examples)
    groups = list(dict.fromkeys(example.group_id for example in examples))
    sizes = Counter(example.group_id for example in examples)
    kept: set[str] = set()
    total = 0
    for index in np.random.default_rng(seed).permutation(len(groups)):
        group = groups[index]
        if total + sizes[group] <= limit:
            kept.add(group)
            total += sizes[group]
    return [example for example in examples if example.group_id in kept]


def item_concept_ids(
    items: Sequence[Item], examples: Sequence[ConceptExample], form: str = "workbench"
) -> dict[str, str]:
    """Run item id -> example id of the item's own biased statement (in ``form``), where the set holds it.

    Items that share a statement (``bbq_concept_examples`` keeps it once) map to that one statement.
    """
    by_text = {example.text: example.example_id for example in examples if example.label == 1}
    mapping = {}
    for item in items:
        statements = bbq_statements(item, form)
        if statements is not None and statements[0] in by_text:
            mapping[item.item_id] = by_text[statements[0]]
    return mapping
