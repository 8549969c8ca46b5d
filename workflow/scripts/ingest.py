"""Rule ingest (one job per chunk of subjects): scans and label maps -> checked RAS+ NIfTI.

Images become int16 HU volumes with info.json; label maps (first and second rater) are checked
against their scan's grid, mapped onto labels.tsv ids and stored as uint8 with *_info.json.
"""

from thighct import ingest
from thighct.errors import ScanErrors, ThighctError
from thighct.labels import read_labels
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    settings = ingest.IngestSettings.from_config(p.ingest)
    labels = read_labels(snakemake.input.label_table)
    failed = []
    for i, subject in enumerate(p.subjects):
        try:
            info = ingest.ingest_subject(
                snakemake.input.images[i],
                snakemake.output.images[i],
                snakemake.output.infos[i],
                settings,
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
            for which, members, sources, outputs, infos in (
                (
                    "label",
                    p.annotated,
                    snakemake.input.labels,
                    snakemake.output.labels,
                    snakemake.output.label_infos,
                ),
                (
                    "label_rater2",
                    p.rater2,
                    snakemake.input.labels_rater2,
                    snakemake.output.labels_rater2,
                    snakemake.output.label_rater2_infos,
                ),
            ):
                if subject not in members:
                    continue
                k = members.index(subject)
                linfo = ingest.ingest_subject_label(
                    sources[k],
                    snakemake.output.images[i],
                    outputs[k],
                    infos[k],
                    labels,
                    settings,
                    subject=subject,
                )
                log.info(
                    "%s %s: classes %s; dropped source ids %s",
                    subject,
                    which,
                    sorted(linfo["voxels"]),
                    linfo["dropped_ids"],
                )
                for name, faces in linfo["touches_border"].items():
                    log.warning(
                        "%s: %s touches the %s face(s), cut by the field of view",
                        subject,
                        name,
                        faces,
                    )
        except ThighctError as exc:  # the chunk's other subjects are still checked
            failed.append(exc)
    if failed:
        raise ScanErrors(failed, what="scan(s) of this chunk failed ingestion")
