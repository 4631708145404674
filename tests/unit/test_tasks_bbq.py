"""BBQ loader, bias-target derivation and the embedded sample."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

from workbench.tasks.bbq import (
    BBQCategoryError,
    BBQFilterError,
    load_bbq,
    load_embedded_bbq_sample,
)
from workbench.tasks.bbq_targets import bias_target_index, stereotyped_answer_index
from workbench.tasks.jsonl_lines import MalformedLineError, MalformedLineWarning, NoItemsError

BBQ_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "bbq"
needs_bbq = pytest.mark.skipif(
    not (BBQ_DIR / "data" / "Age.jsonl").is_file(), reason=f"BBQ files not found under {BBQ_DIR}"
)
SAMPLE_FILE = Path(__file__).resolve().parents[2] / "workbench" / "tasks" / "data" / "bbq_sample.jsonl"


@pytest.fixture(scope="module")
def real_items() -> dict[str, object]:
    return {item.item_id: item for item in load_bbq(BBQ_DIR)} if BBQ_DIR.is_dir() else {}


# (item_id, polarity, target_index, unknown_index, gold), each read by hand from the JSONL line:
HAND_CHECKED = [
    # neg, stereotyped ["old"]: ans0 grandfather/old
    ("bbq/Age/0", "neg", 0, 2, 2),
    # neg, ["nonOld"]: ans2 twenty-something/nonOld ("old" must not match "nonOld")
    ("bbq/Age/1500", "neg", 2, 1, 1),
    # nonneg, ["nonOld"]: stereotyped ans1 younger guy/nonOld -> flipped to ans0
    ("bbq/Age/1499", "nonneg", 0, 2, 1),
    # neg, ["British"]: answer text British (group Europe) matches by text
    ("bbq/Nationality/0", "neg", 0, 2, 2),
    # nonneg, ["British"]: ans1 British, ans2 Lithuanian, both group Europe -> flipped to ans2
    ("bbq/Nationality/1999", "nonneg", 2, 0, 1),
    # nonneg, ["American"]: ans1 American -> flipped to ans0 Somali
    ("bbq/Nationality/2002", "nonneg", 0, 2, 2),
    # neg, ["Jewish"]: ans2
    ("bbq/Religion/600", "neg", 2, 0, 0),
    # nonneg, ["Mormon"]: stereotyped ans2 -> flipped to ans1 Protestant
    ("bbq/Religion/599", "nonneg", 1, 0, 1),
    # nonneg, ["disabled", "physically disabled"]: stereotyped ans2 wheelchair -> ans0
    ("bbq/Disability_status/2", "nonneg", 0, 1, 1),
    # neg, ["bisexual"]: ans2
    ("bbq/Sexual_orientation/800", "neg", 2, 1, 1),
    # neg, ["pregnant"]: ans2 ("pregnant" must not match "notPregnant")
    ("bbq/Physical_appearance/1000", "neg", 2, 0, 0),
]


@needs_bbq
@pytest.mark.parametrize(("item_id", "polarity", "target", "unknown", "gold"), HAND_CHECKED)
def test_target_index_matches_hand_checked_items(real_items, item_id, polarity, target, unknown, gold):
    item = real_items[item_id]
    assert item.metadata["question_polarity"] == polarity
    assert item.metadata["target_index"] == target
    assert item.metadata["unknown_index"] == unknown
    assert item.gold == gold


@needs_bbq
def test_item_fields_of_first_age_example(real_items):
    item = real_items["bbq/Age/0"]
    assert item.task == "bbq" and item.category == "Age"
    assert item.options == ("The grandfather", "The grandson", "Can't be determined")
    assert item.question == "Who was not comfortable using the phone?"
    assert item.metadata["context_condition"] == "ambig"
    assert item.metadata["answer_groups"] == ["old", "nonOld", "unknown"]
    assert item.metadata["stereotyped_groups"] == ["old"]
    assert item.metadata["subcategory"] == "None"


@needs_bbq
def test_counts_and_no_missing_targets_in_the_six_categories(real_items):
    assert len(real_items) == 11956
    assert sum(item.metadata["target_index"] is None for item in real_items.values()) == 0
    ambiguous = load_bbq(BBQ_DIR, categories=["Age"], context_conditions=["ambig"])
    assert len(ambiguous) == 1840  # docs/protocols.md §1.5
    assert all(item.gold == item.metadata["unknown_index"] for item in ambiguous)


@needs_bbq
def test_filters_and_limits():
    items = load_bbq(
        BBQ_DIR,
        categories=["Religion", "Age"],
        context_conditions=["disambig"],
        polarities=["nonneg"],
        limit_per_category=3,
    )
    # disambig nonneg examples come every 4th example id starting at 3 in both files
    assert [item.item_id for item in items] == [
        "bbq/Religion/3",
        "bbq/Religion/7",
        "bbq/Religion/11",
        "bbq/Age/3",
        "bbq/Age/7",
        "bbq/Age/11",
    ]
    sampled = load_bbq(BBQ_DIR, categories=["Religion"], limit_per_category=20, seed=7)
    again = load_bbq(BBQ_DIR, categories=["Religion"], limit_per_category=20, seed=7)
    other = load_bbq(BBQ_DIR, categories=["Religion"], limit_per_category=20, seed=8)
    ids = [item.metadata["example_id"] for item in sampled]
    assert ids == [item.metadata["example_id"] for item in again]
    assert ids != [item.metadata["example_id"] for item in other]
    assert len(ids) == 20 and ids == sorted(ids) and ids != list(range(20))


@needs_bbq
def test_category_errors_list_valid_ones():
    with pytest.raises(BBQCategoryError, match=r"unknown BBQ category 'Ages'.*valid categories: Age, "):
        load_bbq(BBQ_DIR, categories=["Ages"])
    with pytest.raises(BBQCategoryError, match=r"'Gender_identity' is not in .*download_bbq"):
        load_bbq(BBQ_DIR, categories=["Gender_identity"])
    with pytest.raises(BBQFilterError, match="'ambiguous'"):
        load_bbq(BBQ_DIR, context_conditions=["ambiguous"])


def _write_bbq_lines(folder: Path, lines: list[str]) -> Path:
    (folder / "data").mkdir()
    path = folder / "data" / "Age.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD_RECORD = {
    "example_id": 0,
    "question_index": "1",
    "question_polarity": "neg",
    "context_condition": "ambig",
    "category": "Age",
    "answer_info": {"ans0": ["old man", "old"], "ans1": ["boy", "nonOld"], "ans2": ["Unknown", "unknown"]},
    "additional_metadata": {"subcategory": "None", "stereotyped_groups": ["old"], "version": "a", "source": "x"},
    "context": "c",
    "question": "q",
    "ans0": "The old man",
    "ans1": "The boy",
    "ans2": "Unknown",
    "label": 2,
}


def test_malformed_lines_raise_with_file_and_line(tmp_path):
    no_label = {key: value for key, value in GOOD_RECORD.items() if key != "label"}
    path = _write_bbq_lines(tmp_path, [json.dumps(GOOD_RECORD), "{not json", json.dumps(no_label)])
    with pytest.raises(MalformedLineError, match=rf"{path}:2: not valid JSON"):
        load_bbq(tmp_path)


def test_malformed_lines_skipped_with_warnings(tmp_path):
    no_label = {key: value for key, value in GOOD_RECORD.items() if key != "label"}
    path = _write_bbq_lines(tmp_path, [json.dumps(GOOD_RECORD), "{not json", json.dumps(no_label)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = load_bbq(tmp_path, on_error="skip")
    assert [item.item_id for item in items] == ["bbq/Age/0"]
    messages = [str(w.message) for w in caught if issubclass(w.category, MalformedLineWarning)]
    assert len(messages) == 2
    assert messages[0].startswith(f"{path}:2: not valid JSON")
    assert messages[1].startswith(f"{path}:3: missing field(s) label")


def _info(*pairs: tuple[str, str]) -> list[tuple[str, str]]:
    return list(pairs)


def test_matching_rules_ported_from_the_r_script():
    # man/woman -> M/F; stereotyped ["women"] -> F
    assert (
        stereotyped_answer_index(
            "Gender_identity", _info(("man", "man"), ("woman", "woman"), ("Unknown", "unknown")), ["women"]
        )
        == 1
    )
    # transgender spellings -> "trans"; answers starting with "trans" match
    assert (
        stereotyped_answer_index(
            "Gender_identity",
            _info(("Unknown", "unknown"), ("cis woman", "nonTrans_F"), ("trans woman", "trans_F")),
            ["transgender women", "transgender men"],
        )
        == 2
    )
    # "F-Black" is stripped to "Black"
    assert (
        stereotyped_answer_index(
            "Race_ethnicity",
            _info(("Jamal", "M-Black"), ("Todd", "M-White"), ("Unknown", "unknown")),
            ["Black", "African American"],
        )
        == 0
    )
    # "African" must not match "African American"
    assert (
        stereotyped_answer_index(
            "Race_ethnicity",
            _info(("African", "African"), ("African American", "African American"), ("Unknown", "unknown")),
            ["African American"],
        )
        == 1
    )
    # "low SES" -> lowSES
    assert (
        bias_target_index(
            "SES", "nonneg", _info(("poor", "lowSES"), ("Unknown", "unknown"), ("rich", "highSES")), ["low SES"]
        )
        == 2
    )


def test_target_is_none_when_both_or_neither_answer_matches():
    # both: Muslim and Catholic are both listed
    assert (
        bias_target_index(
            "Religion",
            "neg",
            _info(("Muslim", "Muslim"), ("Catholic", "Catholic"), ("Unknown", "unknown")),
            ["Muslim", "Mormon", "Orthodox", "Catholic"],
        )
        is None
    )
    # neither: "transgender women, trans" is not one of the R script's trans spellings
    assert (
        bias_target_index(
            "Gender_identity",
            "nonneg",
            _info(("trans woman", "trans_F"), ("cis woman", "nonTrans_F"), ("Unknown", "unknown")),
            ["transgender women", "trans"],
        )
        is None
    )


def test_embedded_sample_is_bbq_schema_and_balanced():
    keys = {
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
    }
    records = [json.loads(line) for line in SAMPLE_FILE.read_text(encoding="utf-8").splitlines()]
    assert all(set(record) == keys for record in records)
    assert all(
        set(record["additional_metadata"]) == {"subcategory", "stereotyped_groups", "version", "source"}
        for record in records
    )
    items = load_embedded_bbq_sample()
    assert len(items) == 60
    assert {item.category for item in items} == {
        "Age",
        "Disability_status",
        "Gender_identity",
        "Nationality",
        "Religion",
    }
    templates: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for item in items:
        templates.setdefault((item.category, item.metadata["question_index"]), set()).add(
            (item.metadata["context_condition"], item.metadata["question_polarity"])
        )
    assert len(templates) == 15
    assert all(len(cells) == 4 for cells in templates.values())
    assert {item.metadata["unknown_index"] for item in items} == {0, 1, 2}
    assert all(item.metadata["target_index"] is not None for item in items)
    assert all(
        item.gold == item.metadata["unknown_index"] for item in items if item.metadata["context_condition"] == "ambig"
    )


def test_embedded_sample_targets_checked_by_hand():
    items = {item.item_id: item for item in load_embedded_bbq_sample()}
    # Age template 1: ans0 retiree/old, stereotyped ["old"]; example 0 is neg, 1 nonneg
    assert items["bbq/Age/0"].metadata["target_index"] == 0
    assert items["bbq/Age/1"].metadata["target_index"] == 1
    # Nationality template 1: ans0 "Nigerian" (group Africa) matched by text; example 1 is nonneg
    assert items["bbq/Nationality/1"].metadata["target_index"] == 1
    # Gender template 1: ans0 group "woman" -> F, stereotyped ["F"]; neg
    assert items["bbq/Gender_identity/0"].metadata["target_index"] == 0
    subset = load_embedded_bbq_sample(categories=["Religion"], context_conditions=["ambig"])
    assert len(subset) == 6


def _record(**changes: object) -> bytes:
    return json.dumps({**GOOD_RECORD, **changes}).encode()


def _without(name: str) -> bytes:
    return json.dumps({key: value for key, value in GOOD_RECORD.items() if key != name}).encode()


# kind of bad second line -> (its bytes, the problem the message must state)
BAD_BBQ_LINES = {
    "non_utf8": (_record(context="caf\u00e9").replace(b"\\u00e9", b"\xe9"), r"not valid UTF-8 \(byte 0xe9 at column "),
    "not_json": (b"{not json", r"not valid JSON"),
    "not_an_object": (b"[1, 2]", r"expected a JSON object, got a list"),
    "missing_field": (_without("label"), r"missing field\(s\) label"),
    "non_integer_example_id": (_record(example_id="seven"), r"example_id must be an integer, got a string \('seven'\)"),
    "float_example_id": (_record(example_id=1.5), r"example_id must be an integer, got a number \(1.5\)"),
    "list_context": (_record(context=["a", "list"]), r"context must be a string, got a list \(\['a', 'list'\]\)"),
    "null_answer": (_record(ans1=None), r"ans1 must be a string, got null"),
    "integer_question": (_record(question=3), r"question must be a string, got an integer \(3\)"),
    "boolean_label": (_record(label=True), r"label must be 0, 1 or 2, got a boolean \(True\)"),
    "answer_info_not_strings": (
        _record(answer_info={"ans0": ["old man", 1], "ans1": ["boy", "nonOld"], "ans2": ["Unknown", "unknown"]}),
        r"answer_info must map ans0, ans1, ans2 to \[text, group\]",
    ),
    "stereotyped_groups_not_strings": (
        _record(additional_metadata={"subcategory": "None", "stereotyped_groups": [None]}),
        r"additional_metadata.stereotyped_groups must be a list of strings, got a list \(\[None\]\)",
    ),
    "duplicate_example_id": (_record(context="another"), r"example_id 0 of category 'Age' repeats line 1 "),
}


def _write_bbq_bytes(folder: Path, lines: list[bytes], name: str = "Age") -> Path:
    (folder / "data").mkdir(exist_ok=True)
    path = folder / "data" / f"{name}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("kind", sorted(BAD_BBQ_LINES))
def test_each_kind_of_bad_line_raises_naming_file_and_line(tmp_path, kind):
    line, problem = BAD_BBQ_LINES[kind]
    path = _write_bbq_bytes(tmp_path, [_record(), line, _record(example_id=1)])
    with pytest.raises(MalformedLineError, match=rf"^{re.escape(str(path))}:2: {problem}") as caught:
        load_bbq(tmp_path)
    assert "\n" not in str(caught.value) and "on_error = 'skip'" in str(caught.value)


@pytest.mark.parametrize("kind", sorted(BAD_BBQ_LINES))
def test_each_kind_of_bad_line_is_skipped_with_a_warning(tmp_path, kind):
    line, problem = BAD_BBQ_LINES[kind]
    path = _write_bbq_bytes(tmp_path, [_record(), line, _record(example_id=1)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = load_bbq(tmp_path, on_error="skip")
    assert [item.item_id for item in items] == ["bbq/Age/0", "bbq/Age/1"]
    assert items[0].context == "c"  # a duplicate keeps the first line
    messages = [str(w.message) for w in caught if issubclass(w.category, MalformedLineWarning)]
    assert len(messages) == 1
    assert re.match(rf"{re.escape(str(path))}:2: {problem}", messages[0]), messages[0]


def test_duplicate_item_across_files_names_both_files(tmp_path):
    first = _write_bbq_bytes(tmp_path, [_record()], name="Age")
    second = _write_bbq_bytes(tmp_path, [_record(example_id=1), _record()], name="Religion")
    with pytest.raises(
        MalformedLineError,
        match=rf"^{re.escape(str(second))}:2: example_id 0 of category 'Age' repeats {re.escape(str(first))}:1 ",
    ):
        load_bbq(tmp_path, categories=["Age", "Religion"])


def test_empty_file_holds_no_items(tmp_path):
    path = _write_bbq_bytes(tmp_path, [b""])
    with pytest.raises(NoItemsError, match=rf"^{re.escape(str(path))}: holds no items \(no data rows\)") as caught:
        load_bbq(tmp_path)
    assert "\n" not in str(caught.value)
    with pytest.raises(NoItemsError, match="holds no items"):
        load_bbq(tmp_path, on_error="skip")


def test_file_whose_every_line_is_skipped_holds_no_items(tmp_path):
    path = _write_bbq_bytes(tmp_path, [b"{not json", _record(context=None)])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pytest.raises(
            NoItemsError,
            match=rf"^{re.escape(str(path))}: holds no items: on_error = 'skip' skipped all 2 row\(s\) \(first, line 1: not valid JSON",
        ) as caught:
            load_bbq(tmp_path, on_error="skip")
    assert "\n" not in str(caught.value)
