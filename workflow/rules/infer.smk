# Stage 4: inference on every included scan (annotated or not) with each model, the labels
# mapped back onto the scan's own grid; per-structure volumes and muscle quality (mean HU,
# IMAT share, side) from predictions and manual labels; Fig 6 (ground truth vs predictions).

INFER_CFG = config["infer"]
# The settings that shape each model's predictions: the shared ones with the model's own
# window settings (infer.by_model) merged over them, run settings left out (they reach the
# predict jobs from the config; thighct.run_settings).
if set(INFER_CFG.get("by_model", {})) - set(config["networks"]):
    _fail(
        ThighctError(
            f"infer.by_model names {sorted(set(INFER_CFG['by_model']) - set(config['networks']))}, "
            f"which are not networks (networks: {sorted(config['networks'])})",
            fix="key infer.by_model by the names under `networks`, or remove the entry",
        )
    )
INFER_RUN = {
    model: run_settings.science("infer", run_settings.infer_for_model(INFER_CFG, model))
    for model in MODELS
}
# The midline uses the pre-processing's body mask (threshold, opening, components).
BODY_KEYS = [
    "body_threshold_hu",
    "body_opening_mm",
    "body_min_component_fraction",
    "body_coarse_mm",
]
BODY_PARAMS = {
    k: config["preprocess"][k] for k in BODY_KEYS if k in config["preprocess"]
}
VOLUME_PARAMS = {**config["volumes"], **BODY_PARAMS}
# Post-processing of each predicted label map: its settings and the body mask's.
POSTPROCESS_PARAMS = {**INFER_CFG.get("postprocess", {}), "body": BODY_PARAMS}
# Whose label maps are measured: each model's predictions on every included scan, the first
# rater's labels on the annotated scans, the second rater's on the RATER2 scans.
VOLUME_SUBJECTS = {
    **{model: SUBJECTS for model in MODELS},
    "ground_truth": ANNOTATED,
    "rater2": RATER2,
}
VOLUME_SOURCES = list(MODELS) + ["ground_truth"] + (["rater2"] if RATER2 else [])
_VOLUME_SETS = {source: set(members) for source, members in VOLUME_SUBJECTS.items()}


# One job per model and chunk of subjects (config `chunks`, see common.smk): torch, MONAI and
# the weights are loaded once per chunk. The benchmark file times the chunk; the timing table
# has the seconds of each scan. One rule per (model, chunk) keeps every output path literal,
# so Snakemake finds each file's producer directly, also on a cohort of 10,000 subjects.
for _model in MODELS:
    for _chunk, _members in CHUNKS.items():

        rule:
            name:
                f"predict_{_model}_{_chunk}"
            input:
                **predict_inputs(f"results/models/{_model}/model.pt", _members),
            output:
                predictions=expand(
                    f"results/predictions/{_model}/{{subject}}.nii.gz",
                    subject=_members,
                ),
                timing=f"results/predictions/{_model}/timing/{_chunk}.tsv",
            log:
                f"logs/predict/{_model}_{_chunk}.log",
            benchmark:
                f"benchmarks/predict/{_model}_{_chunk}.tsv"
            conda:
                "../../envs/segmentation.yaml"
            threads: INFER_CFG["threads"]
            resources:
                **partition_of(INFER_CFG["resources"]),
                gpu=INFER_CFG["resources"]["gpu"],
                gpu_model=(
                    INFER_CFG["resources"]["gpu_model"]
                    if INFER_CFG["resources"]["gpu"]
                    else ""
                ),
                mem_mb=INFER_CFG["resources"]["mem_mb"],
                runtime=INFER_CFG["resources"]["runtime"] * len(_members),
            params:
                code=code_of("predict"),
                model=_model,
                subjects=_members,
                infer=INFER_RUN[_model],
                postprocess=POSTPROCESS_PARAMS,
                network=config["networks"][_model],
            script:
                "../scripts/predict.py"


