# Input functions and helpers of the stage files (kept apart from the rule files, as the
# Snakemake linter asks). Included after common.smk; they read the stages' settings at call time.
from types import SimpleNamespace

# --- evaluate.smk


def evaluation_pairs(subjects, predictions):
    """Prediction and first-rater label paths of ``subjects`` (prediction pattern has {subject})."""
    return {
        "pred": expand(predictions, subject=subjects),
        "truth": expand("results/ingested/{subject}/label.nii.gz", subject=subjects),
        "labels": LABELS_TSV,
    }


# --- evaluate.smk


def fold_evaluation_inputs(wildcards):
    held_out = fold_subjects(int(wildcards.fold), True)
    pattern = (
        f"results/predictions/{wildcards.model}/fold{wildcards.fold}/{{subject}}.nii.gz"
    )
    return evaluation_pairs(held_out, pattern)


# --- evaluate.smk


def icc_inputs(wildcards):
    inputs = {
        "models": expand("results/volumes/{model}.tsv", model=MODELS),
        "ground_truth": "results/volumes/ground_truth.tsv",
        "labels": LABELS_TSV,
    }
    if RATER2:
        inputs["rater2"] = "results/volumes/rater2.tsv"
    return inputs


# --- infer.smk


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


# --- infer.smk


def volume_label(wildcards):
    """The label map measured: a model's prediction or a rater's manual label."""
    if wildcards.source == "ground_truth":
        return f"results/ingested/{wildcards.subject}/label.nii.gz"
    if wildcards.source == "rater2":
        return f"results/ingested/{wildcards.subject}/label_rater2.nii.gz"
    return f"results/predictions/{wildcards.source}/{wildcards.subject}.nii.gz"


# --- infer.smk


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
    if set(FIG6_SUBJECTS) <= set(VAL):
        inputs["metrics"] = expand(
            "results/metrics/{model}/per_subject.tsv", model=MODELS
        )
    return inputs


# --- synthetic.smk


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


# --- synthetic.smk


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


# --- train.smk


def preprocessed(subjects, kind):
    return expand(
        "results/preprocessed/{subject}/{kind}.nii.gz", subject=subjects, kind=kind
    )


# --- train.smk


def fold_subjects(fold, held_out):
    """Annotated subjects of cross-validation fold ``fold`` (held_out) or of all the others."""
    rows = INCLUDED[INCLUDED["subject_id"].isin(ANNOTATED)]
    chosen = rows["fold"] == fold if held_out else rows["fold"] != fold
    return list(rows.loc[chosen, "subject_id"])


# --- train.smk


def train_inputs(train_ids, val_ids):
    return {
        "train_images": preprocessed(train_ids, "image"),
        "train_labels": preprocessed(train_ids, "label"),
        "val_images": preprocessed(val_ids, "image"),
        "val_labels": preprocessed(val_ids, "label"),
        "labels": LABELS_TSV,
    }


# --- train.smk


def fold_inputs(wildcards):
    fold = int(wildcards.fold)
    return train_inputs(fold_subjects(fold, False), fold_subjects(fold, True))


# --- train.smk


def fold_params(wildcards):
    fold = int(wildcards.fold)
    return {
        "train": fold_subjects(fold, False),
        "val": fold_subjects(fold, True),
        "fold": fold,
    }


# --- train.smk


def train_params(model):
    """The train settings that shape this model's weights: the shared ones with the model's own
    (train.by_model, per-model epochs) merged over them; run settings reach the job from the
    config (thighct.run_settings)."""
    return run_settings.science("train", run_settings.train_for_model(TRAIN_CFG, model))
