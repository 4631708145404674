"""Figure functions of reports.figures on small hand-written tidy tables."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import plotly.graph_objects as go
import plotly.offline
import pytest

from reports.figures import (
    answer_flips_figure,
    bias_levels_figure,
    concept_uncertainty_figure,
    convergence_figure,
    head_attribution_figure,
    interactions_figure,
    item_answers_figure,
    layer_profile_figure,
    least_squares_line,
    morality_figure,
    reliability_figure,
    uncertainty_figure,
)
from reports.figures.style import translucent
from reports.static_export import export_figure
from workbench.run_tables import (
    AnswerFlip,
    BehaviourMetric,
    BiasLevel,
    CalibrationBin,
    ConceptUncertainty,
    ConvergenceRound,
    HeadEffect,
    InteractionEffect,
    ItemAnswer,
    LayerScore,
    MoralityLevel,
)

HOSTILE = "<script>alert(1)</script>"
# every character that HTML escaping touches, a tag plotly.js would draw and one it would drop
LABEL = """say "hi" & 'bye' <b>bold</b> <script>alert(1)</script> &lt;"""
A, B = "instr=intrinsic+cot=off+fb=off", "instr=intrinsic+cot=on+fb=off"

BEHAVIOUR = (
    BehaviourMetric(A, 0, "accuracy", 0.50, 0.40, 0.60, 10),
    BehaviourMetric(A, 1, "accuracy", 0.70, 0.60, 0.80, 10),
    BehaviourMetric(B, 0, "accuracy", 0.55, 0.45, 0.65, 10),
    BehaviourMetric(B, 1, "accuracy", 0.65, 0.55, 0.75, 10),
    BehaviourMetric(A, 0, "bias_score_ambiguous", 0.30, None, None, 10),
    BehaviourMetric(A, 1, "bias_score_ambiguous", 0.20, None, None, 10),
    BehaviourMetric(B, 0, "bias_score_ambiguous", 0.25, None, None, 10),
    BehaviourMetric(B, 1, "bias_score_ambiguous", 0.10, None, None, 10),
    BehaviourMetric(A, 0, "uncertainty", 1.2, 1.0, 1.4, 10),
    BehaviourMetric(A, 1, "uncertainty", 0.9, 0.8, 1.0, 10),
    BehaviourMetric(A, 0, "ece", 0.20, None, None, 10),
    BehaviourMetric(A, 1, "ece", 0.10, None, None, 10),
)


def plain_json(fig: go.Figure) -> str:
    """The figure's data and layout as plain JSON (no plotly-specific escaping of ``<``)."""
    return json.dumps(fig.to_plotly_json(), default=str)


def test_convergence_figure_lines_bands_and_star() -> None:
    convergence = (ConvergenceRound(A, "accuracy", 1), ConvergenceRound(B, "accuracy", None))
    fig = convergence_figure(BEHAVIOUR, convergence)
    # accuracy: 2 bands + 2 lines + 1 star; bias score (no intervals): 2 lines; uncertainty left out
    assert len(fig.data) == 7
    # compact small multiples: one titled panel per metric, side by side, each with its round axis
    assert [a.text for a in fig.layout.annotations] == ["accuracy", "bias score (ambiguous)"]
    assert fig.layout.xaxis.title.text == "round" and fig.layout.xaxis2.title.text == "round"
    assert (
        fig.layout.xaxis.domain[1] < fig.layout.xaxis2.domain[0] and fig.layout.yaxis.domain == fig.layout.yaxis2.domain
    )
    band = fig.data[0]
    assert band.fill == "toself"
    assert list(band.x) == [0, 1, 1, 0] and list(band.y) == [0.60, 0.80, 0.60, 0.40]
    stars = [t for t in fig.data if t.name == "convergence round"]
    assert len(stars) == 1 and list(stars[0].x) == [1] and list(stars[0].y) == [0.70]
    label_a, label_b = "intrinsic instruction · no CoT · no feedback", "intrinsic instruction · CoT · no feedback"
    assert [t.name for t in fig.data if t.mode == "lines+markers"] == [label_a, label_b, label_a, label_b]
    assert A in fig.data[1].hovertext[0]  # the raw condition name stays in the hover text


