# Stage 2: ingestion of each scan (NIfTI or DICOM -> checked canonical NIfTI) and the paper's
# pre-processing (HU window -57..164 -> 0..1, gamma 2, crop to the body, resampling), Fig 3.
# Both run in chunks of subjects (config `chunks`); outputs stay one file per subject.


# One ingest job per chunk of subjects (config `chunks`, see common.smk): Python and the
# imaging stack start once per chunk. Each scan is read and checked (3-D, finite, Hounsfield
# units) and stored as int16 HU in RAS+; each label map is checked against its scan's grid,
# its ids mapped onto labels.tsv, and stored as uint8.
for _chunk, _members in CHUNKS.items():
    _ann = [s for s in _members if s in ANNOTATED_SET]
    _r2 = [s for s in _members if s in RATER2_SET]

    rule:
        name:
            f"ingest_{_chunk}"
        input:
            images=[subject_row(s)["image"] for s in _members],
            labels=[subject_row(s)["label"] for s in _ann],
            labels_rater2=[subject_row(s)["label_rater2"] for s in _r2],
            label_table=LABELS_TSV,
        output:
            images=expand("results/ingested/{subject}/image.nii.gz", subject=_members),
            infos=expand("results/ingested/{subject}/info.json", subject=_members),
            labels=expand("results/ingested/{subject}/label.nii.gz", subject=_ann),
            label_infos=expand(
                "results/ingested/{subject}/label_info.json", subject=_ann
            ),
            labels_rater2=expand(
                "results/ingested/{subject}/label_rater2.nii.gz", subject=_r2
            ),
            label_rater2_infos=expand(
                "results/ingested/{subject}/label_rater2_info.json", subject=_r2
            ),
        log:
            f"logs/ingest/{_chunk}.log",
        benchmark:
            f"benchmarks/ingest/{_chunk}.tsv"
        conda:
            "../../envs/imaging.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=5 + 2 * len(_members),
        params:
            code=code_of("ingest"),
            subjects=_members,
            annotated=_ann,
            rater2=_r2,
            ingest=config["ingest"],
        script:
            "../scripts/ingest.py"


# One job per chunk of subjects (config `chunks`, see common.smk): MONAI is imported once per
# chunk. Image and label of a subject go through one pipeline, so they share crop and grid.
for _chunk, _members in CHUNKS.items():
    _labelled = [s for s in _members if s in ANNOTATED_SET]

    rule:
        name:
            f"preprocess_{_chunk}"
        input:
            images=expand("results/ingested/{subject}/image.nii.gz", subject=_members),
            labels=expand("results/ingested/{subject}/label.nii.gz", subject=_labelled),
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
            code=code_of("preprocess"),
            subjects=_members,
            labelled=_labelled,
            preprocess=PREPROCESS_PARAMS,
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
        code=code_of("fig3_preprocessing"),
        subject=FIG3_SUBJECT,
        figure=config["preprocess"]["figure"],
        dpi=config["plots"]["dpi"],
    script:
        "../scripts/fig3_preprocessing.py"
