"""The report's opening summary (reports.summary, reports.summary_section) against hand-computed tables.

The synthetic run folder is written with the run folder's own writer contract (typed rows of
workbench.run_tables, cells by ``row_cells``, paths by ``RunFolder.table``). Its numbers are chosen so
that every statement can be worked out by hand; the expected values below are those hand computations.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from reports import build_report
from reports.run_results import RunResults
from reports.summary import (
    TableEstimate,
    best_probe_layer,
    category_biases,
    moved,
    reference_condition,
    summarise,
)
from workbench.metrics.statistics import PairedChange, bootstrap_ci, paired_change, sign_flip_p_value
from workbench.run_folder import RUN_TABLES, RunFolder
from workbench.run_tables import (
    BBQCategoryMetric,
    BehaviourMetric,
    ConvergenceRound,
    ItemAnswer,
    LayerScore,
    MoralityLevel,
    PairedTest,
    row_cells,
)

N0 = "instr=none+cot=off+fb=off"
I0 = "instr=intrinsic+cot=off+fb=off"
N1 = "instr=none+cot=on+fb=off"
I1 = "instr=intrinsic+cot=on+fb=off"
SITE = "hook_resid_post"
BIAS = "bias_score_ambiguous"
UNDEFINED = "no non-unknown answer"


def write_rows(run_dir: Path, name: str, rows: Sequence[object]) -> None:
    """Write the table ``name`` of RUN_TABLES from typed rows, as the stages do."""
    path = RunFolder(run_dir).table(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(RUN_TABLES[name].columns)
        writer.writerows(row_cells(row) for row in rows)  # type: ignore[arg-type]


def _correct(values: str) -> list[bool | None]:
    return [{"T": True, "F": False, "-": None}[v] for v in values]


# item correctness per condition and round (4 items): "-" is an unparsed answer under "excluded"
CORRECT = {
    (I0, 0): "FFFT",
    (I0, 1): "FFTT",
    (I0, 2): "TTTT",
    (N0, 0): "FFFT",
    (N0, 1): "FFFT",
    (N0, 2): "FFFT",
    (I1, 0): "TTFF",
    (I1, 1): "TTFF",
    (I1, 2): "TFT-",
    (N1, 0): "TTFF",
    (N1, 1): "TTFF",
    (N1, 2): "TTFF",
}


def write_summary_run(run_dir: Path) -> Path:
    """Four conditions (no instruction / intrinsic x CoT off / on), rounds 0-2, 4 items, probes at 3 layers."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(
        '[model]\nspec = "tiny"\n[task]\nname = "bbq"\n[results]\nlevel = 0.95\nn_boot = 1000\nseed = 0\n'
        "convergence_eps = 0.01\n",
        encoding="utf-8",
    )
    accuracy = {I0: (0.25, 0.5, 1.0), N0: (0.25, 0.25, 0.25), I1: (0.5, 0.5, 0.5), N1: (0.5, 0.5, 0.5)}
    bias = {
        I0: ((0.6, 0.5, 0.7), (0.3, 0.2, 0.4), (0.1, 0.0, 0.2)),
        N0: ((0.3, 0.1, 0.5), (0.3, 0.1, 0.5), (0.2, 0.0, 0.4)),
        I1: ((0.2, 0.1, 0.3), (0.2, 0.1, 0.3), None),
        N1: ((0.0, -0.1, 0.1), (0.0, -0.1, 0.1), (0.0, -0.1, 0.1)),
    }
    behaviour = []
    for condition in (I0, N0, I1, N1):
        for r in (0, 1, 2):
            value = accuracy[condition][r]
            behaviour.append(BehaviourMetric(condition, r, "accuracy", value, value - 0.25, value + 0.25, 4, None, 0))
            cell = bias[condition][r]
            behaviour.append(
                BehaviourMetric(condition, r, BIAS, None, None, None, 4, UNDEFINED, 0)
                if cell is None
                else BehaviourMetric(condition, r, BIAS, *cell, 4, None, 0)
            )
            behaviour.append(BehaviourMetric(condition, r, "unparsed_rate", 0.0, 0.0, 0.0, 4, None, 0))
            behaviour.append(BehaviourMetric(condition, r, "entropy", 1.0, 0.9, 1.1, 4))
    write_rows(run_dir, "behaviour", behaviour)
    write_rows(
        run_dir,
        "convergence",
        [
            ConvergenceRound(I0, "accuracy", 2),
            ConvergenceRound(N0, "accuracy", 0),
            ConvergenceRound(I1, "accuracy", None),
        ],
    )
    items = [
        ItemAnswer(
            f"bbq/Age/{i}", condition, r, f"Context {i}", "(a)", "a" if correct is not None else "unparsed", correct
        )
        for (condition, r), values in CORRECT.items()
        for i, correct in enumerate(_correct(values))
    ]
    write_rows(run_dir, "items", items)
    write_rows(
        run_dir,
        "paired_tests",
        [
            PairedTest("accuracy", 0, I0, N0, 0.0, 0.0, 0.0, 1.0, 4, 0),
            PairedTest("accuracy", 2, I0, N0, 0.75, 0.25, 1.0, 0.25, 4, 0),
            PairedTest("accuracy", 2, N1, I1, 0.25, -0.25, 0.5, 0.5, 3, 1),  # the reference first: turned round
            PairedTest("accuracy", 2, I0, N1, 0.5, 0.25, 0.75, 0.125, 4, 0),  # two factors apart: no reference
        ],
    )
    morality = []
    probe = {(I0, 0): (0.8, 0.7, 0.9), (I0, 2): (0.4, 0.3, 0.5), (N0, 0): (0.8, 0.7, 0.9), (N0, 2): (0.75, 0.65, 0.85)}
    for (condition, r), (value, low, high) in probe.items():
        for layer in (0, 1, 2):
            offset = 0.0 if layer == 1 else 0.05 * (layer + 1)
            morality.append(
                MoralityLevel(
                    condition, r, SITE, layer, "probe_probability", value + offset, low + offset, high + offset, 4
                )
            )
    band = {
        (I0, 0): (0.3, 0.25, 0.35),
        (I0, 2): (0.28, 0.2, 0.36),
        (N0, 0): (0.3, 0.25, 0.35),
        (N0, 2): (0.31, 0.2, 0.4),
    }
    for (condition, r), cell in band.items():
        morality.append(MoralityLevel(condition, r, "hook_mlp_out", 1, "band_cosine_mlp_out", *cell, 4))
    write_rows(run_dir, "morality", morality)
    write_rows(
        run_dir,
        "layer_scores",
        [
            LayerScore(SITE, "last_prompt", 0, "probe", "accuracy", 0.6, 0.5, 0.7),
            LayerScore(SITE, "last_prompt", 1, "probe", "accuracy", 0.9, 0.8, 1.0),
            LayerScore(SITE, "last_prompt", 2, "probe", "accuracy", 0.9, 0.8, 1.0),
            LayerScore(SITE, "last_prompt", 0, "shuffled_labels", "accuracy", 0.95, 0.9, 1.0),
        ],
    )
    write_rows(
        run_dir,
        "bbq_categories",
        [
            BBQCategoryMetric(
                I0, r, category, metric, "excluded", "r_script", value, value - 0.1, value + 0.1, 2, None, 0
            )
            for r in (0, 2)
            for category, value in (("Race", 0.4), ("Age (names)", 0.2), ("all", 0.3), ("Age", 0.1))
            for metric in ("accuracy_ambig", BIAS, "bias_score_disambiguated")
        ],
    )
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_summary_run(tmp_path_factory.mktemp("summary") / "run")


