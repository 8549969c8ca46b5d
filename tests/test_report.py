"""`snakemake --report results/report.html` after a run: one HTML file with every figure."""

from __future__ import annotations

import base64
import re

import pytest
from conftest import TINY, run_snakemake

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def report(tiny_run):
    run_snakemake(tiny_run, "--report", "results/report.html", configfiles=[TINY])
    return tiny_run / "results" / "report.html"


def test_the_report_is_one_self_contained_html_file(report):
    html = report.read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    # Self-contained: no file of the run is linked from outside the HTML.
    assert not re.search(r'src="(?:\.\./)?results/', html)


def test_the_report_holds_every_figure_of_the_run(report, tiny_run):
    html = report.read_text()
    figures = sorted((tiny_run / "results" / "figures").glob("*.png"))
    assert figures, "the run made no figure"
    missing = [f.name for f in figures if f.name not in html]
    assert not missing, f"figures missing from the report: {missing}"
    # The images themselves are embedded, not only named.
    for figure in figures:
        head = base64.b64encode(figure.read_bytes()[:3000])[:200].decode()
        assert head in html, f"{figure.name} is named but not embedded"


def test_the_report_describes_the_workflow_and_the_cohort_flow(report):
    html = report.read_text()
    assert "reproduces Kim et al." in html  # workflow/report/workflow.rst
    assert "fig1_flow.png" in html and "Cohort flow" in html  # Fig 1 with its caption
