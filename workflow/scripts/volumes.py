"""Rule volumes (one job per source and chunk of subjects): each scan's structure volumes (mm³, by side), mean HU, IMAT
share and field-of-view flags, one table per scan."""

from thighct import io, volume_tables, volumes
from thighct.labels import read_labels
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    labels = read_labels(snakemake.input.labels)
    settings = volumes.VolumeSettings.from_config(p.volumes)
    for i, subject in enumerate(p.subjects):
        hu = io.load_nifti(snakemake.input.images[i], subject=subject)
        label_path = snakemake.input.labels_maps[i]
        label = io.load_nifti(label_path, subject=subject)
        volumes.check_same_grid(
            label.array, label.affine, hu.array, hu.affine, subject=subject, path=label_path
        )
        table = volumes.subject_volumes(subject, label.array, hu.array, hu.affine, labels, settings)
        volume_tables.write_table(table, snakemake.output.tables[i])
        cut = table.loc[table["fov_cut"] & (table["class_id"] > 0), "class_name"].tolist()
        log.info(
            "%s (%s): %d classes present; cut by the field of view: %s",
            subject,
            p.source,
            int((table["volume_mm3"] > 0).sum()),
            ", ".join(cut) or "none",
        )
