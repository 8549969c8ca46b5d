# Shared state of the workflow: the label table, the cohort (validated and filtered once at
# parse time, and a user cohort's scans checked from their headers, so a bad table or scan
# stops the run before any job), input functions and constraints.
import os
import sys
from types import SimpleNamespace

import pandas as pd

sys.path.insert(
    0, str(REPO / "src")
)  # the library works even without `pip install -e .`

from thighct import cohort as cohort_lib
from thighct import model_file, run_settings, scan_check
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

# Networks as the rules see them: `weights` (apply mode, below) is not part of the network.
NETWORKS = {
    name: {k: v for k, v in cfg.items() if k != "weights"}
    for name, cfg in config["networks"].items()
}
# The pre-processing that shapes every network's input (also stored in each model file).
PREPROCESS_PARAMS = model_file.input_preprocessing(config["preprocess"])

# The body mask (threshold, opening, components) as the pre-processing builds it; the midline
# of the volumes and the clean-up of predictions use the same one (thighct.body).
BODY_KEYS = [
    "body_threshold_hu",
    "body_opening_mm",
    "body_min_component_fraction",
    "body_coarse_mm",
]
BODY_PARAMS = {
    k: config["preprocess"][k] for k in BODY_KEYS if k in config["preprocess"]
}


# Apply mode: a model whose networks.<model>.weights names a model file is not trained here.
# The file is checked against this config (labels, network, pre-processing) while the workflow
# is read, so a mismatch stops the run before any job, and rule import_model copies it to
# results/models/{model}/model.pt. Its SHA-256 is a param: new content reruns predictions.
def weights_path(model):
    """networks.<model>.weights as an absolute path: a relative one from the working directory,
    then from the repository, never this run's own results/models/{model}/model.pt."""
    given = Path(config["networks"][model]["weights"])
    own = Path(f"results/models/{model}/model.pt").resolve()
    candidates = [given] if given.is_absolute() else [given, REPO / given]
    for path in candidates:
        if path.exists() and path.resolve() != own:
            return str(path.resolve())
    if candidates[-1].resolve() == own:
        _fail(
            ThighctError(
                f"networks.{model}.weights is this run's own output {own}",
                fix="run apply mode in another working directory (--directory), or copy the "
                "weights elsewhere and give that path",
            )
        )
    return str(candidates[-1].resolve())


WEIGHTS = {m: weights_path(m) for m in MODELS if config["networks"][m].get("weights")}
TRAINED = [m for m in MODELS if m not in WEIGHTS]
WEIGHTS_SHA256 = {}
_weight_problems = []
for _model, _path in WEIGHTS.items():
    try:
        model_file.check_applicable(
            _path, _model, LABELS, NETWORKS[_model], PREPROCESS_PARAMS
        )
        WEIGHTS_SHA256[_model] = model_file.file_sha256(_path)
    except ThighctError as exc:
        _weight_problems.append(str(exc))
if _weight_problems:
    _fail("\n\n".join(_weight_problems))
if TRAINED and not (TRAIN and VAL):
    _fail(
        ThighctError(
            f"models {TRAINED} are trained here, which needs annotated scans in the train "
            f"and val splits; this cohort has {len(TRAIN)} and {len(VAL)}",
            fix="give label maps in the cohort table's `label` column, or set "
            "networks.<model>.weights to a trained model.pt for each model (apply mode)",
        )
    )
# Scans scored against labels: the validation split when a model trains here, every annotated
# scan when all weights come from elsewhere (no model here has seen their labels).
EVAL_SUBJECTS = VAL if TRAINED else ANNOTATED
# The sarcopenia analysis needs the SMI (DXA) of at least some included subjects.
HAS_SMI = "smi" in INCLUDED and bool(
    pd.to_numeric(INCLUDED["smi"], errors="coerce").notna().any()
)

# The per-scan stages that load torch and MONAI (preprocess, predict) run in chunks: one job
# per chunk of subjects, so MONAI's import (seconds of CPU) is paid once per chunk instead of
# once per scan. A subject's chunk follows from a stable hash of its id, so adding a subject
# reruns only its own chunk. config `chunks` = 0 means one job per subject; `auto` about
# `chunk_size` subjects per chunk (a power of two chunks, so growth rarely reshuffles).
N_CHUNKS = cohort_lib.chunk_count(len(SUBJECTS), config["chunks"], config["chunk_size"])
CHUNKS = cohort_lib.chunk_subjects(SUBJECTS, N_CHUNKS)


