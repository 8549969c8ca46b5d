# Stage 5: volumes. Per-structure volumes (mm³, by side) and muscle quality (mean HU, IMAT
# share, field-of-view flags) of every label map: each model's predictions, the first rater's
# and the second rater's labels; then one table per source.

VOLUME_PARAMS = {**config["volumes"], **BODY_PARAMS}
# Whose label maps are measured: each model's predictions on every included scan, the first
# rater's labels on the annotated scans, the second rater's on the RATER2 scans.
VOLUME_SUBJECTS = {
    **{model: SUBJECTS for model in MODELS},
    "ground_truth": ANNOTATED,
    "rater2": RATER2,
}
VOLUME_SOURCES = [source for source, members in VOLUME_SUBJECTS.items() if members]
_VOLUME_SETS = {source: set(members) for source, members in VOLUME_SUBJECTS.items()}


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
                f"logs/volumes/{_source}_{_chunk}.log",
            conda:
                "../../envs/imaging.yaml"
            threads: 1
            resources:
                mem_mb=4000,
                runtime=2 + len(_members),
            params:
                code=code_of("volumes"),
                source=_source,
                subjects=_members,
                volumes=VOLUME_PARAMS,
            script:
                "../scripts/volumes.py"


rule volume_table:
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
        "logs/volume_table/{source}.log",
    wildcard_constraints:
        source="|".join(VOLUME_SOURCES),
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        code=code_of("volume_table"),
        subjects=lambda wc: VOLUME_SUBJECTS[wc.source],
    script:
        "../scripts/volume_table.py"