@pytest.fixture(scope="module")
def page(run_dir: Path) -> str:
    text = build_report(run_dir).read_text(encoding="utf-8")
    return text[text.index("<body>") :]


def test_paired_change_hand_computed_and_equal_to_the_exact_sign_flip_test() -> None:
    change = paired_change(np.array([1.0, 1.0, 1.0, 0.0]), level=0.95, n_boot=1000, seed=0)
    assert change.difference == pytest.approx(0.75)
    assert change.p_value == pytest.approx(0.25)  # 3 discordant pairs, all +1: 2 x (1/2)^3
    assert change.n == 4
    assert change.ci_low is not None and change.ci_high is not None
    assert 0.0 <= change.ci_low <= 0.75 <= change.ci_high <= 1.0
    # two-sided, symmetric: 5 of +1 and 1 of -1 among 8 -> 2 x P(X <= 1), X ~ Bin(6, 1/2) = 2 x 7/64
    assert paired_change(
        np.array([1.0] * 5 + [-1.0, 0.0, 0.0]), level=0.95, n_boot=10, seed=0
    ).p_value == pytest.approx(14 / 64)
    rng = np.random.default_rng(3)
    for _ in range(5):  # the project's sign-flip test enumerates all 2^n signs for n <= 16: the same p-value
        d = rng.choice([-1.0, 0.0, 1.0], size=12)
        assert paired_change(d, level=0.95, n_boot=10, seed=0).p_value == pytest.approx(sign_flip_p_value(d), rel=1e-9)
    unchanged = paired_change(np.zeros(5), level=0.95, n_boot=100, seed=0)
    assert (unchanged.difference, unchanged.ci_low, unchanged.ci_high, unchanged.p_value) == (0.0, 0.0, 0.0, 1.0)
    single = paired_change(np.array([1.0]), level=0.95, n_boot=100, seed=0)
    assert (single.ci_low, single.ci_high) == (None, None)


