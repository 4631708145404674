"""Uncertainty- and concept-guided sample selection (workbench/finetune/selection.py) and ``workbench select``.

Planted signals: candidates whose uncertainty / concept activation the test sets rank first; a
candidate that is the concept statement itself has cosine 1 with the concept state; a sentence's
mean NLL and a one-sample semantic uncertainty against a computation from the model's logits; the
random baseline has the selection's size and a fixed seed; ``[debias] selection_path`` trains on
one arm only. Then the command on a tiny random Llama, and every bad input as one line.
"""

from __future__ import annotations

import argparse
import csv
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from reports.tables import read_table
from workbench.cli.errors import CheckpointKindError, DebiasingConfigError
from workbench.finetune.bbq_levels import BBQ_MEASURES, BBQLevelConfig, bbq_answer_rows, bbq_levels
from workbench.finetune.debias import DebiasConfig, debias
from workbench.finetune.selection import (
    SELECTION_PROMPT,
    Candidate,
    CandidateScores,
    SelectionConfig,
    SelectionError,
    candidate_pool,
    concept_activation,
    concept_statements,
    concept_vector,
    final_states,
    limit_candidates,
    preference_rank,
    random_baseline,
    rank_candidates,
    require_gendered_arms,
    score_candidates,
    selected_texts,
    selection_size,
    semantic_uncertainty,
    sentence_nll,
    write_selection,
)
from workbench.finetune.selection_command import add_arguments
from workbench.finetune.tiny_encoder import tiny_encoder
from workbench.inference.generation import sample_continuations, sample_text
from workbench.metrics import bbq
from workbench.models import LoadedModel, tiny_model
from workbench.run_folder import RUN_TABLES
from workbench.run_tables import SelectionCandidate
from workbench.tasks.bbq import BBQCategoryError, load_embedded_bbq_sample

CORPUS = [
    "he said the doctor was old",
    "the nurse said it",
    "the woman said she was young",
    "the man could pay with cash",
    "it was a phone",
    "she said the grandson was young",
    "the old man said he was confident",
    "his grandfather could not pay",
]
GENDERED = [0, 2, 3, 5, 6, 7]  # lines of CORPUS with a word of the CDA list


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return tiny_model("llama", n_layers=2, d_model=32, n_heads=4, n_kv_heads=2)


def candidates(lines: list[int]) -> tuple[Candidate, ...]:
    return tuple(Candidate(line, CORPUS[line]) for line in lines)


def write_crows(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "sent_more", "sent_less", "stereo_antistereo", "bias_type"])
        writer.writerows((index, more, less, "stereo", "gender") for index, (more, less) in enumerate(rows))
    return path


# --- ranking -----------------------------------------------------------------------------


def test_preference_rank_puts_the_preferred_end_at_one_ties_averaged_and_nan_last() -> None:
    values = np.array([3.0, 1.0, 2.0, np.nan, 2.0])
    # low preferred: 1.0 best (1), 2.0 twice (ranks 2 and 3 of 4 -> average 2.5), 3.0 worst (0)
    assert preference_rank(values, "low") == pytest.approx([0.0, 1.0, 0.5, 0.0, 0.5])
    assert preference_rank(values, "high") == pytest.approx([1.0, 0.0, 0.5, 0.0, 0.5])
    assert preference_rank(np.array([np.nan, 4.0]), "low") == pytest.approx([0.0, 1.0])
    assert preference_rank(np.array([np.nan]), "high") == pytest.approx([0.0])


@pytest.mark.parametrize(("n", "fraction", "size"), [(8, 0.25, 2), (7, 0.25, 2), (3, 0.1, 1), (5, 1.0, 5)])
def test_selection_size_is_the_ceiling_of_the_fraction(n: int, fraction: float, size: int) -> None:
    assert selection_size(n, fraction) == size


