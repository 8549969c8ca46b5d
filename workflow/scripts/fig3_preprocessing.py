"""Rule fig3_preprocessing: Fig 3, axial slices raw, windowed, after gamma, and preprocessed."""

import numpy as np

from thighct import io, preprocess
from thighct.plots import preprocessing as fig3
from thighct.runlog import logged

with logged(snakemake.log[0]):
    figure = snakemake.params.figure
    transform = io.load_json(snakemake.input.transform)
    settings = preprocess.PreprocessSettings.from_config(transform["settings"])
    hu, affine = io.load_nifti(snakemake.input.raw)
    pre, pre_affine = io.load_nifti(snakemake.input.image)
    # The same intensity steps as the pipeline, on the whole (uncropped) scan.
    windowed = preprocess.scale_hu(hu, settings.hu_window)
    gamma = preprocess.apply_gamma(windowed, settings.gamma)
    rows = []
    for name, k in fig3.level_slices(hu.shape[2], figure["levels"]).items():
        raw_panel = fig3.axial(hu, affine, k)
        k_pre = fig3.slice_at_z(pre_affine, pre.shape[2], raw_panel.z_mm)
        panels = [
            raw_panel,
            fig3.axial(windowed, affine, k),
            fig3.axial(gamma, affine, k),
            fig3.axial(pre, pre_affine, k_pre),
        ]
        rows.append((name.replace("_", " ").capitalize(), panels))
    lo, hi = settings.hu_window
    d_lo, d_hi = figure["display_hu"]
    sx, sy, sz = settings.spacing_mm
    crop = transform["crop"]
    box = (
        np.asarray(transform["oriented"]["affine"])
        @ np.array(
            [[s - 0.5 for s in crop["start"]] + [1.0], [e - 0.5 for e in crop["end"]] + [1.0]]
        ).T
    )
    columns = [
        (f"Raw CT\n(display {d_lo:g} to {d_hi:g} HU)", d_lo, d_hi, "HU"),
        (f"Window {lo:g} to {hi:g} HU\nscaled to 0-1, clipped", 0.0, 1.0, "intensity (0-1)"),
        (f"Gamma {settings.gamma:g}\n(contrast adjusted)", 0.0, 1.0, "intensity (0-1)"),
        (f"Cropped to body, resampled\n{sx:g} x {sy:g} x {sz:g} mm", 0.0, 1.0, "intensity (0-1)"),
    ]
    fig3.plot_preprocessing(
        rows,
        columns,
        snakemake.output.png,
        crop_box_mm=(*sorted(box[0]), *sorted(box[1])),
        title=f"Pre-processing of subject {snakemake.params.subject} (dashed: body crop)",
        dpi=snakemake.params.dpi,
    )
