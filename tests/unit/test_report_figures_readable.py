"""Readable report figures: human labels, one colour per condition, meaningful markers, the new figures, sampling."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from reports.figures import (
    bbq_categories_figure,
    concept_uncertainty_figure,
    convergence_figure,
    layer_profile_figure,
    least_squares_line,
    paired_tests_figure,
    reliability_figure,
    selected_heads_figure,
    steering_figure,
    uncertainty_figure,
)
from reports.figures.convergence import behaviour_metrics_of, marks_convergence
from reports.figures.paired import pair_label
from reports.figures.sampling import sample_rows
from reports.figures.style import CONDITION_COLOURS, ConditionStyle, condition_order, metric_label
from workbench.run_tables import (
    BBQCategoryMetric,
    BehaviourMetric,
    CalibrationBin,
    ConceptUncertainty,
    ConvergenceRound,
    DebiasedHead,
    MoralityLevel,
    PairedTest,
    SteeringEffect,
)

N0 = "instr=none+cot=off+fb=off"
I0 = "instr=intrinsic+cot=off+fb=off"
I1 = "instr=intrinsic+cot=on+fb=off"
RUN = (N0, I0, I1)


def _series(condition: str, metric: str, values: list[float]) -> list[BehaviourMetric]:
    return [BehaviourMetric(condition, r, metric, v, v - 0.1, v + 0.1, 10) for r, v in enumerate(values)]


def _line_colours(fig: go.Figure) -> dict[str, str]:
    """legend group (escaped raw condition) -> line colour of every line trace of ``fig``."""
    return {t.legendgroup: t.line.color for t in fig.data if t.mode == "lines+markers" and t.legendgroup}


def test_condition_order_and_human_labels() -> None:
    assert condition_order([I1, "custom arm", I0, N0, I0]) == [N0, I0, I1, "custom arm"]
    style = ConditionStyle.of([I1], RUN)
    assert style.conditions == RUN
    assert style.label(I1) == "intrinsic instruction · CoT · no feedback"
    assert style.panel_title(I1) == "intrinsic instruction<br>CoT · no feedback"
    assert style.hover(I1) == f"intrinsic instruction · CoT · no feedback<br>({I1})"
    assert style.hover("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"  # not a condition name: shown once, escaped


def test_one_colour_per_condition_in_every_figure() -> None:
    behaviour = _series(I1, "accuracy", [0.5, 0.6]) + _series(N0, "accuracy", [0.4, 0.4])
    behaviour += _series(I1, "ece", [0.2, 0.1]) + _series(N0, "ece", [0.2, 0.2])
    calibration = [CalibrationBin(c, 0, 0.5, 1.0, 0.7, 0.6, 5) for c in (I1, N0)]
    categories = [
        BBQCategoryMetric(c, 0, "all", "bias_score_ambiguous", "excluded", "r_script", 0.1, 0.0, 0.2, 4, None, 0)
        for c in (I1, N0)
    ]
    expected = {N0: CONDITION_COLOURS[0], I1: CONDITION_COLOURS[2]}  # I0 keeps colour 1 though no table has it
    assert _line_colours(convergence_figure(behaviour, conditions=RUN)) == expected
    assert _line_colours(uncertainty_figure(behaviour, conditions=RUN)) == expected
    markers = {t.legendgroup: t.marker.color for t in bbq_categories_figure(categories, conditions=RUN).data}
    assert markers == expected
    # reliability panels follow the run's order (no instruction first), whatever the table's order
    titles = [a.text for a in reliability_figure(calibration, conditions=RUN).layout.annotations]
    assert titles == ["no instruction<br>no CoT · no feedback", "intrinsic instruction<br>CoT · no feedback"]


def test_metrics_headline_first_diagnostics_last_and_readable_titles() -> None:
    rows = _series(I0, "unparsed_rate", [0, 0]) + _series(I0, "accuracy_ambig", [0.3, 0.4])
    rows += _series(I0, "bias_score_ambiguous", [0.1, 0.0]) + _series(I0, "accuracy", [0.5, 0.6])
    assert behaviour_metrics_of(rows) == ["accuracy", "bias_score_ambiguous", "accuracy_ambig", "unparsed_rate"]
    titles = [a.text for a in convergence_figure(rows).layout.annotations]
    assert titles == ["accuracy", "bias score (ambiguous)", "accuracy (ambiguous)", "unparsed answers"]
    assert metric_label("bbq/bias_score_ambiguous") == "bbq: bias score (ambiguous)"
    assert metric_label("band_cosine_attn_out") == "cosine to the concept, attention output (layer-band mean)"
    assert metric_label("a</b>") == "a</b>"  # a slash that is not a task prefix is kept as written


def test_convergence_star_only_where_it_means_something() -> None:
    rows = _series(I0, "accuracy", [0.5, 0.7, 0.7]) + _series(I0, "unparsed_rate", [0.0, 0.1, 0.1])
    rows += _series(I0, "bias_score_ambiguous", [0.2, 0.2, 0.2])
    convergence = [
        ConvergenceRound(I0, "accuracy", 1),
        ConvergenceRound(I0, "unparsed_rate", 1),  # a rate of unparsed answers: its convergence means nothing
        ConvergenceRound(I0, "bias_score_ambiguous", 0),  # never changed: no star
    ]
    stars = [t for t in convergence_figure(rows, convergence).data if t.name == "convergence round"]
    assert len(stars) == 1 and list(stars[0].x) == [1] and list(stars[0].y) == [0.7]
    assert stars[0].xaxis == "x"  # in the accuracy panel
    assert not marks_convergence("unparsed_rate", 3) and not marks_convergence("accuracy", 0)
    assert marks_convergence("bbq/accuracy", 2) and not marks_convergence("accuracy", None)


def test_convergence_panels_are_compact_small_multiples() -> None:
    metrics = ["accuracy", "bias_score_ambiguous", "bias_score_disambiguated", "accuracy_ambig", "unknown_rate"]
    metrics += ["accuracy_disambig", "unparsed_rate", "flip_rate"]
    rows = [row for metric in metrics for row in _series(I0, metric, [0.1, 0.2])]
    fig = convergence_figure(rows)
    assert len(fig.layout.annotations) == 8
    # three panels to a row (three rows), not eight stacked rows
    assert fig.layout.xaxis.domain[1] < fig.layout.xaxis2.domain[0] < fig.layout.xaxis3.domain[0]
    assert (
        fig.layout.yaxis.domain == fig.layout.yaxis3.domain and fig.layout.yaxis4.domain[1] < fig.layout.yaxis.domain[0]
    )
    assert fig.layout.height <= 1000


def test_paired_tests_figure_orients_pairs_and_keeps_one_factor_pairs() -> None:
    tests = [
        PairedTest("accuracy", 0, N0, I0, -0.1, -0.3, 0.05, 0.2, 20, 0),  # turned round: I0 - N0 = +0.1
        PairedTest("accuracy", 1, N0, I0, -0.2, -0.4, -0.05, 0.01, 20, 0),
        PairedTest("accuracy", 1, I0, I1, 0.05, -0.1, 0.2, 0.6, 20, 0),  # I1 - I0 = -0.05
        PairedTest("accuracy", 1, N0, I1, 0.0, -0.1, 0.1, 1.0, 20, 0),  # two factors apart: not drawn
        PairedTest("toxicity", 1, I0, N0, 0.01, None, None, 0.9, 20, None),
    ]
    fig = paired_tests_figure(tests, conditions=RUN)
    assert [t.name for t in fig.data] == ["round 0", "round 1", "round 1"]  # accuracy rounds 0, 1; toxicity 1
    round_1 = fig.data[1]
    assert list(round_1.x) == pytest.approx([0.2, -0.05])
    assert list(round_1.error_x.array) == pytest.approx([0.2, 0.15])  # high 0.4 - 0.2; -0.1 -> 0.1 around -0.05
    assert list(round_1.error_x.arrayminus) == pytest.approx([0.15, 0.15])
    assert "p = 0.01, n = 20" in round_1.hovertext[0] and f"({I0} − {N0})" in round_1.hovertext[0]
    assert fig.layout.yaxis.ticktext == (
        "intrinsic instruction − no instruction<br>(no CoT · no feedback)",
        "CoT − no CoT<br>(intrinsic instruction · no feedback)",
    )
    assert pair_label("a", "b") == "a − b"
    assert [a.text for a in fig.layout.annotations] == ["accuracy", "toxicity"]


def test_steering_figure_probe_beside_random_direction() -> None:
    rows = [
        SteeringEffect(
            "hook_resid_post", 5, direction, alpha, metric, 0.3 + (0.05 * alpha if direction == "probe" else 0)
        )
        for direction in ("random", "probe")
        for alpha in (4.0, -4.0, 0.0)
        for metric in ("unknown_rate", "accuracy")
    ]
    fig = steering_figure(rows)
    assert [(t.name, t.line.dash) for t in fig.data] == [
        ("probe direction, layer 5", "solid"),
        ("random direction, layer 5", "dash"),
    ] * 2
    assert list(fig.data[0].x) == [-4.0, 0.0, 4.0] and list(fig.data[0].y) == pytest.approx([0.1, 0.3, 0.5])
    assert [a.text for a in fig.layout.annotations] == ["'unknown' answers", "accuracy"]


def test_selected_heads_figure_largest_drop_first() -> None:
    heads = [DebiasedHead(1, 2, 0.3, 0.2, 0.1), DebiasedHead(4, 0, -0.9, -0.1, 0.8), DebiasedHead(2, 2, 0.5, 0.1, 0.4)]
    fig = selected_heads_figure(heads)
    before, after = fig.data[1], fig.data[2]
    assert list(before.y) == ["layer 4, head 0", "layer 2, head 2", "layer 1, head 2"]
    assert list(before.x) == [-0.9, 0.5, 0.3] and list(after.x) == [-0.1, 0.1, 0.2]
    assert selected_heads_figure(heads, max_heads=2).layout.title.text == (
        "Heads selected for debiasing (the 2 of 3 with the largest drop)"
    )


def test_bbq_categories_figure_shows_the_last_round_and_switches_rounds() -> None:
    rows = [
        BBQCategoryMetric(c, r, cat, metric, "excluded", "r_script", v, v - 0.1, v + 0.1, 4, None, 0)
        for c in (I0, N0)
        for r in (0, 2)
        for cat, v in (("Race", 0.3), ("all", 0.1), ("Age", 0.2))
        for metric in ("bias_score_ambiguous", "accuracy_ambig")
    ]
    rows.append(
        BBQCategoryMetric(
            I0, 2, "Age (names)", "bias_score_ambiguous", "excluded", "r_script", None, None, None, 0, "no items", 0
        )
    )
    fig = bbq_categories_figure(rows, conditions=RUN)
    assert len(fig.data) == 2 * 2  # (round 0, round 2) x (N0, I0); one panel: no disambiguated rows
    assert [t.visible for t in fig.data] == [False, False, True, True]
    assert fig.layout.yaxis.ticktext == ("all", "Age", "Age (names)", "Race")
    last_i0 = fig.data[3]
    assert list(last_i0.x) == pytest.approx([0.3, 0.1, 0.2])  # undefined "Age (names)" left out
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["round 0", "round 2"]
    assert fig.layout.updatemenus[0].buttons[0].args[0]["visible"] == [True, True, False, False]


def test_layer_profile_one_line_per_round_per_condition() -> None:
    levels = [
        MoralityLevel(c, r, "hook_resid_post", layer, "probe_probability", 0.1 * layer + r, 0.0, 1.0, 5)
        for c in (I0, N0)
        for r in (0, 1, 2)
        for layer in (0, 1, 2, 3)
    ]
    fig = layer_profile_figure(levels, conditions=RUN)
    lines = [t for t in fig.data if t.mode == "lines" and t.fill != "toself"]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert [t.name for t in lines] == ["round 0", "round 1", "round 2"] * 2
    assert list(lines[2].x) == [0, 1, 2, 3] and list(lines[2].y) == pytest.approx([2.0, 2.1, 2.2, 2.3])
    assert len(bands) == 2 * 2  # first and last rounds of each condition
    assert [a.text for a in fig.layout.annotations] == [
        "no instruction<br>no CoT · no feedback",
        "intrinsic instruction<br>no CoT · no feedback",
    ]
    assert fig.layout.yaxis2.matches == "y"  # one y axis for every panel


def test_concept_figure_samples_points_but_fits_all() -> None:
    rows = [
        ConceptUncertainty(I0, i % 3, f"i{i}", 0.001 * i + (0.05 if i % 7 == 0 else 0.0), 0.002 * i)
        for i in range(5000)
    ]
    fig = concept_uncertainty_figure(rows, max_points=500)
    points = [t for t in fig.data if t.mode == "markers"]
    assert sum(len(t.x) for t in points) == 500
    assert (
        fig.layout.title.text
        == "Latent concept vs. uncertainty (a random sample of 500 of 5000 points, seed 0; fits use all)"
    )
    fit = next(t for t in fig.data if t.name == "least-squares fit")
    slope, intercept = least_squares_line(
        [r.uncertainty or 0.0 for r in rows], [r.concept_activation for r in rows]
    ) or (0, 0)
    assert list(fit.y) == pytest.approx([intercept, slope * 9.998 + intercept], rel=1e-6)
    again = concept_uncertainty_figure(rows, max_points=500)
    assert [list(t.x) for t in again.data] == [list(t.x) for t in fig.data]  # the same sample every build


def test_sample_rows() -> None:
    assert sample_rows([3, 1, 2], 5) == [3, 1, 2]
    sample = sample_rows(list(range(100)), 10, seed=4)
    assert len(sample) == 10 and sample == sorted(sample) and sample == sample_rows(list(range(100)), 10, seed=4)
    with pytest.raises(ValueError, match="at least 1"):
        sample_rows([1], 0)


def test_per_item_figures_stay_the_same_size_however_many_items() -> None:
    """The page's size is bounded: the per-item figures of 10x more items are no larger (a sample)."""
    from reports.figures import item_answers_figure
    from workbench.run_tables import ItemAnswer

    def answers(n_items: int) -> list[ItemAnswer]:
        return [
            ItemAnswer(f"bbq/Age/{i:05d}", c, r, f"Context {i:05d}. Who?", "(a)", "a", i % 3 == 0)
            for i in range(n_items)
            for c in (N0, I0)
            for r in (0, 1)
        ]

    def concept(n_items: int) -> list[ConceptUncertainty]:
        return [
            ConceptUncertainty(c, r, f"i{i:05d}", 0.5, 1.0 + i / n_items)
            for i in range(n_items)
            for c in (N0, I0)
            for r in (0, 1)
        ]

    small, large = (len(item_answers_figure(answers(n)).to_json()) for n in (300, 3000))
    assert abs(large - small) / small < 0.02
    small, large = (len(concept_uncertainty_figure(concept(n)).to_json()) for n in (1000, 10_000))
    assert abs(large - small) / small < 0.02


def test_demonstration_conditions_pair_and_sort_as_one_more_factor() -> None:
    from reports.figures.paired import one_factor_apart

    demo4, demo16 = N0 + "+demo=4-correct", N0 + "+demo=16-correct"
    assert one_factor_apart(N0, demo4)  # k differs: one factor (this raised KeyError before)
    assert not one_factor_apart(N0 + "+demo=4-remapped", "instr=intrinsic+cot=off+fb=off+demo=16-correct")
    assert condition_order([demo16, demo4, N0]) == [N0, demo4, demo16]  # k numerically, not as text
    assert metric_label("remapped_answer_rate") == "answers following the remapped labels"
