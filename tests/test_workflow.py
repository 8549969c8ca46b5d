"""The workflow end to end on the tiny config, and its refusal of bad config and cohort tables."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import TINY, run_snakemake

pytestmark = pytest.mark.workflow


def test_cohort_targets_in_a_temporary_directory(tmp_path):
    run_snakemake(
        tmp_path,
        "--cores",
        "2",
        "results/figures/fig1_flow.png",
        "results/cohort/included.tsv",
        configfiles=[TINY],
    )
    flow = pd.read_csv(tmp_path / "results/cohort/flow.tsv", sep="\t")
    assert flow["n_before"].iloc[0] == 40 and flow["n_after"].iloc[-1] == 8
    included = pd.read_csv(tmp_path / "results/cohort/included.tsv", sep="\t")
    assert len(included) == 12
    png = (tmp_path / "results/figures/fig1_flow.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert (tmp_path / "results/figures/fig1_flow.svg").exists()
    assert (tmp_path / "logs/filter_cohort.log").read_text().count("->") >= 11


def test_bad_config_value_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sarcopenia:\n  definition: who2030\n")
    proc = run_snakemake(tmp_path, "--cores", "1", "-n", configfiles=[bad], check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "definition" in text and "awgs2019" in text and "ewgsop2" in text
    assert not (tmp_path / "results").exists()


def test_window_settings_for_an_unknown_network_stop_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("infer:\n  by_model:\n    unet3: {overlap: 0.5}\n")
    proc = run_snakemake(tmp_path, "--cores", "1", "-n", configfiles=[bad], check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "infer.by_model" in text and "unet3" in text and "networks" in text
    assert not (tmp_path / "results").exists()


def test_bad_cohort_table_lists_every_problem_before_any_job(tmp_path):
    rows = [
        "subject_id\tsex\tage\theight_cm\tweight_kg\tsmi\tstable_condition\tct_contraindication\t"
        "missing_hip_to_knee\tprotocol_variation\tamputation\tfemur_shaft_fracture\t"
        "subtrochanteric_fracture\tdeformity\tmetal_artefact\tother_image_factor\timage\tlabel\tlabel_rater2",
        "P1\tF\t80\t1.55\t50\t5.0\ttrue\tfalse\tfalse\tfalse\tfalse\tfalse\tfalse\tfalse\tfalse\tfalse\tp1.nii.gz\t\t",
        "P1\tQ\t-4\t160\t60\t\ttrue\tfalse\tfalse\tfalse\tfalse\tfalse\tfalse\tfalse\tfalse\tfalse\tp2.nii.gz\t\t",
    ]
    table = tmp_path / "cohort.tsv"
    table.write_text("\n".join(rows) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"cohort:\n  table: {table}\n")
    proc = run_snakemake(tmp_path, "--cores", "1", "-n", configfiles=[cfg], check=False)
    assert proc.returncode != 0
    text = proc.stderr
    for needle in (
        "height_cm",
        "column sex",
        "column age",
        "duplicate id 'P1'",
        "row 2",
        "row 3",
        str(table),
    ):
        assert needle in text, needle
    assert not (tmp_path / "results").exists()
