# Stage 4: prediction. Each model segments every included scan (annotated or not); the labels
# are mapped back onto the scan's own grid and cleaned (outside the body, small pieces); Fig 6
# shows ground truth beside the predictions.

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
# Post-processing of each predicted label map: its settings and the body mask's.
POSTPROCESS_PARAMS = {**INFER_CFG.get("postprocess", {}), "body": BODY_PARAMS}

# The prediction jobs: one per model and chunk of subjects (config `chunks`, see common.smk),
# and with split.folds = k one per fold model on its held-out subjects (scored by metrics_fold).
# torch, MONAI and the weights load once per job; the benchmark file times the job, the timing
# table each scan. Every output path is literal, so Snakemake finds each file's producer
# directly, also on a cohort of 10,000 subjects.
PREDICT_JOBS = [
    SimpleNamespace(
        name=f"{m}_{chunk}",
        model=m,
        weights=f"results/models/{m}/model.pt",
        subjects=members,
        folder=f"results/predictions/{m}",
        timing=f"results/predictions/{m}/timing/{chunk}.tsv",
    )
    for m in MODELS
    for chunk, members in CHUNKS.items()
] + [
    SimpleNamespace(
        name=f"{m}_fold{fold}",
        model=m,
        weights=f"results/models/{m}/fold{fold}/model.pt",
        subjects=fold_subjects(fold, True),
        folder=f"results/predictions/{m}/fold{fold}",
        timing=f"results/predictions/{m}/fold{fold}/timing.tsv",
    )
    for m in TRAINED
    for fold in FOLD_IDS
]

for _job in PREDICT_JOBS:

    rule:
        name:
            f"predict_{_job.name}"
        input:
            **predict_inputs(_job.weights, _job.subjects),
        output:
            predictions=expand(
                f"{_job.folder}/{{subject}}.nii.gz", subject=_job.subjects
            ),
            timing=_job.timing,
        log:
            f"logs/predict/{_job.name}.log",
        benchmark:
            f"benchmarks/predict/{_job.name}.tsv"
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
            runtime=INFER_CFG["resources"]["runtime"] * max(len(_job.subjects), 1),
        params:
            code=code_of("predict"),
            model=_job.model,
            subjects=_job.subjects,
            infer=INFER_RUN[_job.model],
            postprocess=POSTPROCESS_PARAMS,
            network=NETWORKS[_job.model],
        script:
            "../scripts/predict.py"


# Fig 6 shows two scored subjects (config infer.figure.subjects, else the first two).
FIG6_SUBJECTS = list(INFER_CFG["figure"]["subjects"]) or EVAL_SUBJECTS[:2]


rule fig6_examples:
    """Fig 6: ground truth beside each model's prediction on three axial slices of two subjects."""
    input:
        unpack(fig6_inputs),
    output:
        png=report(
            "results/figures/fig6_examples.png",
            caption="../report/fig6_examples.rst",
            category="4. Prediction",
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
        model_names=config["metrics"]["model_names"],
        figure=INFER_CFG["figure"],
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/fig6_examples.py"