wildcard_constraints:
    subject="[A-Za-z0-9][A-Za-z0-9_.-]*",
    model="|".join(MODELS),


def one_of(names):
    """A wildcard pattern matching exactly ``names`` (nothing when there are none)."""
    return "|".join(names) if names else "(?!)"


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
    names = config["metrics"].get("model_names", {})
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


def evaluation_pairs(subjects, predictions):
    """Prediction and first-rater label paths of ``subjects`` (prediction pattern has {subject})."""
    return {
        "pred": expand(predictions, subject=subjects),
        "truth": expand("results/ingested/{subject}/label.nii.gz", subject=subjects),
        "labels": LABELS_TSV,
    }


def fold_evaluation_inputs(wildcards):
    held_out = fold_subjects(int(wildcards.fold), True)
    pattern = (
        f"results/predictions/{wildcards.model}/fold{wildcards.fold}/{{subject}}.nii.gz"
    )
    return evaluation_pairs(held_out, pattern)


def icc_inputs(wildcards):
    inputs = {
        "models": expand("results/volumes/{model}.tsv", model=MODELS),
        "ground_truth": "results/volumes/ground_truth.tsv",
        "labels": LABELS_TSV,
    }
    if RATER2:
        inputs["rater2"] = "results/volumes/rater2.tsv"
    return inputs


def predict_inputs(model_path, members):
    return {
        "model": model_path,
        "images": expand(
            "results/preprocessed/{subject}/image.nii.gz", subject=members
        ),
        "transforms": expand(
            "results/preprocessed/{subject}/transform.json", subject=members
        ),
        "ingested": expand("results/ingested/{subject}/image.nii.gz", subject=members),
        "labels": LABELS_TSV,
    }


def volume_label(wildcards):
    """The label map measured: a model's prediction or a rater's manual label."""
    if wildcards.source == "ground_truth":
        return f"results/ingested/{wildcards.subject}/label.nii.gz"
    if wildcards.source == "rater2":
        return f"results/ingested/{wildcards.subject}/label_rater2.nii.gz"
    return f"results/predictions/{wildcards.source}/{wildcards.subject}.nii.gz"


def fig6_inputs(wildcards):
    inputs = {
        "images": expand(
            "results/ingested/{subject}/image.nii.gz", subject=FIG6_SUBJECTS
        ),
        "truths": expand(
            "results/ingested/{subject}/label.nii.gz", subject=FIG6_SUBJECTS
        ),
        "predictions": expand(
            "results/predictions/{model}/{subject}.nii.gz",
            model=MODELS,
            subject=FIG6_SUBJECTS,
        ),
        "labels": LABELS_TSV,
    }
    # The Dice in the titles is the one the evaluation reports, when it scores these subjects.
    if set(FIG6_SUBJECTS) <= set(EVAL_SUBJECTS):
        inputs["metrics"] = expand(
            "results/metrics/{model}/per_subject.tsv", model=MODELS
        )
    return inputs


def synthetic_subject(wildcards):
    """The cohort values a subject's phantom depends on (a change reruns only it)."""
    row = subject_row(wildcards.subject)

    def number(value):
        return None if value is None or value == "" or pd.isna(value) else float(value)

    return {
        "sex": str(row["sex"]),
        "height_cm": float(row["height_cm"]),
        "weight_kg": number(row["weight_kg"]),
        "smi": number(row["smi"]),
        "sarcopenia_cutoff": float(CUTOFFS[row["sex"]]),
    }


def example_subject():
    """The subject shown in phantom_example.png (config, else the first annotated)."""
    chosen = config["synthetic"]["example"]["subject"]
    if chosen and chosen not in SUBJECTS:
        _fail(
            ThighctError(
                f"synthetic.example.subject {chosen!r} is not an included subject",
                fix="give an id from results/cohort/included.tsv, or leave it empty",
            )
        )
    return chosen or (ANNOTATED or SUBJECTS)[0]


def preprocessed(subjects, kind):
    return expand(
        "results/preprocessed/{subject}/{kind}.nii.gz", subject=subjects, kind=kind
    )