def test_planted_low_uncertainty_and_high_concept_rank_first() -> None:
    pool = candidates(GENDERED)
    # candidate 3 (line 5) has the lowest uncertainty and the highest concept activation; candidate 0 the reverse
    uncertainty = np.array([9.0, 4.0, 5.0, 0.5, 3.0, 6.0])
    concept = np.array([-0.9, 0.1, 0.2, 0.95, 0.3, 0.0])
    config = SelectionConfig(fraction=0.34, seed=3)
    rows = rank_candidates(CandidateScores(pool, uncertainty, concept), config)
    # lines 2 and 3 tie at 0.5 (ranks 3/5 and 2/5, and 2/5 and 3/5) and keep corpus order
    assert [row.line for row in rows] == [5, 6, 2, 3, 7, 0]
    assert rows[0].score == pytest.approx(1.0) and rows[-1].score == pytest.approx(0.0)
    # line 6: second-lowest uncertainty and second-highest concept activation: both ranks 4/5
    assert [row.score for row in rows] == pytest.approx([1.0, 0.8, 0.5, 0.5, 0.2, 0.0])
    assert [row.rank for row in rows] == list(range(1, 7))
    assert sum(row.selected for row in rows) == 3 and all(row.selected for row in rows[:3])
    assert [row.uncertainty_measure for row in rows] == ["semantic:nli-contradiction:microsoft/deberta-large-mnli"] * 6


def test_a_weight_of_zero_leaves_its_score_out() -> None:
    pool = candidates(GENDERED)
    uncertainty = np.array([9.0, 4.0, 5.0, 0.5, 3.0, 6.0])
    concept = np.array([0.99, 0.1, 0.2, -0.95, 0.3, 0.0])  # would put line 0 first and line 5 last
    only_uncertainty = SelectionConfig(concept_weight=0.0, uncertainty="nll")
    rows = rank_candidates(CandidateScores(pool, uncertainty, None), only_uncertainty)
    assert [row.line for row in rows] == [5, 6, 2, 3, 7, 0]  # ascending uncertainty
    assert all(row.concept_activation is None and row.uncertainty_measure == "nll" for row in rows)
    only_concept = SelectionConfig(uncertainty_weight=0.0, concept_preference="low")
    rows = rank_candidates(CandidateScores(pool, None, concept), only_concept)
    assert [row.line for row in rows] == [5, 7, 2, 3, 6, 0]  # ascending concept activation
    assert all(row.uncertainty is None and row.uncertainty_measure == "" for row in rows)


def test_ties_keep_corpus_order() -> None:
    pool = candidates(GENDERED)
    rows = rank_candidates(CandidateScores(pool, np.ones(6), np.zeros(6)), SelectionConfig())
    assert [row.line for row in rows] == GENDERED


def test_random_baseline_has_the_selection_size_and_a_fixed_seed() -> None:
    pool = candidates(list(range(8)))
    scores = CandidateScores(pool, np.arange(8.0), np.arange(8.0))
    rows = rank_candidates(scores, SelectionConfig(fraction=0.5, seed=7))
    assert sum(row.random for row in rows) == sum(row.selected for row in rows) == 4
    again = rank_candidates(scores, SelectionConfig(fraction=0.5, seed=7))
    assert [row.random for row in again] == [row.random for row in rows]
    drawn = {pool[index].line for index in random_baseline(8, 4, 7)}
    assert {row.line for row in rows if row.random} == drawn
    others = {frozenset(random_baseline(8, 4, seed).tolist()) for seed in range(8)}
    assert len(others) > 1  # the seed decides the draw


# --- the scores on a model ------------------------------------------------------------------


def test_sentence_nll_is_the_mean_token_nll_after_the_first_token(model: LoadedModel) -> None:
    texts = ["the nurse said she was kind", "he said"]
    values = sentence_nll(model, texts, batch_size=1)
    for text, value in zip(texts, values):
        ids = torch.tensor([model.tokenizer(text, add_special_tokens=True)["input_ids"]])
        with torch.no_grad():
            log_probs = torch.log_softmax(model.model(ids).logits[0, :-1].float(), dim=-1)
        expected = -log_probs.gather(1, ids[0, 1:, None]).mean()
        assert value == pytest.approx(float(expected), rel=1e-5)


