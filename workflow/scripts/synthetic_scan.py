"""Rule synthetic_scan (one job per chunk of subjects): phantom CT, label map, true volumes."""

import numpy as np

from thighct import io, synthetic
from thighct.io_tables import write_tsv
from thighct.labels import read_labels
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    labels = read_labels(snakemake.input.labels)
    for i, (subject, values) in enumerate(p.subjects.items()):
        scan = synthetic.generate_subject(
            subject, **values, cfg=p.synthetic, seed=p.seed, labels=labels
        )
        io.save_nifti(snakemake.output.ct[i], scan.ct, scan.affine, np.int16)
        io.save_nifti(snakemake.output.label[i], scan.label, scan.affine, np.uint8)
        write_tsv(synthetic.truth_table(subject, scan.truth, labels), snakemake.output.truth[i])
        d = scan.design
        log.info(
            "%s: %s, %.0f cm, sarcopenic=%s (%s), %s voxels %s, orientation %s",
            subject,
            d.sex,
            d.height_cm,
            d.sarcopenic,
            "SMI" if d.sarcopenia_from_smi else "latent",
            "x".join(map(str, scan.ct.shape)),
            tuple(p.synthetic["spacing_mm"]),
            d.orientation,
        )
