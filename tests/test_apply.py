"""Apply mode: a model trained in one run measures a new cohort, with no labels and no training."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch
from conftest import TINY, run_snakemake

pytestmark = pytest.mark.workflow

CRITERIA = {
    "stable_condition": "true",
    "ct_contraindication": "false",
    "missing_hip_to_knee": "false",
    "protocol_variation": "false",
    "amputation": "false",
    "femur_shaft_fracture": "false",
    "subtrochanteric_fracture": "false",
    "deformity": "false",
    "metal_artefact": "false",
    "other_image_factor": "false",
}


def new_cohort(tiny_run, folder) -> tuple[str, list[str]]:
    """The tiny run's included scans under new ids, as a user's table with no label column."""
    included = pd.read_csv(tiny_run / "results" / "cohort" / "included.tsv", sep="\t")
    (folder / "scans").mkdir(parents=True)
    rows = []
    for i, row in enumerate(included.itertuples()):
        subject = f"NEW{i:02d}"
        image = folder / "scans" / f"{subject}.nii.gz"
        shutil.copyfile(tiny_run / "results" / "synthetic" / row.subject_id / "ct.nii.gz", image)
        rows.append(
            {
                "subject_id": subject,
                "sex": row.sex,
                "age": row.age,
                "height_cm": row.height_cm,
                "weight_kg": row.weight_kg,
                "smi": "" if pd.isna(row.smi) else row.smi,
                **CRITERIA,
                "image": str(image),
            }
        )
    table = folder / "cohort.tsv"
    pd.DataFrame(rows).to_csv(table, sep="\t", index=False)
    return str(table), [r["subject_id"] for r in rows]


@pytest.fixture(scope="module")
def applied(tiny_run, tmp_path_factory):
    """Weights of the tiny run copied elsewhere and a new unlabelled cohort measured with them."""
    home = tmp_path_factory.mktemp("apply")
    weights = {}
    for model in ("unetr", "unet"):
        weights[model] = home / "weights" / model / "model.pt"
        weights[model].parent.mkdir(parents=True)
        shutil.copyfile(tiny_run / "results" / "models" / model / "model.pt", weights[model])
    table, subjects = new_cohort(tiny_run, home / "new")
    config = home / "apply.yaml"
    config.write_text(
        f"cohort:\n  table: {table}\n"
        f"networks:\n  unetr: {{weights: {weights['unetr']}}}\n"
        f"  unet: {{weights: {weights['unet']}}}\n"
    )
    work = home / "run"
    work.mkdir()
    dry = run_snakemake(work, "--cores", "2", "-n", configfiles=[TINY, config])
    run_snakemake(work, "--cores", "2", configfiles=[TINY, config])
    return {"work": work, "config": config, "weights": weights, "dry": dry.stdout,
            "subjects": subjects}


def _jobs(stdout: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a (dry) run."""
    table = stdout.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    counts = {}
    for line in table.splitlines()[3:]:
        name, _, count = line.rpartition(" ")
        if count.isdigit() and name.strip() != "total":
            counts[name.strip()] = int(count)
    return counts


def test_no_model_is_trained_and_both_are_imported(applied):
    jobs = _jobs(applied["dry"])
    assert not [j for j in jobs if j.startswith("train")], jobs
    assert jobs["import_model"] == 2
    assert any(j.startswith("predict_unetr_") for j in jobs)
    work = applied["work"]
    for model, path in applied["weights"].items():
        assert (work / "results" / "models" / model / "model.pt").read_bytes() == path.read_bytes()
        assert not (work / "results" / "models" / model / "train_log.tsv").exists()


def test_every_new_scan_is_measured_and_the_sarcopenia_tables_are_complete(applied):
    work, subjects = applied["work"], applied["subjects"]
    for model in ("unetr", "unet"):
        volumes = pd.read_csv(work / "results" / "volumes" / f"{model}.tsv", sep="\t", comment="#")
        assert sorted(volumes["subject"].unique()) == subjects
    adjusted = pd.read_csv(
        work / "results" / "sarcopenia" / "adjusted_volumes.tsv", sep="\t", comment="#"
    )
    excluded = pd.read_csv(work / "results" / "sarcopenia" / "excluded.tsv", sep="\t", comment="#")
    assert sorted(set(adjusted["subject"]) | set(excluded["subject"])) == subjects
    for family in ("muscles", "groups"):
        corr = pd.read_csv(
            work / "results" / "sarcopenia" / f"correlations_{family}.tsv", sep="\t", comment="#"
        )
        assert set(corr["sex"]) == {"F", "M"}
    assert (work / "results" / "figures" / "fig7_heatmap.png").stat().st_size > 0
    # No labels: nothing scored, no ground-truth volumes.
    assert not (work / "results" / "metrics").exists()
    assert not (work / "results" / "volumes" / "ground_truth.tsv").exists()


def test_new_weights_rerun_the_predictions_and_what_follows(applied):
    path = applied["weights"]["unet"]
    blob = torch.load(path, weights_only=True)
    name = next(iter(blob["state_dict"]))
    blob["state_dict"][name] = blob["state_dict"][name] + 1e-3
    torch.save(blob, path)
    dry = run_snakemake(applied["work"], "--cores", "2", "-n", configfiles=[TINY, applied["config"]])
    jobs = _jobs(dry.stdout)
    assert jobs.get("import_model") == 1
    assert any(j.startswith("predict_unet_") for j in jobs)
    assert not any(j.startswith("predict_unetr_") for j in jobs)
    assert "adjust_volumes" in jobs


def test_weights_from_another_spacing_are_refused_before_any_job(applied, tmp_path):
    other = tmp_path / "spacing.yaml"
    other.write_text("preprocess:\n  spacing_mm: [3.0, 3.0, 5.0]\n")
    proc = run_snakemake(
        tmp_path, "--cores", "1", "-n", configfiles=[TINY, applied["config"], other], check=False
    )
    assert proc.returncode != 0
    text = proc.stderr
    assert "preprocess.spacing_mm: model [6.0, 6.0, 10.0] vs config [3.0, 3.0, 5.0]" in text
    assert str(applied["weights"]["unetr"]) in text and "fix:" in text
    assert "Traceback" not in text
    assert not (tmp_path / "results").exists()
