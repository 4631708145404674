"""Static export of the report for papers: every figure as PNG, SVG and PDF, and the one-page PDF summary.

The files are drawn for real by kaleido in the Chrome/Chromium of this machine, then opened: the PNG
header's size, the SVG parsed as XML, the PDF's page tree and page size. Missing kaleido or Chrome is
one line naming the fix.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import plotly.graph_objects as go
import pytest
from test_reports_run_folder import write_csv, write_synthetic_run

from reports.build import SUMMARY_PRIORITY, export_report, summary_page
from reports.run_results import RunResults
from reports.sections import report_figures
from reports.static_export import (
    EXPORT_CHOICES,
    EXPORT_WIDTH_PX,
    PNG_SCALE,
    SUMMARY_PAGE_PX,
    StaticExporterMissingError,
    StaticFigure,
    export_figure,
    parse_export_choices,
    plain_title,
    summary_figure,
)
from workbench.cli.main import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"
POINTS_PER_PX = 0.75  # CSS: 96 px and 72 pt per inch
A4_LANDSCAPE_PT = (841.89, 595.28)

HAS_KALEIDO = importlib.util.find_spec("kaleido") is not None
HAS_CHROME = shutil.which("chromium") is not None or shutil.which("google-chrome") is not None
needs_exporter = pytest.mark.skipif(
    not (HAS_KALEIDO and HAS_CHROME),
    reason="static export needs kaleido (pip install kaleido==1.5.1) and Chromium (apt-get install -y chromium)",
)


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def pdf_pages(data: bytes) -> list[tuple[float, float]]:
    """(width, height) in points of every page object of a PDF whose objects are not compressed (Skia's)."""
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    assert b"/ObjStm" not in data  # every object dictionary is readable as it is
    counts = [int(count) for count in re.findall(rb"/Type /Pages\s*/Count (\d+)", data)]
    pages = re.findall(rb"/Type /Page\b(?!s)(.*?)>>\s*endobj", data, flags=re.DOTALL)
    assert counts == [len(pages)]
    sizes = []
    for page in pages:
        box = re.search(rb"/MediaBox \[([-\d. ]+)\]", page)
        assert box is not None
        x0, y0, x1, y1 = (float(value) for value in box.group(1).split())
        sizes.append((x1 - x0, y1 - y0))
    return sizes


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    if not (HAS_KALEIDO and HAS_CHROME):
        pytest.skip("static export needs kaleido and Chromium")
    run_dir = write_synthetic_run(tmp_path_factory.mktemp("static") / "run")
    return run_dir, export_report(run_dir)


@needs_exporter
def test_every_drawn_figure_is_written_in_every_format(exported: tuple[Path, list[Path]]) -> None:
    run_dir, paths = exported
    figures = [entry for entry in report_figures(RunResults.load(run_dir)) if entry.figure is not None]
    assert len(figures) == 15
    expected = [
        run_dir / "report" / "figures" / f"{entry.anchor}.{name}" for entry in figures for name in ("png", "svg", "pdf")
    ]
    assert paths == [*expected, run_dir / "report" / "summary.pdf"]
    for entry in figures:
        assert entry.figure is not None
        height = entry.figure.layout.height
        stem = run_dir / "report" / "figures" / entry.anchor

        assert png_size((stem.with_suffix(".png")).read_bytes()) == (EXPORT_WIDTH_PX * PNG_SCALE, height * PNG_SCALE)

        svg = ElementTree.parse(stem.with_suffix(".svg")).getroot()
        assert svg.tag == f"{SVG}svg"
        assert (svg.get("width"), svg.get("height")) == (str(EXPORT_WIDTH_PX), str(height))
        texts = " ".join(node.text or "" for node in svg.iter(f"{SVG}text"))
        assert entry.figure.layout.title.text in texts, entry.anchor

        ((width, page_height),) = pdf_pages(stem.with_suffix(".pdf").read_bytes())
        assert width == pytest.approx(EXPORT_WIDTH_PX * POINTS_PER_PX, abs=0.5)
        assert page_height == pytest.approx(height * POINTS_PER_PX, abs=0.5)


@needs_exporter
def test_summary_is_one_a4_landscape_page(exported: tuple[Path, list[Path]]) -> None:
    run_dir, _ = exported
    ((width, height),) = pdf_pages((run_dir / "report" / "summary.pdf").read_bytes())
    assert width == pytest.approx(A4_LANDSCAPE_PT[0], abs=1.5)
    assert height == pytest.approx(A4_LANDSCAPE_PT[1], abs=1.5)


def test_summary_page_shows_the_headline_figures_and_says_what_is_missing(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path / "run", with_probes=False)
    results = RunResults.load(run_dir)
    figures = report_figures(results)
    drawn = [StaticFigure(e.anchor, plain_title(e.title), e.figure) for e in figures if e.figure is not None]
    page = summary_page(results, figures, drawn, run_dir / "report", EXPORT_CHOICES)
    # morality-0 is not drawn without probes: the free panel goes to the first other drawn figure
    assert [entry.anchor for entry in page.figures] == ["convergence", "paired-tests", "interactions", "bias-levels"]
    assert set(SUMMARY_PRIORITY) - {entry.anchor for entry in page.figures} == {"morality-0"}
    assert page.title == "Workbench report: run"
    assert any(fact.startswith("[model] name = smollm2-135m-instruct") for fact in page.facts)
    assert any(
        line.startswith("Morality level of hidden states: probes/morality.csv not found") for line in page.omitted
    )
    assert str(run_dir / "report" / "figures") in page.footer
    figure = summary_figure(page, [b"<svg xmlns='http://www.w3.org/2000/svg'/>"] * 4)
    assert (figure.layout.width, figure.layout.height) == SUMMARY_PAGE_PX
    assert len(figure.layout.images) == 4
    assert all(image.source.startswith("data:image/svg+xml;base64,") for image in figure.layout.images)
    annotations = " ".join(annotation.text for annotation in figure.layout.annotations)
    assert (
        "<b>Workbench report: run</b>" in annotations
        and "Not drawn: Layer profile of hidden-state morality" in annotations
    )


def test_summary_text_from_the_run_is_escaped_for_plotly(tmp_path: Path) -> None:
    run_dir = write_synthetic_run(tmp_path / "run")
    (run_dir / "config.toml").write_text('[model]\nname = "<b onmouseover=x>m</b>"\n')
    results = RunResults.load(run_dir)
    figures = report_figures(results)
    page = summary_page(results, figures, [], run_dir / "report", ("summary",))
    annotations = " ".join(annotation.text for annotation in summary_figure(page, []).layout.annotations)
    assert "<b onmouseover" not in annotations and "&lt;b onmouseover=x&gt;m&lt;/b&gt;" in annotations
    assert "No figure of this run could be drawn." in annotations
    assert "workbench report --export png,svg,pdf" in page.footer


@needs_exporter
def test_export_figure_writes_a_one_page_pdf(tmp_path: Path) -> None:
    figure = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]), layout={"height": 300, "title": {"text": "t"}})
    path = export_figure(figure, tmp_path / "out" / "figure.pdf")
    ((width, height),) = pdf_pages(path.read_bytes())
    assert (width, height) == pytest.approx((EXPORT_WIDTH_PX * POINTS_PER_PX, 300 * POINTS_PER_PX), abs=0.5)


