"""build_report: the self-contained index.html of a run folder, complete or partial."""

from __future__ import annotations

import re
from pathlib import Path

import plotly.offline
import pytest
from test_reports_run_folder import write_csv, write_synthetic_run

from reports import build_report
from workbench.run_folder import RunFolderError

FIGURE_DIV = 'class="plotly-graph-div"'


def figure_anchors(page: str) -> list[str]:
    """Anchors of the figure sections drawn on the page, in order."""
    return re.findall(r'<section class="figure" id="([^"]+)">', page)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> str:
    run_dir = write_synthetic_run(tmp_path_factory.mktemp("full") / "run")
    path = build_report(run_dir)
    assert path == run_dir / "report" / "index.html"
    return path.read_text(encoding="utf-8")


ALL_FIGURES = [
    "convergence",
    "paired-tests",
    "bbq-categories",
    "flips",
    "uncertainty",
    "reliability",
    "layer-profile-0",
    "morality-0",
    "interactions",
    "concept",
    "steering",
    "heads",
    "selected-heads",
    "bias-levels",
    "answers",
]


def test_every_figure_is_drawn_once(full_report: str) -> None:
    assert figure_anchors(full_report) == ALL_FIGURES
    assert full_report.count(FIGURE_DIV) == len(ALL_FIGURES)
    assert "omitted, " not in full_report and 'id="figures-not-drawn"' not in full_report


def test_plotly_js_is_embedded_once_and_nothing_is_fetched(full_report: str) -> None:
    plotly_js = plotly.offline.get_plotlyjs()
    assert full_report.count(plotly_js[:500]) == 1
    assert full_report.count(plotly_js[-500:]) == 1
    page_without_plotly = full_report.replace(plotly_js, "")
    assert "<script src=" not in page_without_plotly and "cdn.plot.ly" not in page_without_plotly


def test_hostile_dataset_text_never_reaches_the_page_raw(full_report: str) -> None:
    assert "<script>alert(1)</script>" not in full_report
    assert "<img src=x" not in full_report
    # escaped by the report; plotly's JSON writer also turns "/" into "\\u002f"
    assert "prompt: &lt;script&gt;alert(1)&lt;\\u002fscript&gt;" in full_report


def test_page_opens_with_the_summary_and_folds_configuration_and_file_status_at_the_end(full_report: str) -> None:
    body = full_report[full_report.index("<body>") :]
    contents = body[body.index('<nav class="toc" id="contents">') : body.index("</nav>")]
    assert '<a href="#summary">Summary of findings</a>' in contents
    assert [f'<a href="#{anchor}">' in contents for anchor in ALL_FIGURES] == [True] * len(ALL_FIGURES)
    assert '<a href="#convergence">Behaviour per round and convergence</a>' in contents
    main = body[body.index("<main>") :]
    summary, first_figure, details = (
        main.index(text) for text in ('id="summary"', 'id="convergence"', 'id="run-details"')
    )
    assert summary < first_figure < details
    folded = main[details:]
    assert folded.count("<details><summary>") == 3
    assert '<th>name</th><td class="value">smollm2-135m-instruct</td>' in folded
    assert '<th>task</th><td class="value">bbq</td>' in folded
    assert '<th>protocol.rounds</th><td class="value">3</td>' in folded
    assert "<td>probes/morality.csv</td><td>24 rows</td>" in folded
    assert '<p class="guide">One panel per metric' in main  # each figure's reading guide stays beside it


def test_run_without_probes_says_why_figures_are_omitted(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path / "run", with_probes=False)
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert figure_anchors(page) == [
        "convergence",
        "paired-tests",
        "bbq-categories",
        "flips",
        "uncertainty",
        "reliability",
        "interactions",
        "heads",
        "selected-heads",
        "bias-levels",
        "answers",
    ]
    assert (
        'Morality level of hidden states: <span class="omitted">omitted, probes/morality.csv '
        "not found (run `workbench probe` on this run first)</span>" in page
    )
    assert "omitted, probes/concept_uncertainty.csv not found" in page
    assert "Only one side is drawn: probes/interactions.csv not found" in page


