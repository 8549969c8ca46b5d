# Stage 2: ingestion of each scan (NIfTI or DICOM -> checked canonical NIfTI) and the paper's
# pre-processing (HU window -57..164 -> 0..1, gamma 2, crop to the body, resampling), Fig 3.
# Ingestion has separate image and label rules (unlabelled subjects have no label, and a rule
# needs fixed outputs); preprocessing takes a chunk's images and labels in one job.


rule ingest:
    """A scan read, checked (3-D, finite, Hounsfield units) and stored as int16 HU in RAS+."""
    input:
        image=source_image,
        code=lib("io", "ingest"),
    output:
        image="results/ingested/{subject}/image.nii.gz",
        info="results/ingested/{subject}/info.json",
    log:
        "logs/ingest/{subject}.log",
    benchmark:
        "benchmarks/ingest/{subject}.tsv"
    conda:
        "../../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        ingest=config["ingest"],
    script:
        "../scripts/ingest.py"


rule ingest_label:
    """A label map checked against its scan's grid, its ids mapped to labels.tsv, as uint8."""
    input:
        label=lambda w: (
            source_label_rater2(w) if w.which == "label_rater2" else source_label(w)
        ),
        image="results/ingested/{subject}/image.nii.gz",
        labels=LABELS_TSV,
        code=lib("io", "ingest"),
    output:
        label="results/ingested/{subject}/{which}.nii.gz",
        info="results/ingested/{subject}/{which}_info.json",
    log:
        "logs/ingest_label/{subject}_{which}.log",
    wildcard_constraints:
        which="label|label_rater2",
    conda:
        "../../envs/imaging.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        ingest=config["ingest"],
    script:
        "../scripts/ingest_label.py"


# One job per chunk of subjects (config `chunks`, see common.smk): MONAI is imported once per
# chunk. Image and label of a subject go through one pipeline, so they share crop and grid.
for _chunk, _members in CHUNKS.items():
    _labelled = [s for s in _members if s in ANNOTATED]

    rule:
        name:
            f"preprocess_{_chunk}"
        input:
            images=expand("results/ingested/{subject}/image.nii.gz", subject=_members),
            labels=expand("results/ingested/{subject}/label.nii.gz", subject=_labelled),
            code=lib("io", "preprocess"),
        output:
            images=expand(
                "results/preprocessed/{subject}/image.nii.gz", subject=_members
            ),
            transforms=expand(
                "results/preprocessed/{subject}/transform.json", subject=_members
            ),
            labels=expand(
                "results/preprocessed/{subject}/label.nii.gz", subject=_labelled
            ),
        log:
            f"logs/preprocess/{_chunk}.log",
        benchmark:
            f"benchmarks/preprocess/{_chunk}.tsv"
        conda:
            "../../envs/segmentation.yaml"
        threads: 1
        resources:
            mem_mb=6000,
            runtime=10 + 2 * len(_members),
        params:
            subjects=_members,
            labelled=_labelled,
            preprocess={k: v for k, v in config["preprocess"].items() if k != "figure"},
        script:
            "../scripts/preprocess.py"


# The subject shown in Fig 3: configured, else the first annotated (else included) one.
FIG3_SUBJECT = config["preprocess"]["figure"]["subject"] or (ANNOTATED or SUBJECTS)[0]


rule fig3_preprocessing:
    """Fig 3: axial slices at hip, upper and mid-thigh - raw, windowed, gamma, preprocessed."""
    input:
        raw=f"results/ingested/{FIG3_SUBJECT}/image.nii.gz",
        image=f"results/preprocessed/{FIG3_SUBJECT}/image.nii.gz",
        transform=f"results/preprocessed/{FIG3_SUBJECT}/transform.json",
        code=lib("io", "preprocess", "plots/style", "plots/preprocessing"),
    output:
        png=report(
            "results/figures/fig3_preprocessing.png",
            caption="../report/fig3_preprocessing.rst",
            category="2. Pre-processing",
        ),
    log:
        "logs/fig3_preprocessing.log",
    conda:
        "../../envs/segmentation.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=5,
    params:
        subject=FIG3_SUBJECT,
        figure=config["preprocess"]["figure"],
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/fig3_preprocessing.py"


ALL_TARGETS.extend(
    expand("results/preprocessed/{subject}/image.nii.gz", subject=SUBJECTS)
    + expand("results/preprocessed/{subject}/label.nii.gz", subject=ANNOTATED)
    + expand("results/ingested/{subject}/label_rater2.nii.gz", subject=RATER2)
    + ["results/figures/fig3_preprocessing.png"]
)