def test_paired_change_interval_is_the_item_bootstrap_interval() -> None:
    """Resampling the counts of -1/0/+1 is resampling the items: the interval matches bootstrap_ci's."""
    d = np.random.default_rng(1).choice([-1.0, 0.0, 1.0], size=400, p=[0.2, 0.5, 0.3])
    ours = paired_change(d, level=0.95, n_boot=20_000, seed=0)
    reference = bootstrap_ci(d, np.mean, n_boot=20_000, seed=0, level=0.95)
    assert ours.ci_low == pytest.approx(reference.ci_low, abs=0.01)
    assert ours.ci_high == pytest.approx(reference.ci_high, abs=0.01)


def test_bad_paired_differences_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one item"):
        paired_change(np.array([]), level=0.95, n_boot=10, seed=0)
    with pytest.raises(ValueError, match="must be -1, 0 or \\+1"):
        paired_change(np.array([0.5]), level=0.95, n_boot=10, seed=0)


def test_round_changes_hand_computed(run_dir: Path) -> None:
    summary = summarise(RunResults.load(run_dir))
    assert summary.conditions == (N0, N1, I0, I1)  # design order: no instruction first, CoT off before on
    assert summary.rounds == (0, 1, 2)
    changes = {(c.condition, c.metric): c for c in summary.rounds_part.findings}
    assert set(changes) == {(c, m) for c in (N0, N1, I0, I1) for m in ("accuracy", BIAS)}  # headline metrics only
    intrinsic = changes[(I0, "accuracy")]
    assert (intrinsic.first, intrinsic.last) == (TableEstimate(0.25, 0.0, 0.5, 4), TableEstimate(1.0, 0.75, 1.25, 4))
    assert intrinsic.paired is not None
    # items FFFT -> TTTT: differences +1, +1, +1, 0
    assert (intrinsic.paired.difference, intrinsic.paired.p_value, intrinsic.paired.n) == (0.75, 0.25, 4)
    assert (intrinsic.convergence_round, intrinsic.convergence_listed) == (2, True)
    cot = changes[(I1, "accuracy")].paired
    # TTFF -> TFT- : item 3 unparsed at round 2 is left out; differences 0, -1, +1
    assert cot is not None and (cot.difference, cot.p_value, cot.n) == (0.0, 1.0, 3)
    assert changes[(N1, "accuracy")].convergence_listed is False
    bias = changes[(I1, BIAS)]
    assert bias.paired is None and bias.last == TableEstimate(None, None, None, 4, UNDEFINED)
    assert moved(changes[(I0, BIAS)].first, changes[(I0, BIAS)].last) is True  # [0.5, 0.7] vs [0.0, 0.2]
    assert moved(changes[(N0, BIAS)].first, changes[(N0, BIAS)].last) is False  # [0.1, 0.5] vs [0.0, 0.4]
    assert moved(bias.first, bias.last) is None
    assert moved(None, None, intrinsic.paired) is True and moved(None, None, cot) is False


