"""Rule ingest: a scan (NIfTI or DICOM folder) -> checked int16 HU volume in RAS+ and info.json."""

from thighct import ingest
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    subject = snakemake.wildcards.subject
    info = ingest.ingest_subject(
        snakemake.input.image,
        snakemake.output.image,
        snakemake.output.info,
        ingest.IngestSettings.from_config(snakemake.params.ingest),
        subject=subject,
    )
    log.info(
        "%s: %s %s -> shape %s, spacing %s mm, HU %d..%d",
        subject,
        info["format"],
        info["source_orientation"],
        info["shape"],
        info["spacing_mm"],
        info["hu_min"],
        info["hu_max"],
    )
