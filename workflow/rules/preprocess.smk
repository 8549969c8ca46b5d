# Stage 2: ingestion of each scan (NIfTI or DICOM -> checked canonical NIfTI) and the paper's
# pre-processing (HU window -57..164 -> 0..1, gamma 2, crop to the body, resampling), Fig 3.
# Images and labels are separate rules: unlabelled subjects have no label, and Snakemake
# needs fixed outputs per rule.


def ingest_label_source(wildcards):
    """The raw label map of the first rater (label) or the second (label_rater2)."""
    if wildcards.which == "label_rater2":
        return source_label_rater2(wildcards)
    return source_label(wildcards)


rule ingest:
    """A scan read, checked (3-D, finite, Hounsfield units) and stored as int16 HU in RAS+."""
    input:
        image=source_image,
        code=lib("io", "ingest"),
    output:
        image="results/ingested/{subject}/image.nii.gz",
        info="results/ingested/{subject}/info.json",
    params:
        ingest=config["ingest"],
    log:
        "logs/ingest/{subject}.log",
    benchmark:
        "benchmarks/ingest/{subject}.tsv"
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/ingest.py"


rule ingest_label:
    """A label map checked against its scan's grid, its ids mapped to labels.tsv, as uint8."""
    input:
        label=ingest_label_source,
        image="results/ingested/{subject}/image.nii.gz",
        labels=LABELS_TSV,
        code=lib("io", "ingest"),
    output:
        label="results/ingested/{subject}/{which}.nii.gz",
        info="results/ingested/{subject}/{which}_info.json",
    params:
        ingest=config["ingest"],
    wildcard_constraints:
        which="label|label_rater2",
    log:
        "logs/ingest_label/{subject}_{which}.log",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/ingest_label.py"


rule preprocess:
    """Orientation, HU window to 0..1, gamma, crop to the body, resampling (MONAI)."""
    input:
        image="results/ingested/{subject}/image.nii.gz",
        code=lib("io", "preprocess"),
    output:
        image="results/preprocessed/{subject}/image.nii.gz",
        transform="results/preprocessed/{subject}/transform.json",
    params:
        preprocess={k: v for k, v in config["preprocess"].items() if k != "figure"},
    log:
        "logs/preprocess/{subject}.log",
    benchmark:
        "benchmarks/preprocess/{subject}.tsv"
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=10,
    script:
        "../scripts/preprocess.py"


rule preprocess_label:
    """The label map through the same crop and resampling as its image (nearest neighbour)."""
    input:
        label="results/ingested/{subject}/label.nii.gz",
        transform="results/preprocessed/{subject}/transform.json",
        code=lib("io", "preprocess"),
    output:
        label="results/preprocessed/{subject}/label.nii.gz",
    log:
        "logs/preprocess_label/{subject}.log",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/preprocess_label.py"


def fig3_subject():
    """The subject shown in Fig 3: configured, else the first annotated (else included) one."""
    chosen = config["preprocess"]["figure"]["subject"]
    if chosen:
        return chosen
    return (ANNOTATED or SUBJECTS)[0]


rule fig3_preprocessing:
    """Fig 3: axial slices at hip, upper and mid-thigh - raw, windowed, gamma, preprocessed."""
    input:
        raw=f"results/ingested/{fig3_subject()}/image.nii.gz",
        image=f"results/preprocessed/{fig3_subject()}/image.nii.gz",
        transform=f"results/preprocessed/{fig3_subject()}/transform.json",
        code=lib("io", "preprocess", "plots/style", "plots/preprocessing"),
    output:
        png=report(
            "results/figures/fig3_preprocessing.png",
            caption="../report/fig3_preprocessing.rst",
            category="2. Pre-processing",
        ),
    params:
        subject=fig3_subject(),
        figure=config["preprocess"]["figure"],
        dpi=config["plots"]["dpi"],
    log:
        "logs/fig3_preprocessing.log",
    conda:
        "../../envs/base.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=5,
    script:
        "../scripts/fig3_preprocessing.py"


ALL_TARGETS.extend(
    expand("results/preprocessed/{subject}/image.nii.gz", subject=SUBJECTS)
    + expand("results/preprocessed/{subject}/label.nii.gz", subject=ANNOTATED)
    + expand("results/ingested/{subject}/label_rater2.nii.gz", subject=RATER2)
    + ["results/figures/fig3_preprocessing.png"]
)