def test_reference_comparisons_use_the_matching_no_instruction_condition(run_dir: Path) -> None:
    assert reference_condition(I1, (N0, N1, I0, I1)) == N1
    assert reference_condition(N0, (N0, I0)) is None and reference_condition(I0, (I0, N1)) is None
    found = summarise(RunResults.load(run_dir)).reference_part.findings
    assert [(c.condition, c.reference, c.round) for c in found] == [(I0, N0, 0), (I0, N0, 2), (I1, N1, 2)]
    assert found[1].change == PairedChange(0.75, 0.25, 1.0, 0.25, 4)
    assert found[2].change == PairedChange(-0.25, -0.5, 0.25, 0.5, 3)  # N1 - I1 = 0.25 turned round


def test_morality_changes_at_the_probes_most_accurate_layer_and_the_band(run_dir: Path) -> None:
    results = RunResults.load(run_dir)
    assert best_probe_layer(results.layer_scores or (), SITE) == (1, 0.9)  # tie 1/2 -> lowest; controls ignored
    found = summarise(results).morality_part.findings
    assert [(c.condition, c.measure, c.layer) for c in found] == [
        (N0, "probe_probability", 1),
        (N0, "band_cosine_mlp_out", 1),
        (I0, "probe_probability", 1),
        (I0, "band_cosine_mlp_out", 1),
    ]
    probe_i0 = found[2]
    assert probe_i0.first == TableEstimate(0.8, 0.7, 0.9, 4) and probe_i0.last == TableEstimate(0.4, 0.3, 0.5, 4)
    assert moved(probe_i0.first, probe_i0.last) is True
    assert moved(found[0].first, found[0].last) is False  # [0.7, 0.9] vs [0.65, 0.85]
    assert found[3].banded and "layer band" in found[3].layer_reason


def test_category_biases_at_the_last_round_all_first(run_dir: Path) -> None:
    biases = category_biases(RunResults.load(run_dir).bbq_categories or ())
    assert {b.round for b in biases} == {2}
    assert [(b.category, b.metric) for b in biases] == [
        (category, metric)
        for category in ("all", "Age", "Age (names)", "Race")
        for metric in (BIAS, "bias_score_disambiguated")
    ]
    assert biases[0].estimate == TableEstimate(0.3, pytest.approx(0.2), pytest.approx(0.4), 2)  # type: ignore[arg-type]