def fold_subjects(fold, held_out):
    """Annotated subjects of cross-validation fold ``fold`` (held_out) or of all the others."""
    rows = INCLUDED[INCLUDED["subject_id"].isin(ANNOTATED)]
    chosen = rows["fold"] == fold if held_out else rows["fold"] != fold
    return list(rows.loc[chosen, "subject_id"])


def train_inputs(train_ids, val_ids):
    return {
        "train_images": preprocessed(train_ids, "image"),
        "train_labels": preprocessed(train_ids, "label"),
        "val_images": preprocessed(val_ids, "image"),
        "val_labels": preprocessed(val_ids, "label"),
        "labels": LABELS_TSV,
    }


def fold_inputs(wildcards):
    fold = int(wildcards.fold)
    return train_inputs(fold_subjects(fold, False), fold_subjects(fold, True))


def fold_params(wildcards):
    fold = int(wildcards.fold)
    return {
        "train": fold_subjects(fold, False),
        "val": fold_subjects(fold, True),
        "fold": fold,
    }


def train_params(model):
    """The train settings that shape this model's weights: the shared ones with the model's own
    (train.by_model, per-model epochs) merged over them; run settings reach the job from the
    config (thighct.run_settings)."""
    return run_settings.science("train", run_settings.train_for_model(TRAIN_CFG, model))


def get_final_output():
    """Every result of the study that this config and cohort allow (rule all's inputs).

    Models are trained here or applied (networks.<model>.weights); scores, the ICC and Fig 5/6
    need annotated scans; the sarcopenia analysis needs SMI values.
    """
    targets = [
        "results/cohort/flow.tsv",
        "results/cohort/included.tsv",
        "results/figures/fig1_flow.png",
        "results/labels/thighct_slicer_colors.ctbl",
        "results/figures/fig3_preprocessing.png",
    ]
    if SYNTHETIC:
        targets += [
            "results/synthetic/truth.tsv",
            "results/figures/phantom_example.png",
        ]
    targets += expand("results/preprocessed/{subject}/image.nii.gz", subject=SUBJECTS)
    targets += expand("results/preprocessed/{subject}/label.nii.gz", subject=ANNOTATED)
    targets += expand("results/ingested/{subject}/label_rater2.nii.gz", subject=RATER2)
    targets += expand("results/models/{model}/model.pt", model=MODELS)
    if TRAINED:
        targets += expand("results/models/{model}/train_log.tsv", model=TRAINED)
        targets += expand(
            "results/models/{model}/fold{fold}/model.pt", model=TRAINED, fold=FOLD_IDS
        )
        targets += ["results/figures/training_curves.png"]
    targets += expand(
        "results/predictions/{model}/{subject}.nii.gz", model=MODELS, subject=SUBJECTS
    )
    targets += expand("results/volumes/{source}.tsv", source=VOLUME_SOURCES)
    targets += ["results/qc/flags.tsv", "results/figures/qc_flagged.png"]
    if EVAL_SUBJECTS:
        targets += expand(
            "results/metrics/{model}/{table}.tsv",
            model=MODELS,
            table=["per_subject", "summary"],
        )
        targets += [
            "results/metrics/icc.tsv",
            "results/tables/fig5_metrics.tsv",
            "results/tables/fig5_metrics.md",
            "results/figures/fig5_metrics.png",
        ]
        if {EVAL_CFG["compare"]["proposed"], EVAL_CFG["compare"]["baseline"]} <= set(
            MODELS
        ):
            targets += ["results/metrics/comparison.tsv"]
        if FIG6_SUBJECTS:
            targets += ["results/figures/fig6_examples.png"]
    if FOLDS and TRAINED:
        targets += expand("results/metrics/{model}/cv/summary.tsv", model=TRAINED)
    if HAS_SMI:
        targets += [
            "results/sarcopenia/correlations_muscles.tsv",
            "results/sarcopenia/correlations_groups.tsv",
            "results/sarcopenia/adjusted_models.tsv",
            "results/sarcopenia/summary.md",
            "results/figures/fig7_heatmap.png",
            "results/figures/fig8_heatmap.png",
            "results/figures/adjusted_models.png",
        ]
        if TRUTH_CHECK:
            targets += ["results/sarcopenia/truth_agreement.tsv"]
    return targets
