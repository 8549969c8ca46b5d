"""Rule preprocess_label: a label map through its image's recorded crop and resampling."""

import numpy as np
import torch

from thighct import io, preprocess
from thighct.runlog import logged

with logged(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    transform = io.load_json(snakemake.input.transform)
    label = io.load_nifti(snakemake.input.label, subject=snakemake.wildcards.subject)
    out = preprocess.preprocess_label(label.array, transform)
    io.save_nifti(snakemake.output.label, out, transform["preprocessed"]["affine"], np.uint8)
