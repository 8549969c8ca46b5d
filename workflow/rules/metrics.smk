# Stage 6: metrics. Each model's predictions against the first rater's labels on the scored
# scans (the validation split; every annotated scan when no model trains here), on the native grid (Dice, ASSD, HD, HD95, RAVD per subject and class; VC per
# class), the ICC of volumes, the paper's Fig 5 table and figure, and the model comparison.
# With split.folds = k, each fold's model is also scored on its held-out subjects and the folds
# are pooled (results/metrics/{model}/cv/).

EVAL_CFG = config["metrics"]


rule metrics:
    """Every metric of every foreground class for each validation subject, and a per-class summary."""
    input:
        **evaluation_pairs(
            EVAL_SUBJECTS, "results/predictions/{{model}}/{subject}.nii.gz"
        ),
    output:
        per_subject="results/metrics/{model}/per_subject.tsv",
        summary="results/metrics/{model}/summary.tsv",
    log:
        "logs/metrics/{model}.log",
    benchmark:
        "benchmarks/metrics/{model}.tsv"
    conda:
        "../../envs/evaluate.yaml"
    threads: EVAL_CFG["threads"]
    resources:
        mem_mb=EVAL_CFG["resources"]["mem_mb"],
        runtime=EVAL_CFG["resources"]["runtime"],
    params:
        code=code_of("metrics"),
        model=lambda wc: wc.model,
        subjects=EVAL_SUBJECTS,
        subset="validation" if TRAINED else "annotated",
        grid_tolerance_mm=EVAL_CFG["grid_tolerance_mm"],
    script:
        "../scripts/metrics.py"


use rule metrics as metrics_fold with:
    input:
        unpack(fold_evaluation_inputs),
    output:
        per_subject="results/metrics/{model}/fold{fold}/per_subject.tsv",
        summary="results/metrics/{model}/fold{fold}/summary.tsv",
    log:
        "logs/metrics/{model}_fold{fold}.log",
    benchmark:
        "benchmarks/metrics/{model}_fold{fold}.tsv"
    wildcard_constraints:
        fold=r"\d+",
    params:
        code=code_of("metrics"),
        model=lambda wc: f"{wc.model} fold {wc.fold}",
        subjects=lambda wc: fold_subjects(int(wc.fold), True),
        subset="held-out",
        grid_tolerance_mm=EVAL_CFG["grid_tolerance_mm"],


rule metrics_cv:
    """The held-out metrics of all folds pooled: every annotated subject scored once."""
    input:
        per_subject=expand(
            "results/metrics/{{model}}/fold{fold}/per_subject.tsv", fold=FOLD_IDS
        ),
    output:
        per_subject="results/metrics/{model}/cv/per_subject.tsv",
        summary="results/metrics/{model}/cv/summary.tsv",
    log:
        "logs/metrics_cv/{model}.log",
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_of("metrics_cv"),
        model=lambda wc: wc.model,
        folds=FOLD_IDS,
    script:
        "../scripts/metrics_cv.py"


rule icc:
    """ICC(2,1) of class volumes: each model vs the first rater (validation), rater 2 vs rater 1."""
    input:
        unpack(icc_inputs),
    output:
        icc="results/metrics/icc.tsv",
    log:
        "logs/icc.log",
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_of("icc"),
        models=MODELS,
        eval_subjects=EVAL_SUBJECTS,
        rater2_subjects=RATER2,
    script:
        "../scripts/icc.py"


rule compare_models:
    """Mean ± sd of Dice and ASSD per model; paired Wilcoxon of per-subject mean muscle Dice."""
    input:
        per_subject=expand("results/metrics/{model}/per_subject.tsv", model=MODELS),
        summary=expand("results/metrics/{model}/summary.tsv", model=MODELS),
        labels=LABELS_TSV,
    output:
        comparison="results/metrics/comparison.tsv",
    log:
        "logs/compare_models.log",
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_of("compare_models"),
        models=MODELS,
        proposed=EVAL_CFG["compare"]["proposed"],
        baseline=EVAL_CFG["compare"]["baseline"],
    script:
        "../scripts/compare_models.py"


rule fig5_table:
    """Fig 5 as in the paper: rows metric × model, one column per muscle (TSV and Markdown)."""
    input:
        summary=expand("results/metrics/{model}/summary.tsv", model=MODELS),
        labels=LABELS_TSV,
    output:
        tsv="results/tables/fig5_metrics.tsv",
        md="results/tables/fig5_metrics.md",
    log:
        "logs/fig5_table.log",
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_of("fig5_table"),
        models=MODELS,
        metrics=EVAL_CFG["fig5_metrics"],
        model_names=EVAL_CFG["model_names"],
    script:
        "../scripts/fig5_table.py"


rule fig5_metrics:
    """Fig 5 as a figure: each model's mean ± sd per muscle, one panel per metric."""
    input:
        summary=expand("results/metrics/{model}/summary.tsv", model=MODELS),
        labels=LABELS_TSV,
    output:
        png=report(
            "results/figures/fig5_metrics.png",
            caption="../report/fig5_metrics.rst",
            category="6. Metrics",
        ),
        pdf="results/figures/fig5_metrics.pdf",
    log:
        "logs/fig5_metrics.log",
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_of("fig5_metrics"),
        models=MODELS,
        metrics=EVAL_CFG["fig5_metrics"],
        model_names=EVAL_CFG["model_names"],
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/fig5_metrics.py"
