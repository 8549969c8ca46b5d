"""Rule preprocess (one job per chunk of subjects): the paper's pre-processing (MONAI).

For each subject: ingested image (and label, when annotated) -> preprocessed image, label and
transform.json (what ``thighct.preprocess.to_native`` needs to map predictions back).
"""

import numpy as np
import torch

from thighct import io, preprocess
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    torch.set_num_threads(snakemake.threads)
    settings = preprocess.PreprocessSettings.from_config(snakemake.params.preprocess)
    labelled = snakemake.params.labelled
    for i, subject in enumerate(snakemake.params.subjects):
        hu, affine = io.load_nifti(snakemake.input.images[i], subject=subject)
        label = None
        if subject in labelled:
            label = io.load_nifti(snakemake.input.labels[labelled.index(subject)], subject=subject)
            label = label.array
        result = preprocess.preprocess_volume(hu, affine, settings, label)
        result.transform["subject"] = subject
        io.save_nifti(snakemake.output.images[i], result.image, result.affine, np.float32)
        if label is not None:
            io.save_nifti(
                snakemake.output.labels[labelled.index(subject)],
                result.label,
                result.affine,
                np.uint8,
            )
        io.save_json(snakemake.output.transforms[i], result.transform)
        log.info(
            "%s: crop %s..%s of %s -> %s at %s mm%s",
            subject,
            result.transform["crop"]["start"],
            result.transform["crop"]["end"],
            result.transform["ingested"]["shape"],
            result.transform["preprocessed"]["shape"],
            settings.spacing_mm,
            " (with label)" if label is not None else "",
        )
