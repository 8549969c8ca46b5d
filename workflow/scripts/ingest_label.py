"""Rule ingest_label: a label map checked against its ingested scan, ids mapped, as uint8."""

from thighct import ingest
from thighct.labels import read_labels
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    subject = snakemake.wildcards.subject
    info = ingest.ingest_subject_label(
        snakemake.input.label,
        snakemake.input.image,
        snakemake.output.label,
        snakemake.output.info,
        read_labels(snakemake.input.labels),
        ingest.IngestSettings.from_config(snakemake.params.ingest),
        subject=subject,
    )
    log.info(
        "%s: classes %s; dropped source ids %s",
        subject,
        sorted(info["voxels"]),
        info["dropped_ids"],
    )
    for name, faces in info["touches_border"].items():
        log.warning("%s: %s touches the %s face(s), cut by the field of view", subject, name, faces)