def test_missing_kaleido_is_one_line_naming_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = write_synthetic_run(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "kaleido", None)  # what `import kaleido` meets where it is not installed
    with pytest.raises(StaticExporterMissingError) as missing:
        export_report(run_dir)
    assert str(missing.value) == (
        "static export needs the optional package 'kaleido' (1.x), which is not installed: "
        "install it (pip install kaleido==1.5.1) or use the HTML report"
    )
    assert not (run_dir / "report").exists()


@pytest.mark.skipif(not HAS_KALEIDO, reason="kaleido is not installed: its Chrome lookup cannot be exercised")
def test_missing_chrome_is_one_line_naming_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = write_synthetic_run(tmp_path / "run")
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chrome"))  # where kaleido looks first
    with pytest.raises(StaticExporterMissingError) as missing:
        export_report(run_dir, choices=("png",))
    message = str(missing.value)
    assert "\n" not in message
    assert message.startswith("static export needs Chrome or Chromium, which kaleido did not find (")
    assert message.endswith(
        "install it (Debian/Ubuntu: apt-get install chromium; anywhere: kaleido_get_chrome), "
        "or set BROWSER_PATH to its executable"
    )
    assert not (run_dir / "report" / "figures").exists()


def test_export_choices_are_checked_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_export_choices("pdf, PNG") == ("png", "pdf")
    assert parse_export_choices("summary,svg,png,pdf") == ("png", "svg", "pdf", "summary")
    run_dir = write_synthetic_run(tmp_path / "run")
    assert main(["report", str(run_dir), "--export", "png,gif"]) == 2
    error = capsys.readouterr().err
    assert "--export 'png,gif': unknown gif; use a comma-separated list of png, svg, pdf, summary" in " ".join(
        error.split()
    )
    assert not (run_dir / "report").exists()


@needs_exporter
def test_cli_export_writes_the_page_and_the_chosen_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    write_csv(run_dir, "results/behaviour.csv", [("instr=none+cot=off+fb=off", 0, "accuracy", 0.5, 0.4, 0.6, 10, None)])
    assert main(["report", str(run_dir), "--export", "svg"]) == 0
    output = capsys.readouterr().out
    assert (run_dir / "report" / "index.html").is_file()
    assert sorted(path.name for path in (run_dir / "report" / "figures").iterdir()) == ["convergence.svg"]
    assert not (run_dir / "report" / "summary.pdf").exists()
    assert "exported: 1 files into" in output
