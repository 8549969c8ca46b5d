"""Rule preprocess: the paper's pre-processing of one ingested scan (MONAI transforms)."""

import numpy as np
import torch

from thighct import io, preprocess
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    torch.set_num_threads(snakemake.threads)
    settings = preprocess.PreprocessSettings.from_config(snakemake.params.preprocess)
    hu, affine = io.load_nifti(snakemake.input.image, subject=snakemake.wildcards.subject)
    result = preprocess.preprocess_volume(hu, affine, settings)
    result.transform["subject"] = snakemake.wildcards.subject
    io.save_nifti(snakemake.output.image, result.image, result.affine, np.float32)
    io.save_json(snakemake.output.transform, result.transform)
    log.info(
        "%s: crop %s..%s of %s -> %s at %s mm",
        snakemake.wildcards.subject,
        result.transform["crop"]["start"],
        result.transform["crop"]["end"],
        result.transform["ingested"]["shape"],
        result.transform["preprocessed"]["shape"],
        settings.spacing_mm,
    )
