"""Rule synthetic_rater2: a second rater's label map derived from the first rater's."""

import numpy as np

from thighct import io, synthetic
from thighct.labels import read_labels
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    subject = snakemake.wildcards.subject
    labels = read_labels(snakemake.input.labels)
    first = io.load_nifti(snakemake.input.label, subject=subject)
    rng = synthetic.subject_rng(p.seed, subject, synthetic.RATER2_STREAM)
    muscles = [int(i) for i in labels.muscles["id"]]
    second = synthetic.second_rater_labels(first.array, first.spacing, rng, p.rater2, muscles)
    io.save_nifti(snakemake.output[0], second, first.affine, np.uint8)
    log.info(
        "%s: second rater differs in %.1f%% of labelled voxels",
        subject,
        100 * np.mean(second[first.array > 0] != first.array[first.array > 0]),
    )