def test_layer_band_breaks_where_a_layer_has_no_interval() -> None:
    """The layer profile's band is the shared band: a layer without an interval splits it, never bridged."""
    levels = [
        MoralityLevel(A, 0, "s", layer, "probe_probability", 0.5, *((None, None) if layer == 2 else (0.4, 0.6)), 5)
        for layer in range(4)
    ]
    (band,) = [t for t in layer_profile_figure(levels).data if t.fill == "toself"]
    assert list(band.x) == [0, 1, 1, 0, None, 3, 3]
    assert list(band.y) == pytest.approx([0.6, 0.6, 0.4, 0.4, None, 0.6, 0.4])
    assert band.fillcolor == "rgba(68,1,84,0.15)"  # round 0: the first Viridis colour, rgb(68, 1, 84)
    assert band.legendgroup == "round 0" and band.showlegend is False


def test_translucent_takes_hex_and_rgb_colours() -> None:
    assert translucent("#636EFA") == "rgba(99,110,250,0.2)"
    assert translucent("rgb(27,158,119)", 0.15) == "rgba(27,158,119,0.15)"
    assert translucent("rgb(68, 1, 84)", 0.15) == "rgba(68,1,84,0.15)"


def test_convergence_figure_one_round_one_condition() -> None:
    fig = convergence_figure((BehaviourMetric(A, 0, "accuracy", 0.5, None, None, 1),))
    assert len(fig.data) == 1 and list(fig.data[0].y) == [0.5]


def test_convergence_figure_without_behaviour_metrics_raises() -> None:
    with pytest.raises(ValueError, match="no behaviour metric"):
        convergence_figure(BEHAVIOUR[8:])


def test_convergence_figure_escapes_condition_names() -> None:
    fig = convergence_figure((BehaviourMetric(HOSTILE, 0, "accuracy", 0.5, 0.4, 0.6, 3),))
    assert HOSTILE not in plain_json(fig)
    assert fig.data[1].name == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_undefined_value_is_a_gap_in_line_and_band() -> None:
    reason = "no non-unknown answer"
    points = (
        BehaviourMetric(A, 0, "bias_score_ambiguous", 0.4, 0.3, 0.5, 4),
        BehaviourMetric(A, 1, "bias_score_ambiguous", 0.2, 0.1, 0.3, 4),
        BehaviourMetric(A, 2, "bias_score_ambiguous", None, None, None, 4, reason),
        BehaviourMetric(A, 3, "bias_score_ambiguous", 0.0, -0.1, 0.1, 4),
    )
    band, line = convergence_figure(points).data
    assert list(line.x) == [0, 1, 2, 3] and list(line.y) == [0.4, 0.2, None, 0.0]  # a gap, not a zero
    assert line.connectgaps is False
    assert "bias_score_ambiguous = undefined (no non-unknown answer)" in line.hovertext[2]
    # one band polygon per run of rounds with an interval, split by None so plotly fills each apart
    assert list(band.x) == [0, 1, 1, 0, None, 3, 3]
    assert list(band.y) == pytest.approx([0.5, 0.3, 0.1, 0.3, None, 0.1, -0.1])
    # a cell that is undefined at every round still draws (an empty line), and gets no convergence star
    only_undefined = (BehaviourMetric(B, 0, "accuracy", None, None, None, 0, "no parsed answer"),)
    fig = convergence_figure(only_undefined, (ConvergenceRound(B, "accuracy", 0),))
    assert [list(t.y) for t in fig.data] == [[None]]


