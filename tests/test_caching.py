"""Every output is cached and rebuilt only when its inputs change, on the tiny config.

After one finished run (the shared `tiny_run`), Snakemake's dry run (`snakemake -n`) shows
what a change would rerun. Snakemake 9 reruns a job when an input is newer (mtime), when its
params, input set, software env or code changed. A rule's `script:` is tracked but not the
library modules it imports, so every rule lists the modules it uses as inputs (`lib(...)` in
common.smk): editing a module is then an updated input.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, TINY, run_snakemake
from rule_inventory import inventory

pytestmark = pytest.mark.workflow

COHORT_RULES = {"synthetic_cohort", "cohort_table", "filter_cohort", "fig1_flow", "label_tables"}
CHUNKED = re.compile(r"^(synthetic_scan|ingest|preprocess|predict_\w+?|volumes_\w+?)_chunk\d+$")


def planned_jobs(workdir: Path, *args: str, configs=()) -> list[dict]:
    """The jobs `snakemake -n` would run: rule, wildcards, outputs, reason (not the target rule)."""
    proc = run_snakemake(workdir, "-n", *args, configfiles=[TINY, *configs])
    text = proc.stdout + proc.stderr
    jobs = []
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \S+:\n)", text)[1:]:
        name = re.match(r"(?:local)?(?:rule|checkpoint) (\S+):", block).group(1)
        fields = dict(re.findall(r"^    (\w+): (.*)$", block, flags=re.M))
        wildcards = dict(
            w.split("=", 1) for w in fields.get("wildcards", "").split(", ") if "=" in w
        )
        jobs.append(
            {
                "rule": name,
                "wildcards": wildcards,
                "output": fields.get("output", "").split(", "),
                "reason": fields.get("reason", ""),
            }
        )
    return [j for j in jobs if j["rule"] != "all"]


def rules_of(jobs) -> set[str]:
    return {j["rule"] for j in jobs}


def override(tmp_path: Path, name: str, values: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_a_second_run_does_nothing(tiny_run):
    proc = run_snakemake(tiny_run, "-n", configfiles=[TINY])
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert planned_jobs(tiny_run) == []


def test_a_figure_only_change_reruns_only_figure_rules(tiny_run, tmp_path):
    dpi = override(tmp_path, "dpi", {"plots": {"dpi": 150}})
    jobs = planned_jobs(tiny_run, configs=[dpi])
    assert "fig1_flow" in rules_of(jobs)
    for job in jobs:
        assert all(o.startswith("results/figures/") for o in job["output"]), job
        assert job["reason"].startswith("Params have changed"), job


@pytest.mark.parametrize(
    ("change", "figure_rules"),
    [
        ({"plots": {"flow_colour": "#7a3b8f"}}, {"fig1_flow"}),
        ({"sarcopenia": {"heatmap_cmap": "PuOr_r"}}, {"fig7_heatmap", "fig8_heatmap"}),
        (
            {
                "preprocess": {
                    "figure": {"levels": {"hip": 0.8, "upper_thigh": 0.6, "mid_thigh": 0.5}}
                }
            },
            {"fig3_preprocessing"},
        ),
    ],
    ids=["flow colour", "heatmap colour map", "fig3 slice levels"],
)
def test_a_change_to_one_figure_reruns_only_that_figure(tiny_run, tmp_path, change, figure_rules):
    changed = override(tmp_path, "figure", change)
    assert rules_of(planned_jobs(tiny_run, configs=[changed])) == figure_rules


def test_a_preprocessing_change_reruns_preprocessing_and_below_but_not_the_cohort(
    tiny_run, tmp_path
):
    gamma = override(tmp_path, "gamma", {"preprocess": {"gamma": 1.5}})
    planned = rules_of(planned_jobs(tiny_run, configs=[gamma]))
    assert any(r.startswith("preprocess") for r in planned), planned
    assert "train" in planned, "training reads the preprocessed scans"
    assert not planned & COHORT_RULES, planned & COHORT_RULES
    assert not [r for r in planned if r.startswith("ingest_chunk")], planned
    assert not any(r.startswith("synthetic") for r in planned), planned


def test_one_models_window_settings_rerun_only_that_models_predictions_and_below(
    tiny_run, tmp_path
):
    overlap = override(tmp_path, "overlap", {"infer": {"by_model": {"unet": {"overlap": 0.75}}}})
    jobs = planned_jobs(tiny_run, configs=[overlap])
    planned = rules_of(jobs)
    predicted = {r for r in planned if r.startswith("predict_")}
    assert predicted and all(r.startswith("predict_unet_") for r in predicted), predicted
    assert not {"train"} & planned and not any(r.startswith("preprocess") for r in planned)
    for job in jobs:
        if job["rule"].startswith("predict_"):
            assert job["reason"].startswith("Params have changed"), job
        else:
            assert "Input files updated by another job" in job["reason"], job


@pytest.mark.parametrize("module", ["plots/style", "preprocess"])
def test_editing_a_library_module_reruns_the_rules_that_use_it(tiny_run, module):
    path = REPO / "src" / "thighct" / f"{module}.py"
    users = {r["name"] for r in inventory() if str(path) in r["input"]}
    assert users, f"no rule lists thighct/{module}.py as input"
    # An edit of the content: Snakemake ignores a newer mtime when the checksum is unchanged.
    original, stat = path.read_bytes(), path.stat()
    try:
        path.write_bytes(original + b"\n# edited by tests/test_caching.py\n")
        jobs = planned_jobs(tiny_run)
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    planned = rules_of(jobs)
    assert users <= planned, f"not rerun: {sorted(users - planned)}"
    # Snakemake names one reason per job: a user downstream of another user may show only
    # "Input files updated by another job"; no other rule names the module.
    named = {j["rule"] for j in jobs if str(path) in j["reason"]}
    assert named and named <= users, sorted(named - users)
    # Everything else that reruns does so because a rerun job updates its input.
    for job in jobs:
        if job["rule"] not in users:
            assert "Input files updated by another job" in job["reason"], job


def test_adding_one_subject_runs_its_own_jobs_and_the_aggregates_only(tiny_run, tmp_path):
    """A user cohort table (the tiny run's cohort, same images) plus one new unlabelled scan."""
    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)
    cohort = pd.read_csv(work / "results/cohort/cohort.tsv", sep="\t", comment="#", dtype=str)
    cohort = cohort.fillna("")
    table = work / "my_cohort.tsv"
    cohort.to_csv(table, sep="\t", index=False)
    user = override(tmp_path, "user", {"cohort": {"table": str(table)}})
    # Switching from the synthetic cohort to the same rows as a user table.
    run_snakemake(work, "--cores", "2", configfiles=[TINY, user])
    assert planned_jobs(work, configs=[user]) == []

    included = pd.read_csv(work / "results/cohort/included.tsv", sep="\t", comment="#", dtype=str)
    donor = included.loc[included["split"] == "unlabelled", "subject_id"].iloc[0]
    new = cohort.loc[cohort["subject_id"] == donor].copy()
    new["subject_id"] = "NEW001"
    image = work / "images" / "NEW001.nii.gz"
    image.parent.mkdir()
    donor_image = Path(cohort.loc[cohort["subject_id"] == donor, "image"].iloc[0])
    shutil.copy(work / donor_image, image)
    new["image"] = str(image.relative_to(work))
    pd.concat([cohort, new]).to_csv(table, sep="\t", index=False)

    jobs = planned_jobs(work, configs=[user])
    others = [j for j in jobs if j["wildcards"].get("subject") not in (None, "NEW001")]
    assert not others, f"jobs of other subjects rerun: {others}"
    # The per-scan stages run in chunks (config `chunks`): only the new subject's chunk reruns.
    ingest_jobs = [j for j in jobs if j["rule"].startswith("ingest_chunk")]
    assert len(ingest_jobs) == 1 and any("NEW001" in o for o in ingest_jobs[0]["output"])
    for j in jobs:
        if CHUNKED.match(j["rule"]):
            assert any("NEW001" in o for o in j["output"]), f"a chunk without NEW001 reruns: {j}"
    assert not rules_of(jobs) & {"train", "train_fold"}, "an unlabelled scan retrained a model"
    # Chunked per-scan rules (preprocess, predict) rerun the new subject's chunk only.
    for prefix in ["preprocess_chunk"] + [f"predict_{m}_chunk" for m in ("unetr", "unet")]:
        chunks = {j["rule"] for j in jobs if j["rule"].startswith(prefix)}
        assert len(chunks) <= 1, chunks