def test_one_round_one_condition_run_builds_and_explains(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    behaviour = [("instr=none+cot=off+fb=off", 0, "accuracy", 0.5, None, None, 1, None)]
    write_csv(run_dir, "results/behaviour.csv", behaviour)
    write_csv(run_dir, "results/flips.csv", [])
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert figure_anchors(page) == ["convergence"]
    assert "omitted, results/flips.csv has no rows (a run with one round has no flips)" in page
    assert "No convergence round is marked: results/convergence.csv not found" in page
    assert "omitted, results/behaviour.csv holds none of the metrics uncertainty, entropy" in page
    assert "config.toml not found in the run folder" in page


def test_cache_only_run_builds_with_every_figure_omitted(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "cache.h5").write_bytes(b"")
    page = build_report(run_dir / "cache.h5").read_text(encoding="utf-8")
    assert figure_anchors(page) == []
    assert page.count('<span class="omitted">omitted, ') == 15
    assert "results/behaviour.csv not found (run `workbench results` on this run first)" in page


def test_out_dir_and_hostile_config_values(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path / "run")
    hostile_config = 'name = "<script>alert(3)</script>"\n[model]\nname = "m"\n'
    (run_dir / "config.toml").write_text(hostile_config)
    path = build_report(run_dir, tmp_path / "elsewhere")
    assert path == tmp_path / "elsewhere" / "index.html"
    assert not (run_dir / "report").exists()
    page = path.read_text(encoding="utf-8")
    assert "<script>alert(3)</script>" not in page
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in page
    assert "config.toml has no [data] or [task] or [tasks] or [dataset] table." in page


def test_missing_run_folder_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError) as error:
        build_report(tmp_path / "runs" / "missing")
    assert "\n" not in str(error.value)
    assert str(error.value).startswith(f"{tmp_path / 'runs' / 'missing'}: no such run folder")


def test_full_report_lists_undefined_values_with_their_reason(full_report: str) -> None:
    assert "1 value is undefined and drawn as gaps" in full_report
    row = (
        '<tr><td title="instr=intrinsic+cot=on+fb=off">intrinsic instruction · CoT · no feedback</td>'
        "<td>1</td><td>bias_score_ambiguous</td>"
        '<td class="value">undefined (no non-unknown answer)</td><td>4</td></tr>'
    )
    assert row in full_report


def test_page_text_is_html_escaped_and_figure_text_plotly_escaped(tmp_path: Path) -> None:
    """Quotes are entities in the page's HTML but literal in the figure JSON (plotly.js draws ``&quot;`` as is)."""
    run_dir = tmp_path / "run"
    label = "say \"hi\" & 'bye' <b>bold</b> <script>alert(4)</script>"
    behaviour = [(label, 0, "accuracy", 0.5, None, None, 3, None), (label, 1, "accuracy", None, None, None, 3, "x")]
    write_csv(run_dir, "results/behaviour.csv", behaviour)
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert "<script>alert(4)" not in page and "<b>bold" not in page
    html_escaped = (
        "say &quot;hi&quot; &amp; &#x27;bye&#x27; &lt;b&gt;bold&lt;/b&gt; &lt;script&gt;alert(4)&lt;/script&gt;"
    )
    assert f'<tr><td title="{html_escaped}">{html_escaped}</td><td>1</td><td>accuracy</td>' in page  # undefined values
    figure = page[page.index('<div id="figure-convergence"') :]
    figure = figure[: figure.index("</script>")]
    # plotly's JSON writer turns " into \" and / into \u002f; only & < > are entities
    assert (
        '"name":"say \\"hi\\" &amp; \'bye\' &lt;b&gt;bold&lt;\\u002fb&gt; &lt;script&gt;alert(4)&lt;\\u002fscript&gt;"'
        in figure
    )
    assert "&quot;" not in figure and "&#x27;" not in figure


def test_concept_rows_without_measured_uncertainty_are_left_out_not_refused(tmp_path: Path) -> None:
    """probes writes an empty uncertainty cell for a record whose uncertainty was not measured."""
    run_dir = write_synthetic_run(tmp_path / "run")
    rows = [("instr=none+cot=off+fb=off", 0, "i1", 0.2, None), ("instr=none+cot=off+fb=off", 1, "i1", 0.3, 1.5)]
    write_csv(run_dir, "probes/concept_uncertainty.csv", rows)
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert "concept" in figure_anchors(page)
    assert "1 of 2 records have no measured uncertainty and are not drawn." in page
    write_csv(run_dir, "probes/concept_uncertainty.csv", rows[:1])
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert "concept" not in figure_anchors(page)
    assert "omitted, probes/concept_uncertainty.csv has no measured uncertainty (every cell is empty)" in page
