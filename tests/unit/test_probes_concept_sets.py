"""Concept sets: BBQ-derived contrast statements and the standard external files."""

from __future__ import annotations

from pathlib import Path

import pytest

from probes.concept_sets import (
    ConceptExample,
    bbq_statements,
    contrast_pair_rows,
    contrast_pairs,
    crows_pairs_concept_examples,
    embedded_concept_examples,
    ethics_commonsense_concept_examples,
    toxicity_concept_examples,
)
from probes.errors import ConceptSetError
from workbench.tasks.items import Item

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def bbq_item(question: str, target: int | None) -> Item:
    return Item(
        item_id="bbq/Age/0",
        task="bbq",
        category="Age",
        context="",
        question=question,
        options=("The retiree", "The student", "Unknown"),
        gold=2,
        metadata={"target_index": target, "question_index": "1"},
    )


def test_bbq_statements_replace_who_and_whose() -> None:
    assert bbq_statements(bbq_item("Who had trouble using the app?", 0)) == (
        "The retiree had trouble using the app.",
        "It cannot be determined who had trouble using the app.",
    )
    assert bbq_statements(bbq_item("Whose phone broke?", 1)) == (
        "The student's phone broke.",
        "It cannot be determined whose phone broke.",
    )
    assert bbq_statements(bbq_item("Which one left?", 0)) is None
    assert bbq_statements(bbq_item("Who left?", None)) is None


def test_embedded_set_is_paired_and_grouped_by_template() -> None:
    examples = embedded_concept_examples()
    pairs = contrast_pairs(examples)
    assert len(pairs) * 2 == len(examples)
    for concept, contrast in pairs:
        assert (examples[concept].label, examples[contrast].label) == (1, 0)
        assert examples[concept].group_id == examples[contrast].group_id
        assert examples[contrast].text.startswith("It cannot be determined wh")


def test_ethics_pairs_share_a_group(tmp_path: Path) -> None:
    path = tmp_path / "cm.csv"
    path.write_text(
        "label,input,is_short,edited\n"
        "0,I helped an old lady across the road.,True,False\n"
        "1,I helped an old lady into the river.,True,False\n"
        "1,I stole a car.,True,False\n"
        "0,A very long post,False,False\n",
        encoding="utf-8",
    )
    examples = ethics_commonsense_concept_examples(path)
    assert [(e.group_id, e.label) for e in examples] == [("ethics/2", 0), ("ethics/2", 1), ("ethics/4", 1)]


def test_bad_label_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "cm.csv"
    path.write_text("label,input,is_short\n0,a,True\n2,b,True\n", encoding="utf-8")
    with pytest.raises(ConceptSetError, match=r"cm.csv:3: label '2'"):
        ethics_commonsense_concept_examples(path)


@pytest.mark.skipif(not DATA.is_dir(), reason="the shared benchmark data folder is absent")
def test_external_sets_from_the_shared_files() -> None:
    crows = crows_pairs_concept_examples(DATA / "crows_pairs" / "crows_pairs_anonymized.csv")
    assert len(crows) == 2 * 1508 and len(contrast_pairs(crows)) == 1508
    toxicity = toxicity_concept_examples(DATA / "wiki_toxicity_bias" / "toxicity_nonfuzzed_testset.csv")
    assert (len(toxicity), sum(e.label for e in toxicity)) == (1492, 248)
    ethics = ethics_commonsense_concept_examples(DATA / "ethics" / "commonsense" / "cm_test.csv")
    assert len(ethics) == 2109


def test_contrast_pairs_follow_the_concept_statements() -> None:
    ids = ["a/contrast", "b/concept", "a/concept", "c/concept", "b/contrast", "d/contrast"]
    assert contrast_pair_rows(ids) == [(1, 4), (2, 0)]
    examples = [ConceptExample(example_id, "g", "text", int(example_id.endswith("concept"))) for example_id in ids]
    assert contrast_pairs(examples) == contrast_pair_rows(ids)