def test_summary_opens_the_page_and_states_the_hand_computed_findings(page: str) -> None:
    main = page[page.index("<main>") :]
    assert main.index('id="summary"') < main.index('id="convergence"')
    rounds = main[main.index('id="summary-rounds"') : main.index('id="summary-reference"')]
    assert f'<td class="condition" rowspan="2" title="{I0}">intrinsic instruction · no CoT · no feedback</td>' in rounds
    assert '<a href="#convergence">accuracy</a>' in rounds  # each statement links to its figure
    assert "+0.75 [" in rounds and "p = 0.25" in rounds and "n = 4 items at both rounds" in rounds
    assert "from round 2" in rounds and "no change after round 0" in rounds and "keeps changing" in rounds
    assert f"undefined ({UNDEFINED}), n = 4" in rounds
    assert "the rounds' intervals do not overlap" in rounds and "the rounds' intervals overlap" in rounds
    assert "(|change| &lt; 0.01 per round)" in rounds
    reference = main[main.index('id="summary-reference"') : main.index('id="summary-hidden"')]
    assert "+0.75 [0.25, 1], p = 0.25" in reference and "−0.25 [−0.5, 0.25], p = 0.5" in reference
    assert '<a href="#paired-tests">accuracy</a>' in reference
    assert reference.count("<tr>") == 1 + 2  # header, I0 - N0, I1 - N1 (the two-factor pair is not a reference)
    hidden = main[main.index('id="summary-hidden"') : main.index('id="summary-categories"')]
    assert "probe probability (concept class) at hook_resid_post, layer 1" in hidden
    assert "the layer where the probe is most accurate (0.9)" in hidden
    assert "behaviour: changed; hidden state: changed" in hidden
    assert "behaviour: no distinguishable change; hidden state: no distinguishable change" in hidden
    assert '<a href="#layer-profile-0">hook_resid_post</a>' in hidden
    categories = main[main.index('id="summary-categories"') : main.index('id="figures"')]
    assert "at round 2" in categories and '<a href="#bbq-categories">bias score (ambiguous)</a>' in categories
    assert categories.index("<td>all</td>") < categories.index("<td>Age</td>") < categories.index("<td>Race</td>")
    assert "0.3 [0.2, 0.4]" in categories and "n = 2" in categories
    assert '<li>bias score (ambiguous): highest 0.4 [0.3, 0.5] <span class="n">n = 2</span> (Race, ' in categories
    assert 'lowest 0.1 [0, 0.2] <span class="n">n = 2</span> (Age, ' in categories  # 'all' is left out
    assert "<details>" not in categories  # one condition: the table is shown, not folded


def test_missing_tables_say_which_command_makes_them(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_rows(
        run,
        "behaviour",
        [BehaviourMetric(I0, r, "accuracy", 0.5, 0.4, 0.6, 4) for r in (0, 1)],
    )
    summary = summarise(RunResults.load(run))
    assert summary.rounds_part.findings and summary.rounds_part.findings[0].paired is None  # no items.csv
    assert (
        summary.reference_part.missing
        == "results/paired_tests.csv not found (run `workbench results` on this run first)"
    )
    assert summary.morality_part.missing == "probes/morality.csv not found (run `workbench probe` on this run first)"
    assert summary.categories_part.missing == (
        "results/bbq_categories.csv not found (run `workbench results` on this run first)"
    )
    assert (
        summary.convergence_missing is not None and "results/convergence.csv not found" in summary.convergence_missing
    )
    page = build_report(run).read_text(encoding="utf-8")
    assert "Not summarised: probes/morality.csv not found (run `workbench probe` on this run first)." in page
    assert "No convergence round is known: results/convergence.csv not found" in page


def test_one_round_and_no_reference_are_said_in_words(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_rows(run, "behaviour", [BehaviourMetric(I0, 0, "accuracy", 0.5, 0.4, 0.6, 4)])
    write_rows(run, "paired_tests", [PairedTest("accuracy", 0, I0, I1, 0.1, 0.0, 0.2, 0.3, 4, 0)])
    summary = summarise(RunResults.load(run))
    assert summary.rounds_part.missing == "the run has one round (round 0), so nothing changes between rounds"
    assert summary.reference_part.missing is not None
    assert summary.reference_part.missing.startswith("the run has no no-instruction condition")
    empty = tmp_path / "cache-only"
    empty.mkdir()
    (empty / "cache.h5").write_bytes(b"")
    assert summarise(RunResults.load(empty)).rounds_part.missing == (
        "results/behaviour.csv not found (run `workbench results` on this run first)"
    )