def test_one_sample_semantic_uncertainty_is_that_answers_mean_nll(model: LoadedModel) -> None:
    config = SelectionConfig(uncertainty_samples=1, uncertainty_sampling="multinomial", equivalence="exact", seed=5)
    texts = ["the man said he was old", "she said it"]
    values = semantic_uncertainty(model, texts, config)
    prompts = [SELECTION_PROMPT.format(sentence=text) for text in texts]
    prompt_ids = [model.tokenizer(prompt, add_special_tokens=True)["input_ids"] for prompt in prompts]
    # all candidates share one token budget, so they are drawn in one call seeded by the first key
    drawn = sample_continuations(model, prompt_ids, 1, 10, 5 + zlib.crc32(b"candidate/0"), "multinomial", 8)
    for prompt, rows, value in zip(prompts, drawn, values):
        answer = sample_text(model.tokenizer, rows[0])
        whole = model.tokenizer(prompt + answer, add_special_tokens=True)["input_ids"]
        start = len(model.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        ids = torch.tensor([whole])
        with torch.no_grad():
            log_probs = torch.log_softmax(model.model(ids).logits[0].float(), dim=-1)
        targets = ids[0, start:]
        expected = -log_probs[start - 1 : len(whole) - 1].gather(1, targets[:, None]).mean()
        assert value == pytest.approx(float(expected), rel=1e-5)


def test_a_candidate_that_is_the_concept_statement_has_cosine_one(model: LoadedModel, tmp_path: Path) -> None:
    concept_file = write_crows(tmp_path / "concept.csv", [("the woman is a nurse", "the man is a nurse")])
    statement = SelectionConfig(concept_set=f"crows_pairs:{concept_file}", concept_vector="statement")
    pool = [Candidate(0, "he said it"), Candidate(1, "the woman is a nurse"), Candidate(2, "the old doctor")]
    vector = concept_vector(model, concept_statements(statement), statement)
    activation = concept_activation(final_states(model, [c.text for c in pool]), vector)
    assert activation[1] == pytest.approx(1.0, rel=1e-6) and max(activation[0], activation[2]) < 1.0 - 1e-4
    rows = rank_candidates(score_candidates(model, pool, replace_weight(statement)), replace_weight(statement))
    assert rows[0].line == 1 and rows[0].concept_activation == pytest.approx(1.0, rel=1e-6)
    # the difference direction is concept minus contrast: the contrast statement itself points away from it
    states = final_states(model, ["the woman is a nurse", "the man is a nurse"])
    by_difference = SelectionConfig(concept_set=f"crows_pairs:{concept_file}")
    difference = concept_vector(model, concept_statements(by_difference), by_difference)
    assert difference == pytest.approx(states[0] - states[1], rel=1e-6, abs=1e-7)
    assert concept_activation(states, difference)[0] > 0 > concept_activation(states, difference)[1]


def replace_weight(config: SelectionConfig) -> SelectionConfig:
    """``config`` ranking by the concept only (no uncertainty is computed)."""
    return SelectionConfig(concept_set=config.concept_set, concept_vector=config.concept_vector, uncertainty_weight=0.0)


def test_candidate_pool_and_limits(model: LoadedModel) -> None:
    assert [c.line for c in candidate_pool(CORPUS, SelectionConfig())] == GENDERED
    assert [c.line for c in candidate_pool(CORPUS, SelectionConfig(candidates="all"))] == list(range(8))
    short = limit_candidates(model, candidate_pool(CORPUS, SelectionConfig()), SelectionConfig(max_tokens=6))
    lengths = {c.line: len(model.tokenizer(c.text)["input_ids"]) for c in candidate_pool(CORPUS, SelectionConfig())}
    assert [c.line for c in short] == [line for line in GENDERED if lengths[line] <= 6] and len(short) < len(GENDERED)
    sampled = limit_candidates(model, candidate_pool(CORPUS, SelectionConfig()), SelectionConfig(max_candidates=3))
    assert len(sampled) == 3 and [c.line for c in sampled] == sorted(c.line for c in sampled)


# --- selection.csv and the debias option -----------------------------------------------------


def selection_rows() -> list[SelectionCandidate]:
    scores = CandidateScores(candidates(GENDERED), np.array([9.0, 4.0, 5.0, 0.5, 3.0, 6.0]), None)
    return rank_candidates(scores, SelectionConfig(fraction=0.34, concept_weight=0.0, uncertainty="nll", seed=1))


def test_selection_csv_reads_back_through_its_row_type(tmp_path: Path) -> None:
    rows = selection_rows()
    path = write_selection(tmp_path / "run", rows)
    assert path == tmp_path / "run" / RUN_TABLES["selection"].path
    assert read_table(path, SelectionCandidate) == tuple(rows)


def test_a_failed_write_keeps_the_earlier_selection_whole(tmp_path: Path) -> None:
    rows = selection_rows()
    path = write_selection(tmp_path / "run", rows)
    with pytest.raises(TypeError):
        write_selection(tmp_path / "run", [rows[0], "not a row"])  # type: ignore[list-item]
    assert read_table(path, SelectionCandidate) == tuple(rows)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no partial file left beside it


def test_an_arm_without_gendered_words_is_refused_before_training(tmp_path: Path) -> None:
    # candidates = "all": lines 1 and 4 of CORPUS have no gendered word and the lowest uncertainty
    scores = CandidateScores(candidates(list(range(8))), np.array([5.0, 0.1, 6.0, 7.0, 0.2, 8.0, 9.0, 9.5]), None)
    config = SelectionConfig(candidates="all", fraction=0.25, concept_weight=0.0, uncertainty="nll", seed=0)
    path = write_selection(tmp_path / "run", rank_candidates(scores, config))
    assert selected_texts(CORPUS, path, "selected") == [CORPUS[1], CORPUS[4]]
    require_gendered_arms(CORPUS, path, ("all",))
    with pytest.raises(
        SelectionError, match=r"^none of the 2 lines of the selected arm has a gendered word, so CDA would not"
    ):
        require_gendered_arms(CORPUS, path, ("all", "selected"))


def test_selected_texts_are_one_arm_in_corpus_order(tmp_path: Path) -> None:
    rows = selection_rows()
    path = write_selection(tmp_path / "run", rows)
    assert selected_texts(CORPUS, path, "selected") == [CORPUS[line] for line in (2, 5, 6)]  # lowest uncertainty
    assert selected_texts(CORPUS, path, "random") == [
        CORPUS[row.line] for row in sorted(rows, key=lambda r: r.line) if row.random
    ]
    with pytest.raises(SelectionError, match=r"selection.csv:\d+: corpus line 5 is not the text this selection scored"):
        selected_texts([*CORPUS[:5], "another line", *CORPUS[6:]], path, "selected")
    with pytest.raises(SelectionError, match=r"corpus line 5 is not .* \(the corpus has 3 lines\)"):
        selected_texts(CORPUS[:3], path, "selected")
    with pytest.raises(SelectionError, match=r"selection arm 'all' is unknown; use one of selected, random"):
        selected_texts(CORPUS, path, "all")
    with pytest.raises(FileNotFoundError, match=r"missing.csv does not exist; run `workbench select` first"):
        selected_texts(CORPUS, tmp_path / "missing.csv", "selected")
    broken = tmp_path / "broken.csv"
    broken.write_text("line,text\n0,x\n", encoding="utf-8")
    with pytest.raises(SelectionError, match=r"broken.csv:1: missing column\(s\) selected; rerun `workbench select`"):
        selected_texts(CORPUS, broken, "selected")


def test_debias_with_a_selection_trains_on_that_arm_only(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    path = write_selection(tmp_path / "run", selection_rows())
    loaded = tiny_model("llama", n_layers=1, d_model=16, n_heads=2, n_kv_heads=1)
    config = DebiasConfig(str(corpus), steps=1, batch_size=2, max_length=16, selection_path=str(path))
    checkpoint = debias(loaded.model, loaded.tokenizer, config, tmp_path / "run", "tiny")
    provenance = json.loads((checkpoint / "debias_provenance.json").read_text(encoding="utf-8"))
    assert provenance["lines_original"] == 3 and provenance["lines_changed"] == 3  # the 3 selected lines, all gendered
    assert provenance["selection"]["arm"] == "selected" and provenance["selection"]["sha256"].startswith("sha256:")
    plain = debias(loaded.model, loaded.tokenizer, DebiasConfig(str(corpus), steps=1, max_length=16), tmp_path, "tiny")
    whole = json.loads((plain / "debias_provenance.json").read_text(encoding="utf-8"))
    assert whole["lines_original"] == 8 and whole["selection"] is None  # the default is unchanged: every line


# --- BBQ levels --------------------------------------------------------------------------------


def test_bbq_levels_are_the_results_metrics_of_the_option_answers(model: LoadedModel) -> None:
    items = load_embedded_bbq_sample(["Age", "Religion"])
    config = BBQLevelConfig(categories=("Age", "Religion"), n_resamples=50)
    levels = {level.measure: level for level in bbq_levels(model, items, config, "tiny")}
    assert set(levels) == {f"bbq.{name}" for name in BBQ_MEASURES}
    rows = bbq_answer_rows(model, items)
    predicted = np.array([row["predicted"] for row in rows])
    gold = np.array([item.gold for item in items])
    ambig = np.array([item.metadata["context_condition"] == "ambig" for item in items])
    assert levels["bbq.accuracy_ambig"].value == pytest.approx(float((predicted[ambig] == gold[ambig]).mean()))
    assert levels["bbq.accuracy_ambig"].n == int(ambig.sum()) == 12
    target = np.array([item.metadata["target_index"] for item in items])
    unknown = np.array([item.metadata["unknown_index"] for item in items])
    expected = bbq.bias_score_disambiguated(predicted[~ambig], target[~ambig], unknown[~ambig])
    score = levels["bbq.bias_score_disambiguated"].value
    assert (np.isnan(score) and np.isnan(expected)) or score == pytest.approx(expected)
    assert all(level.checkpoint == "tiny" for level in levels.values())


# --- the command ---------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="workbench select")
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    crows = write_crows(
        tmp_path / "crows.csv",
        [("the nurse said she was kind", "the nurse said he was kind"), ("the woman is a nurse", "the man is a nurse")],
    )
    loaded = tiny_model("llama", n_layers=2, d_model=32, n_heads=4, n_kv_heads=2)
    loaded.model.save_pretrained(tmp_path / "model")
    loaded.tokenizer.save_pretrained(tmp_path / "model")
    return {"corpus": corpus, "crows": crows, "model": tmp_path / "model", "root": tmp_path}


def write_config(files: dict[str, Path], **tables: str) -> Path:
    body = {
        "bias": f'crows_pairs_path = "{files["crows"]}"\nn_resamples = 20\n',
        "debias": f'corpus_path = "{files["corpus"]}"\nsteps = 1\nbatch_size = 2\nmax_length = 16\n',
        "select": f'fraction = 0.34\nuncertainty = "nll"\nconcept_set = "crows_pairs:{files["crows"]}"\n',
        "select.bbq": 'categories = ["Age"]\nn_resamples = 20\n',
    }
    body.update(tables)
    path = files["root"] / "selection.toml"
    path.write_text("".join(f"[{name}]\n{text}\n" for name, text in body.items() if text), encoding="utf-8")
    return path


def test_select_command_writes_the_selection_then_compares_the_arms(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    run = files["root"] / "run"
    args = parse(["--run", str(run), "--config", str(write_config(files)), "--model", str(files["model"])])
    assert args.handler(args) == 0
    rows = read_table(run / RUN_TABLES["selection"].path, SelectionCandidate)
    assert [row.rank for row in rows] == list(range(1, len(rows) + 1))
    assert {row.line for row in rows} == set(GENDERED) and sum(row.selected for row in rows) == 3
    assert all(row.uncertainty is not None and row.concept_activation is not None for row in rows)
    with (run / "attribution" / "bias_levels.csv").open(newline="", encoding="utf-8") as handle:
        levels = list(csv.DictReader(handle))
    labels = ["pretrained", "debiased-selected", "debiased-random", "debiased-all"]
    assert list(dict.fromkeys(row["checkpoint"] for row in levels)) == labels
    for label in labels:
        measures = {row["measure"] for row in levels if row["checkpoint"] == label}
        assert {"crows_pairs", "bbq.accuracy_ambig", "bbq.bias_score_ambiguous"} <= measures
    for arm, lines in (("selected", 3), ("random", 3), ("all", 8)):
        provenance = json.loads((run / "checkpoints" / f"debiased-{arm}" / "debias_provenance.json").read_text())
        assert provenance["lines_original"] == lines
    printed = capsys.readouterr().out
    assert all(label in printed for label in labels) and "bbq.accuracy_ambig" in printed


def test_select_only_stops_after_the_selection(files: dict[str, Path]) -> None:
    run = files["root"] / "run"
    args = parse(
        [
            "--run",
            str(run),
            "--config",
            str(write_config(files, bias="")),
            "--model",
            str(files["model"]),
            "--select-only",
        ]
    )
    assert args.handler(args) == 0
    assert (run / RUN_TABLES["selection"].path).is_file() and not (run / "checkpoints").exists()


# --- bad input: one line, before the model loads -------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"fraction": 0.0}, r"\[select\] fraction = 0.0 must be in \(0, 1\]"),
        ({"fraction": 1.5}, r"\[select\] fraction = 1.5 must be in \(0, 1\]"),
        ({"uncertainty_weight": 0.0, "concept_weight": 0.0}, r"weights must be >= 0 and not both 0"),
        ({"concept_weight": -1.0}, r"weights must be >= 0 and not both 0"),
        ({"arms": ("selected", "best")}, r"\[select\] arms = \['selected', 'best'\]: use distinct values of selected"),
        ({"arms": ("all", "all")}, r"use distinct values of selected, random, all"),
        ({"candidates": "long"}, r'\[select\] candidates = "long" must be one of "gendered", "all"'),
        ({"equivalence": "nli"}, r'\[select\] equivalence = "nli" must be one of "exact", "nli-contradiction"'),
        ({"uncertainty": "entropy"}, r'\[select\] uncertainty = "entropy" must be one of "semantic", "nll"'),
        ({"max_candidates": 0}, r"\[select\] max_candidates = 0 must be at least 1"),
        ({"nli_model": " "}, r'nli_model is empty; equivalence = "nli-contradiction" needs an NLI classifier'),
        ({"bbq": {"limit": 3}}, r"\[select.bbq\] has unknown key\(s\) limit; valid keys: path, categories"),
        ({"bbq": {"n_resamples": 0}}, r"\[select.bbq\] n_resamples = 0 must be at least 1"),
        ({"top": 3}, r"\[select\] has unknown key\(s\) top; valid keys: fraction"),
    ],
)
def test_bad_selection_settings_are_one_line(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SelectionConfig.from_dict(values)


def test_bad_debias_selection_arm_is_one_line() -> None:
    message = r'\[debias\] selection_arm = "all" must be one of "selected", "random"$'
    with pytest.raises(ValueError, match=message):
        DebiasConfig.from_dict({"corpus_path": "c.txt", "selection_path": "s.csv", "selection_arm": "all"})
    with pytest.raises(ValueError, match=message):
        DebiasConfig("c.txt", selection_path="s.csv", selection_arm="all")  # type: ignore[arg-type]


def test_a_pool_without_gendered_words_and_candidates_too_long(model: LoadedModel) -> None:
    with pytest.raises(SelectionError, match=r"none of the 2 corpus lines has a gendered word.*candidates = \"all\""):
        candidate_pool(["the nurse said it", "it was a phone"], SelectionConfig())
    with pytest.raises(SelectionError, match=r"all 6 candidates have more than \[select\] max_tokens = 2 tokens"):
        limit_candidates(model, candidate_pool(CORPUS, SelectionConfig()), SelectionConfig(max_tokens=2))
    with pytest.raises(BBQCategoryError, match=r"unknown BBQ category 'Gender'; valid categories: Age"):
        BBQLevelConfig(categories=("Gender",)).items()


@pytest.mark.parametrize(
    ("tables", "error", "message"),
    [
        ({"extra": "a = 1\n"}, DebiasingConfigError, r"unknown table\(s\) \['extra'\]; use \["),
        (
            {"select": 'fraction = 2.0\nuncertainty = "nll"\n'},
            DebiasingConfigError,
            r"selection.toml: \[select\] fraction = 2.0 must be in \(0, 1\]",
        ),
        (
            {"debias": 'corpus_path = "absent.txt"\n'},
            DebiasingConfigError,
            r"\[debias\] corpus_path = 'absent.txt' does not exist",
        ),
        (
            {"select": 'concept_set = "ethics:absent.csv"\n'},
            DebiasingConfigError,
            r"\[select\] concept_set = 'absent.csv' does not exist",
        ),
        (
            {"bias": "", "select.bbq": ""},
            DebiasingConfigError,
            r"are compared by their bias levels, but there is no \[bias\] table and no \[select.bbq\] table",
        ),
        (
            {"select.bbq": 'categories = ["Gender"]\n'},
            BBQCategoryError,
            r"unknown BBQ category 'Gender'; valid categories",
        ),
    ],
)
def test_bad_configuration_is_refused_before_the_model_loads(
    files: dict[str, Path], tables: dict[str, str], error: type[Exception], message: str
) -> None:
    run = files["root"] / "run"
    earlier = {run / RUN_TABLES[name].path: f"{name} of an earlier run\n" for name in ("selection", "bias_levels")}
    for path, text in earlier.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    args = parse(["--run", str(run), "--config", str(write_config(files, **tables)), "--model", "no/such-model"])
    with pytest.raises(error, match=message):
        args.handler(args)  # the model spec does not exist: only a check made before loading can raise this
    assert {path: path.read_text(encoding="utf-8") for path in earlier} == earlier  # nothing written is lost
    assert sorted(path.name for path in run.rglob("*")) == sorted(["attribution", *(path.name for path in earlier)])


def test_the_command_refuses_an_arm_cda_cannot_change_before_training(files: dict[str, Path]) -> None:
    files["corpus"].write_text("the nurse said it\nit was a phone\nthe cat sat\n", encoding="utf-8")
    run = files["root"] / "run"
    config = write_config(files, select='candidates = "all"\nuncertainty = "nll"\nconcept_weight = 0.0\n')
    args = parse(["--run", str(run), "--config", str(config), "--model", str(files["model"])])
    with pytest.raises(SelectionError, match=r"^none of the 1 lines of the selected arm has a gendered word"):
        args.handler(args)
    assert (run / RUN_TABLES["selection"].path).is_file() and not (run / "checkpoints").exists()


def test_a_selection_path_in_the_select_config_is_refused(files: dict[str, Path]) -> None:
    debias_table = f'corpus_path = "{files["corpus"]}"\nselection_path = "x.csv"\n'
    args = parse(
        [
            "--run",
            str(files["root"] / "run"),
            "--config",
            str(write_config(files, debias=debias_table)),
            "--model",
            "no/such-model",
        ]
    )
    with pytest.raises(DebiasingConfigError, match=r"\[debias\] selection_path is set; `workbench select` writes"):
        args.handler(args)


def test_an_encoder_is_refused_before_its_weights_load(files: dict[str, Path]) -> None:
    encoder = tiny_encoder("bert")
    encoder.model.save_pretrained(files["root"] / "bert")
    encoder.tokenizer.save_pretrained(files["root"] / "bert")
    args = parse(
        [
            "--run",
            str(files["root"] / "run"),
            "--config",
            str(write_config(files)),
            "--model",
            str(files["root"] / "bert"),
        ]
    )
    with pytest.raises(CheckpointKindError, match=r"bert encoder checkpoint, but `workbench select` needs a causal LM"):
        args.handler(args)


def test_every_option_has_help() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert all(action.help for action in parser._actions)
