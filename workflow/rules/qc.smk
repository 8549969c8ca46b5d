# Stage 8: quality flags without labels. Each model's label map of every included scan checked
# against its CT and the rest of the cohort (structures missing or cut by the field of view,
# volumes far from the cohort's, left/right asymmetry, unlabelled muscle, metal, models that
# disagree): results/qc/flags.tsv and the figure of the flagged scans. On an unlabelled cohort
# these are the only checks there are.

QC_CFG = config["qc"]
_unknown = sorted(set(QC_CFG["fov_cut_expected"]) - set(LABELS.names))
if _unknown:
    _fail(
        ThighctError(
            f"qc.fov_cut_expected names {_unknown}, which are not classes of the label table",
            path=LABELS_TSV,
            fix="use class names from the label table's name column, or remove the entry",
        )
    )
# What the per-scan measures depend on (the thresholds act only in rule qc).
QC_SCAN_PARAMS = {k: QC_CFG[k] for k in ("muscle_hu", "metal_hu")}
QC_THRESHOLDS = {k: v for k, v in QC_CFG.items() if k != "figure"}


# One job per chunk of subjects (config `chunks`): each reads its scans' CT and every model's
# label map once.
for _chunk, _members in CHUNKS.items():

    rule:
        """Per-scan quality measures: end-slice areas, unlabelled muscle, metal, models' Dice."""
        name:
            f"qc_scan_{_chunk}"
        input:
            images=expand("results/ingested/{subject}/image.nii.gz", subject=_members),
            predictions=[
                f"results/predictions/{model}/{subject}.nii.gz"
                for subject in _members
                for model in MODELS
            ],
            labels=LABELS_TSV,
        output:
            tables=expand("results/qc/scans/{subject}.tsv", subject=_members),
        log:
            f"logs/qc_scan/{_chunk}.log",
        conda:
            "../../envs/evaluate.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=2 + len(_members),
        params:
            code=code_of("qc_scan"),
            subjects=_members,
            models=MODELS,
            qc=QC_SCAN_PARAMS,
            body=BODY_PARAMS,
        script:
            "../scripts/qc_scan.py"


rule qc:
    """Every quality flag of every scan: value, threshold and what it means, one row per flag."""
    input:
        scans=expand("results/qc/scans/{subject}.tsv", subject=SUBJECTS),
        volumes=expand("results/volumes/{model}.tsv", model=MODELS),
        included="results/cohort/included.tsv",
    output:
        flags=report(
            "results/qc/flags.tsv",
            caption="../report/qc_flags.rst",
            category="8. Quality control",
        ),
    log:
        "logs/qc.log",
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        code=code_of("qc"),
        models=MODELS,
        subjects=SUBJECTS,
        qc=QC_THRESHOLDS,
    script:
        "../scripts/qc.py"


rule qc_flagged:
    """The flagged scans: axial and coronal slices through each one's first flag, flags listed."""
    input:
        flags="results/qc/flags.tsv",
        images=expand("results/ingested/{subject}/image.nii.gz", subject=SUBJECTS),
        predictions=[
            f"results/predictions/{model}/{subject}.nii.gz"
            for subject in SUBJECTS
            for model in MODELS
        ],
        labels=LABELS_TSV,
    output:
        png=report(
            "results/figures/qc_flagged.png",
            caption="../report/qc_flagged.rst",
            category="8. Quality control",
        ),
    log:
        "logs/qc_flagged.log",
    conda:
        "../../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        code=code_of("qc_flagged"),
        subjects=SUBJECTS,
        models=MODELS,
        model_names=config["metrics"]["model_names"],
        qc=QC_SCAN_PARAMS,
        body=BODY_PARAMS,
        max_scans=QC_CFG["figure"]["max_scans"],
        figure=INFER_CFG["figure"],
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/qc_flagged.py"
