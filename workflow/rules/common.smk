# Shared state of the workflow: the label table, the cohort (validated and filtered once at
# parse time, and a user cohort's scans checked from their headers, so a bad table or scan
# stops the run before any job), input functions and constraints.
import os
import sys

import pandas as pd

sys.path.insert(
    0, str(REPO / "src")
)  # the library works even without `pip install -e .`

from thighct import cohort as cohort_lib
from thighct import run_settings
from thighct import scan_check
from thighct.ingest import IngestSettings
from thighct.errors import ThighctError
from thighct.fingerprint import script_fingerprint
from thighct.labels import read_labels


def repo_path(path):
    """A config path: as given if it exists from the working directory, else under the repo."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return str(p)
    return str(REPO / p)


def code_of(script):
    """Fingerprint of the library code that workflow/scripts/<script>.py imports (a param).

    Snakemake tracks a rule's script but not the thighct modules it imports. Their fingerprint
    (thighct.fingerprint: syntax trees without docstrings, every module imported in turn) goes
    into params, so a change to the code reruns exactly the jobs that run it, and an edit to
    a comment or docstring, or a reformat, reruns nothing.
    """
    return script_fingerprint(REPO / "workflow" / "scripts" / f"{script}.py")


def partition_of(resources):
    """{"slurm_partition": name} when a config resources section names a partition, else {}
    (an empty value would replace the Slurm profile's default partition)."""
    partition = resources.get("partition", "")
    return {"slurm_partition": partition} if partition else {}


def _fail(exc):
    sys.stderr.write(f"\nthighct: {exc}\n\n")
    raise SystemExit(1)


LABELS_TSV = repo_path(config["labels"])
try:
    LABELS = read_labels(LABELS_TSV)
except ThighctError as exc:
    _fail(exc)

SEED = int(config["seed"])
MODELS = list(config["models"])
CRITERIA = config["criteria"]
CUTOFFS = config["sarcopenia"]["cutoffs"][config["sarcopenia"]["definition"]]
SYNTHETIC = not config["cohort"]["table"]
SYNTHETIC_ROOT = "results/synthetic"

try:
    if SYNTHETIC:
        _raw = cohort_lib.synthetic_cohort_table(
            config["synthetic_cohort"],
            CRITERIA,
            CUTOFFS,
            config["split"],
            SEED,
            image_root=SYNTHETIC_ROOT,
        )
    else:
        COHORT_TSV = repo_path(config["cohort"]["table"])
        _raw = cohort_lib.read_cohort(COHORT_TSV)
    COHORT = cohort_lib.validate_cohort(
        _raw, CRITERIA, path=None if SYNTHETIC else COHORT_TSV
    )
    INCLUDED, FLOW = cohort_lib.filter_cohort(
        COHORT,
        CRITERIA,
        config["split"]["n_val"],
        config["split"]["folds"],
        SEED,
        path=None if SYNTHETIC else COHORT_TSV,
        validated=True,
    )
    if not SYNTHETIC:
        cohort_lib.check_paths(INCLUDED)
        # Every scan's and label map's header, before any job (memoised per file, see the
        # module); jobs started by a cluster executor re-read this file and skip it.
        if workflow.is_main_process:
            scan_check.check_scans(
                INCLUDED.to_dict("records"),
                IngestSettings.from_config(config["ingest"]),
                criteria=CRITERIA,
                cache_path=".snakemake/thighct/scan_headers.json",
                table=COHORT_TSV,
            )
except ThighctError as exc:
    _fail(exc)

SUBJECTS = list(INCLUDED["subject_id"])
_ROWS = {r["subject_id"]: r for r in INCLUDED.to_dict("records")}
ANNOTATED = [s for s in SUBJECTS if _ROWS[s]["label"]]
ANNOTATED_SET = set(
    ANNOTATED
)  # membership tests per chunk stay O(1) on 10,000 subjects
TRAIN = [s for s in SUBJECTS if _ROWS[s]["split"] == "train"]
VAL = [s for s in SUBJECTS if _ROWS[s]["split"] == "val"]
UNLABELLED = [s for s in SUBJECTS if _ROWS[s]["split"] == "unlabelled"]
RATER2 = [s for s in SUBJECTS if _ROWS[s]["label_rater2"]]
RATER2_SET = set(RATER2)
FOLDS = int(config["split"]["folds"])

# The per-scan stages that load torch and MONAI (preprocess, predict) run in chunks: one job
# per chunk of subjects, so MONAI's import (about 5 CPU-s) is paid once per chunk instead of
# once per scan. A subject's chunk follows from a stable hash of its id, so adding a subject
# reruns only its own chunk. config `chunks` = 0 means one job per subject; `auto` about
# `chunk_size` subjects per chunk (a power of two chunks, so growth rarely reshuffles).
N_CHUNKS = cohort_lib.chunk_count(len(SUBJECTS), config["chunks"], config["chunk_size"])
CHUNKS = cohort_lib.chunk_subjects(SUBJECTS, N_CHUNKS)

# Final targets; every stage's .smk appends its own.
ALL_TARGETS = []


wildcard_constraints:
    subject="[A-Za-z0-9][A-Za-z0-9_.-]*",
    model="|".join(MODELS),


def subject_row(subject):
    """The cohort row of an included subject, as a dict."""
    return _ROWS[subject]


def source_description(source):
    """Whose volumes a sarcopenia source holds, in words (for figure captions)."""
    fixed = {
        "ground_truth": "the first rater's labels",
        "rater2": "the second rater's labels",
        "truth": "the phantoms' true volumes",
    }
    names = config["evaluate"].get("model_names", {})
    return fixed.get(source, f"{names.get(source, source)} predictions")


def source_image(wildcards):
    """The subject's raw image: a NIfTI file or a DICOM folder (synthetic: the phantom)."""
    return _ROWS[wildcards.subject]["image"]


def source_label(wildcards):
    """The subject's first-rater label map (annotated subjects only)."""
    return _ROWS[wildcards.subject]["label"]


def source_label_rater2(wildcards):
    """The subject's second-rater label map (RATER2 subjects only)."""
    return _ROWS[wildcards.subject]["label_rater2"]