def _plotly_renders(text: str) -> str:
    """The text plotly.js 4.1.1 draws for a hover/tick/legend/title string (svg_text_utils.convertToTspans).

    It splits the string at ``<...>`` tags: ``<br>`` is a line break, the styling tags of its subset
    are drawn as styling (written here as ``{b}``), any other tag is dropped, and each piece between
    tags becomes an SVG text node after decoding the named entities below and numeric ones.
    """
    entities = {"mu": "\u03bc", "amp": "&", "lt": "<", "gt": ">", "nbsp": "\xa0", "times": "\xd7", "plusmn": "\xb1"}
    entities["deg"] = "\xb0"
    styling = {"sup", "sub", "s", "u", "b", "i", "a", "span", "em"}

    def decode(piece: str) -> str:
        def entity(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("#"):
                return chr(int(name[2:], 16) if name[1] == "x" else int(name[1:]))
            return entities.get(name, match.group(0))

        return re.sub(r"&(#\d+|#x[\da-fA-F]+|[a-z]+);", entity, piece)

    drawn = []
    for piece in re.split(r"(<[^<>]*>)", text):
        tag = re.match(r"<(/?)([^ >]*)(\s+(.*))?>", piece, flags=re.IGNORECASE)
        name = tag.group(2).lower() if tag else None
        if name == "br":
            drawn.append("\n")
        elif name in styling:
            drawn.append("{" + name + "}")
        elif tag is None:
            drawn.append(decode(piece))
    return "".join(drawn)


def test_plotly_text_model_matches_the_bundled_plotly_js() -> None:
    """The entity table and tag split that :func:`_plotly_renders` copies are those of the embedded plotly.js."""
    plotly_js = plotly.offline.get_plotlyjs()
    assert r'{mu:"\u03BC",amp:"&",lt:"<",gt:">",nbsp:"\xA0",times:"\xD7",plusmn:"\xB1",deg:"\xB0"}' in plotly_js
    assert r"=/&(#\d+|#x[\da-fA-F]+|[a-z]+);/g" in plotly_js and r"=/(<[^<>]*>)/," in plotly_js
    # HTML escaping of a quote is therefore drawn as the six characters, the bug this module avoids
    assert _plotly_renders(html.escape('say "hi"')) == "say &quot;hi&quot;"


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def test_dataset_text_in_figures_is_drawn_literally_and_never_as_markup() -> None:
    items = (ItemAnswer(LABEL, LABEL, 0, LABEL, LABEL, "a", True),)
    figures = {
        "answers": item_answers_figure(items),
        "convergence": convergence_figure((BehaviourMetric(LABEL, 0, LABEL, 0.5, 0.4, 0.6, 3),)),
        "flips": answer_flips_figure((AnswerFlip(LABEL, 0, 1, LABEL, "a", 1),)),
        "interactions": interactions_figure((InteractionEffect(LABEL, LABEL, 0.1, None, None),)),
        "bias levels": bias_levels_figure((BiasLevel(LABEL, LABEL, 0.1, None, None, 2),)),
        "concept": concept_uncertainty_figure((ConceptUncertainty(LABEL, 0, LABEL, 0.1, 1.0),), items),
    }
    for name, fig in figures.items():
        strings = [text for text in _strings(json.loads(plain_json(fig))) if "say" in text]
        assert strings, name
        for text in strings:
            assert "&quot;" not in text and "&#x27;" not in text and "<b>" not in text and "<script" not in text
            drawn = _plotly_renders(text)
            assert LABEL in drawn, (name, text, drawn)  # quotes, &, <b> and <script> shown as typed
            assert "{b}" not in drawn, (name, text)  # no dataset tag reaches plotly as markup
    answers = figures["answers"]
    assert answers.data[0].y == (
        "say \"hi\" &amp; 'bye' &lt;b&gt;bold&lt;/b&gt; &lt;script&gt;alert(1)&lt;/script&gt; &amp;lt;",
    )
    assert answers.layout.annotations[0].text == answers.data[0].y[0]  # the subplot title (condition)


def test_answer_flips_figure_one_sankey_per_condition() -> None:
    flips = (
        AnswerFlip(A, 0, 1, "a", "c", 3),
        AnswerFlip(A, 0, 1, "c", "c", 5),
        AnswerFlip(B, 0, 1, "b", "unparsed", 2),
    )
    fig = answer_flips_figure(flips)
    assert [type(t) for t in fig.data] == [go.Sankey, go.Sankey]
    first = fig.data[0]
    assert list(first.node.label) == ["round 0: a", "round 0: c", "round 1: c"]
    assert list(first.link.source) == [0, 1] and list(first.link.target) == [2, 2]
    assert list(first.link.value) == [3, 5]
    # one column per round; answers stacked within a round's column
    assert list(first.node.x) == pytest.approx([0.01, 0.01, 0.99])
    assert list(first.node.y) == pytest.approx([0.255, 0.745, 0.5])
    assert [a.text for a in fig.layout.annotations] == [
        "intrinsic instruction · no CoT · no feedback",
        "intrinsic instruction · CoT · no feedback",
    ]
    assert [a.hovertext for a in fig.layout.annotations] == [A, B]


def test_uncertainty_figure_draws_only_uncertainty_metrics() -> None:
    fig = uncertainty_figure(BEHAVIOUR)
    # uncertainty: band + line; ece (no intervals): line
    assert len(fig.data) == 3
    assert [a.text for a in fig.layout.annotations] == ["uncertainty (nats)", "expected calibration error"]
    with pytest.raises(ValueError, match="none of the uncertainty metrics"):
        uncertainty_figure(BEHAVIOUR[:4])


def test_reliability_figure_one_line_per_round_and_diagonal() -> None:
    bins = (
        CalibrationBin(A, 0, 0.5, 0.75, 0.6, 0.4, 4),
        CalibrationBin(A, 0, 0.75, 1.0, 0.9, 0.8, 6),
        CalibrationBin(A, 1, 0.5, 1.0, 0.7, 0.7, 10),
        CalibrationBin(B, 1, 0.5, 1.0, 0.8, 0.6, 10),
    )
    fig = reliability_figure(bins)
    names = [t.name for t in fig.data]
    assert names == ["perfect calibration", "round 0", "round 1", "perfect calibration", "round 1"]
    assert list(fig.data[1].x) == [0.6, 0.9] and list(fig.data[1].y) == [0.4, 0.8]
    assert fig.layout.xaxis.title.text == "mean confidence"
    assert fig.layout.yaxis.title.text == "accuracy"


def test_morality_figure_heatmap_per_condition_and_probe_panel() -> None:
    site = "blocks.{l}.hook_resid_post"
    levels = tuple(
        MoralityLevel(condition, r, site, layer, "probe_probability", 0.1 * layer + r + offset, None, None, 5)
        for condition, offset in ((A, 0.0), (B, 0.5))
        for r in (0, 1)
        for layer in (0, 1, 2)
        if not (condition == B and r == 1 and layer == 2)
    )
    scores = tuple(
        LayerScore(site, "last", layer, arm, "accuracy", value, value - 0.1, value + 0.1)
        for layer in (0, 1, 2)
        for arm, value in (("random_direction", 0.5), ("probe", 0.8), ("shuffled_labels", 0.45))
    )
    fig = morality_figure(levels, scores)
    heatmaps = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(heatmaps) == 2
    assert list(heatmaps[0].y) == [0, 1, 2] and list(heatmaps[0].x) == [0, 1]
    assert heatmaps[0].z[2][1] == pytest.approx(1.2)
    assert heatmaps[1].z[2][1] is None
    assert heatmaps[1].z[0][0] == pytest.approx(0.5)
    lines = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert [t.name for t in lines] == ["probe", "shuffled_labels", "random_direction"]
    assert list(lines[0].x) == [0.8, 0.8, 0.8]
    assert fig.layout.coloraxis.cmin == pytest.approx(0.0)
    assert fig.layout.coloraxis.cmax == pytest.approx(1.6)
    assert fig.layout.yaxis.title.text == "layer"


def test_morality_figure_without_layer_scores_has_only_heatmaps() -> None:
    levels = (MoralityLevel(A, 0, "s", 0, "cosine", 0.3, None, None, 2),)
    fig = morality_figure(levels)
    assert len(fig.data) == 1 and fig.layout.coloraxis.colorbar.title.text == "cosine to the probe direction"


def test_interactions_figure_orders_effects_and_draws_intervals() -> None:
    behaviour = (
        InteractionEffect("accuracy", "cot:feedback", 0.05, None, None),
        InteractionEffect("accuracy", "instruction", 0.20, 0.10, 0.35),
        InteractionEffect("accuracy", "cot", -0.10, -0.20, 0.00),
    )
    hidden = (InteractionEffect("probe_probability", "feedback", 0.02, 0.01, 0.03),)
    fig = interactions_figure(behaviour, hidden)
    assert len(fig.data) == 2
    first = fig.data[0]
    assert list(first.y) == ["instruction", "cot", "cot:feedback"]
    assert list(first.error_x.array) == pytest.approx([0.15, 0.10, 0.0])
    assert list(first.error_x.arrayminus) == pytest.approx([0.10, 0.10, 0.0])
    assert [a.text for a in fig.layout.annotations[:2]] == [
        "behaviour: accuracy",
        "hidden state: probe_probability",
    ]
    with pytest.raises(ValueError, match="both interaction tables are empty"):
        interactions_figure(())


def test_least_squares_line_hand_computed() -> None:
    assert least_squares_line([0.0, 1.0, 2.0], [1.0, 3.0, 5.0]) == pytest.approx((2.0, 1.0))
    # points (0, 0), (1, 1), (2, 1): slope 1/2, intercept 1/6
    assert least_squares_line([0.0, 1.0, 2.0], [0.0, 1.0, 1.0]) == pytest.approx((0.5, 1 / 6))
    assert least_squares_line([1.0, 1.0], [0.0, 2.0]) is None


def test_concept_uncertainty_figure_points_fit_and_escaped_hover() -> None:
    concept = (
        ConceptUncertainty(A, 0, "i1", 1.0, 0.0),
        ConceptUncertainty(A, 1, "i1", 3.0, 1.0),
        ConceptUncertainty(A, 1, "i2", 5.0, 2.0),
    )
    items = (ItemAnswer("i1", A, 0, HOSTILE, '<img src=x onerror="alert(2)">', "a", False),)
    fig = concept_uncertainty_figure(concept, items)
    assert [t.name for t in fig.data] == ["round 0", "round 1", "least-squares fit"]
    fit = fig.data[2]
    assert list(fit.x) == [0.0, 2.0] and list(fit.y) == pytest.approx([1.0, 5.0])
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in fig.data[0].hovertext[0]
    text = plain_json(fig)
    assert HOSTILE not in text and "<img" not in text
    assert fig.layout.xaxis.title.text == "uncertainty (mean token NLL)"


def test_head_attribution_figure_layer_by_head_matrix() -> None:
    heads = (
        HeadEffect("base", "attribution_patching", 0, 0, 0.1),
        HeadEffect("base", "attribution_patching", 0, 1, -0.2),
        HeadEffect("base", "attribution_patching", 1, 1, 0.4),
        HeadEffect("tuned", "attribution_patching", 0, 0, 0.0),
    )
    fig = head_attribution_figure(heads)
    assert len(fig.data) == 2
    assert [list(row) for row in fig.data[0].z] == [[0.1, -0.2], [None, 0.4]]
    assert fig.layout.xaxis.title.text == "head" and fig.layout.yaxis.title.text == "layer"
    assert fig.layout.coloraxis.cmid == 0


def test_bias_levels_figure_one_bar_trace_per_checkpoint() -> None:
    levels = (
        BiasLevel("base", "bias_score_ambiguous", 0.3, 0.2, 0.5, 20),
        BiasLevel("tuned", "bias_score_ambiguous", 0.1, None, None, 20),
    )
    fig = bias_levels_figure(levels)
    assert [t.name for t in fig.data] == ["base", "tuned"]
    assert list(fig.data[0].error_y.array) == pytest.approx([0.2])
    assert list(fig.data[0].error_y.arrayminus) == pytest.approx([0.1])
    assert list(fig.data[1].error_y.array) == [0]


def test_item_answers_figure_correctness_and_escaping() -> None:
    items = (
        ItemAnswer("i1", A, 0, HOSTILE, "(a)", "a", False),
        ItemAnswer("i1", A, 1, HOSTILE, "(c)", "c", True),
        ItemAnswer("i2", A, 0, "Who?", "<b onmouseover=x>", "unparsed", None),
    )
    fig = item_answers_figure(items)
    assert len(fig.data) == 1
    assert [list(row) for row in fig.data[0].z] == [[0.0, 1.0], [None, None]]
    assert fig.data[0].hovertext[1][1] == "no answer"
    text = plain_json(fig)
    assert HOSTILE not in text and "<b onmouseover" not in text
    assert "&lt;b onmouseover=x&gt;" in fig.data[0].hovertext[1][0]
    assert fig.layout.title.text == "Answers per item (all 2 items)"
    sampled = item_answers_figure(items, max_items=1)
    assert sampled.data[0].y in (("i1",), ("i2",))
    assert sampled.layout.title.text == "Answers per item (a random sample of 1 of 2 items, seed 0)"
    assert item_answers_figure(items, max_items=1).data[0].y == sampled.data[0].y  # the same sample every build


def test_export_figure_rejects_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"figure.gif: cannot export a figure as .gif; use one of .png, .svg"):
        export_figure(go.Figure(), tmp_path / "figure.gif")