# Cross-validation: each fold's model on its held-out subjects (scored by evaluate_fold).
for _model in MODELS:
    for _fold in FOLD_IDS:
        _held_out = fold_subjects(_fold, True)

        rule:
            name:
                f"predict_{_model}_fold{_fold}"
            input:
                **predict_inputs(
                    f"results/models/{_model}/fold{_fold}/model.pt", _held_out
                ),
            output:
                predictions=expand(
                    f"results/predictions/{_model}/fold{_fold}/{{subject}}.nii.gz",
                    subject=_held_out,
                ),
                timing=f"results/predictions/{_model}/fold{_fold}/timing.tsv",
            log:
                f"logs/predict/{_model}_fold{_fold}.log",
            benchmark:
                f"benchmarks/predict/{_model}_fold{_fold}.tsv"
            conda:
                "../../envs/segmentation.yaml"
            threads: INFER_CFG["threads"]
            resources:
                **partition_of(INFER_CFG["resources"]),
                gpu=INFER_CFG["resources"]["gpu"],
                gpu_model=(
                    INFER_CFG["resources"]["gpu_model"]
                    if INFER_CFG["resources"]["gpu"]
                    else ""
                ),
                mem_mb=INFER_CFG["resources"]["mem_mb"],
                runtime=INFER_CFG["resources"]["runtime"] * max(len(_held_out), 1),
            params:
                code=code_of("predict"),
                model=_model,
                subjects=_held_out,
                infer=INFER_RUN[_model],
                postprocess=POSTPROCESS_PARAMS,
                network=config["networks"][_model],
            script:
                "../scripts/predict.py"


# Per-scan volume tables, one job per source and chunk of subjects (config `chunks`).
for _source in VOLUME_SOURCES:
    for _chunk, _all in CHUNKS.items():
        _members = [s for s in _all if s in _VOLUME_SETS[_source]]
        if not _members:
            continue

        rule:
            """Scans' volumes (mm³, by side), mean HU, IMAT share and field-of-view flags."""
            name:
                f"volumes_{_source}_{_chunk}"
            input:
                labels_maps=[
                    volume_label(SimpleNamespace(source=_source, subject=s))
                    for s in _members
                ],
                images=expand(
                    "results/ingested/{subject}/image.nii.gz", subject=_members
                ),
                labels=LABELS_TSV,
            output:
                tables=expand(
                    f"results/volumes/{_source}/{{subject}}.tsv", subject=_members
                ),
            log:
                f"logs/volumes_subject/{_source}_{_chunk}.log",
            conda:
                "../../envs/imaging.yaml"
            threads: 1
            resources:
                mem_mb=4000,
                runtime=2 + len(_members),
            params:
                code=code_of("volumes_subject"),
                source=_source,
                subjects=_members,
                volumes=VOLUME_PARAMS,
            script:
                "../scripts/volumes_subject.py"


rule volumes:
    """The volume table of one source (a model, ground_truth, rater2): all its subjects."""
    input:
        tables=lambda wc: expand(
            "results/volumes/{source}/{subject}.tsv",
            source=wc.source,
            subject=VOLUME_SUBJECTS[wc.source],
        ),
    output:
        table="results/volumes/{source}.tsv",
    log:
        "logs/volumes/{source}.log",
    wildcard_constraints:
        source="|".join(VOLUME_SOURCES),
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        code=code_of("volumes"),
        subjects=lambda wc: VOLUME_SUBJECTS[wc.source],
    script:
        "../scripts/volumes.py"


# Fig 6 shows two validation subjects (config infer.figure.subjects, else the first two).
FIG6_SUBJECTS = list(INFER_CFG["figure"]["subjects"]) or (VAL or ANNOTATED)[:2]


rule fig6_examples:
    """Fig 6: ground truth beside each model's prediction on three axial slices of two subjects."""
    input:
        unpack(fig6_inputs),
    output:
        png=report(
            "results/figures/fig6_examples.png",
            caption="../report/fig6_examples.rst",
            category="4. Inference",
        ),
    log:
        "logs/fig6_examples.log",
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=5,
    params:
        code=code_of("fig6_examples"),
        subjects=FIG6_SUBJECTS,
        models=MODELS,
        model_names=config["evaluate"]["model_names"],
        figure=INFER_CFG["figure"],
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/fig6_examples.py"


ALL_TARGETS.extend(
    expand(
        "results/predictions/{model}/{subject}.nii.gz", model=MODELS, subject=SUBJECTS
    )
    + expand("results/volumes/{source}.tsv", source=VOLUME_SOURCES)
    + (["results/figures/fig6_examples.png"] if FIG6_SUBJECTS else [])
)
