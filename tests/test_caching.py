"""Every output is cached and rebuilt only when its inputs change, on the tiny config.

After one finished run (the shared `tiny_run`), Snakemake's dry run (`snakemake -n`) shows
what a change would rerun. Snakemake 9 reruns a job when an input is newer (mtime), when its
params, input set, software env or code changed. Run settings stay out of params
(thighct.run_settings); the library code a rule runs is a param (its fingerprint,
thighct.fingerprint), tested on a copy of the repository in tests/test_code_tracking.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY, run_snakemake

pytestmark = pytest.mark.workflow

COHORT_RULES = {"synthetic_cohort", "cohort_table", "filter_cohort", "fig1_flow", "label_tables"}
CHUNKED = re.compile(
    r"^(synthetic_scan|ingest|preprocess|predict_\w+?|volumes_\w+?|qc_scan)_chunk\d+$"
)


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


# Keys that change how fast or where a job runs, never what it writes (thighct.run_settings):
# changing any of them on a finished run leaves nothing to do.
RUN_ONLY_CHANGES = {
    "train.threads": {"train": {"threads": 2}},
    "train.resources": {
        "train": {"resources": {"gpu": 0, "gpu_model": "", "runtime": 999, "mem_mb": 9999}}
    },
    "train.checkpoint_every": {"train": {"checkpoint_every": 7}},
    "train.checkpoint_dir": {"train": {"checkpoint_dir": "elsewhere"}},
    "train.sw_batch_size": {"train": {"sw_batch_size": 1}},
    "train.cache_rate": {"train": {"cache_rate": 0.5}},
    "train.channels_last": {"train": {"channels_last": True}},
    "infer.threads": {"infer": {"threads": 2}},
    "infer.resources": {"infer": {"resources": {"gpu": 1, "gpu_model": "h100", "mem_mb": 999}}},
    "infer.device": {"infer": {"device": "cpu"}},
    "infer.workers": {"infer": {"workers": 2}},
    "infer.sw_batch_size": {"infer": {"sw_batch_size": 1}},
    "infer.by_model sw_batch_size": {"infer": {"by_model": {"unet": {"sw_batch_size": 2}}}},
    "infer.cpu_fastpath": {"infer": {"cpu_fastpath": False}},
    "metrics.resources": {"metrics": {"resources": {"runtime": 99, "mem_mb": 9999}}},
}


@pytest.mark.parametrize("change", list(RUN_ONLY_CHANGES.values()), ids=list(RUN_ONLY_CHANGES))
def test_a_run_setting_change_reruns_nothing(tiny_run, tmp_path, change):
    changed = override(tmp_path, "run", change)
    assert planned_jobs(tiny_run, configs=[changed]) == []
    # Snakemake's own account of each output: no "params changed" anywhere. (Its
    # `--list-changes params` lists every output in Snakemake 9.27.1 whether or not a param
    # changed: ParamsChange objects iterate their files even when empty.)
    proc = run_snakemake(tiny_run, "--summary", configfiles=[TINY, changed])
    statuses = [line.split("\t")[4] for line in proc.stdout.splitlines()[1:] if "\t" in line]
    assert statuses and set(statuses) == {"ok"}, sorted(set(statuses))


@pytest.mark.parametrize(
    ("change", "rerun"),
    [
        ({"train": {"lr": 1.0e-3}}, re.compile(r"^train$")),
        ({"train": {"precision": "float32"}}, re.compile(r"^train$")),
        ({"infer": {"mirror_axes": [0]}}, re.compile(r"^predict_\w+_chunk\d+$")),
        ({"infer": {"accumulate": "float32"}}, re.compile(r"^predict_\w+_chunk\d+$")),
    ],
    ids=["train.lr", "train.precision", "infer.mirror_axes", "infer.accumulate"],
)
def test_a_science_key_reruns_its_rule_and_what_depends_on_it(tiny_run, tmp_path, change, rerun):
    changed = override(tmp_path, "science", change)
    jobs = planned_jobs(tiny_run, configs=[changed])
    direct = {j["rule"] for j in jobs if j["reason"].startswith("Params have changed")}
    assert direct and all(rerun.match(r) for r in direct), direct
    for job in jobs:
        if job["rule"] not in direct:
            assert "Input files updated by another job" in job["reason"], job
    assert not any(r.startswith(("preprocess", "ingest", "synthetic")) for r in rules_of(jobs))


def test_adding_one_subject_runs_its_own_jobs_and_the_aggregates_only(tiny_run, tmp_path):
    """A user cohort table (the tiny run's cohort, same images) plus one new unlabelled scan."""
    work = tmp_path / "work"
    shutil.copytree(tiny_run, work, symlinks=True)
    cohort = pd.read_csv(work / "results/cohort/cohort.tsv", sep="\t", comment="#", dtype=str)
    cohort = cohort.fillna("")
    # results/ holds no paths (has_label flags instead): the synthetic scans' paths, as a user
    # would write them.
    root = "results/synthetic/{}/{}.nii.gz"
    cohort["image"] = [root.format(s, "ct") for s in cohort["subject_id"]]
    for col in ("label", "label_rater2"):
        flags = cohort.pop(f"has_{col}") == "True"
        cohort[col] = [
            root.format(s, col) if f else ""
            for s, f in zip(cohort["subject_id"], flags, strict=True)
        ]
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
