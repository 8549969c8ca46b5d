"""Rule volumes_subject: one scan's structure volumes (mm³, by side), mean HU, IMAT share, FOV flags."""

from thighct import io, volumes
from thighct.labels import read_labels
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    subject = snakemake.wildcards.subject
    labels = read_labels(snakemake.input.labels)
    settings = volumes.VolumeSettings.from_config(snakemake.params.volumes)
    hu = io.load_nifti(snakemake.input.image, subject=subject)
    label = io.load_nifti(snakemake.input.label, subject=subject)
    volumes.check_same_grid(
        label.array, label.affine, hu.array, hu.affine, subject=subject, path=snakemake.input.label
    )
    table = volumes.subject_volumes(subject, label.array, hu.array, hu.affine, labels, settings)
    volumes.write_table(table, snakemake.output.table)
    cut = table.loc[table["fov_cut"] & (table["class_id"] > 0), "class_name"].tolist()
    log.info(
        "%s (%s): %d classes present; cut by the field of view: %s",
        subject,
        snakemake.wildcards.source,
        int((table["volume_mm3"] > 0).sum()),
        ", ".join(cut) or "none",
    )
