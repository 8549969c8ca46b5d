"""Rule qc_scan_<chunk>: each scan's quality measures (per model: structures on the end slices,
unlabelled muscle; metal in the CT; Dice between the models), one table per scan."""

from thighct import io, qc, volumes
from thighct.labels import read_labels
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    labels = read_labels(snakemake.input.labels)
    settings = qc.QCSettings.from_config(p.qc, p.body)
    for i, subject in enumerate(p.subjects):
        hu = io.load_nifti(snakemake.input.images[i], subject=subject)
        maps = {}
        for m, model in enumerate(p.models):
            path = snakemake.input.predictions[i * len(p.models) + m]
            label = io.load_nifti(path, subject=subject)
            volumes.check_same_grid(
                label.array, label.affine, hu.array, hu.affine, subject=subject, path=path
            )
            maps[model] = label.array
        table = qc.scan_measures(subject, hu.array, hu.affine, maps, labels, settings)
        qc.write_measures(table, snakemake.output.tables[i])
        log.info("%s: %d measures of %s", subject, len(table), ", ".join(p.models))
