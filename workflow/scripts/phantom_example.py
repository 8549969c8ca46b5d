"""Rule phantom_example: axial slices of one phantom, CT beside its labels."""

from thighct import io
from thighct.labels import read_labels
from thighct.plots.phantom import phantom_example_figure
from thighct.plots.style import save_figure
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    labels = read_labels(snakemake.input.labels)
    ct = io.load_nifti(snakemake.input.ct, canonical=True, subject=p.subject)
    label = io.load_nifti(snakemake.input.label, canonical=True, subject=p.subject)
    fig = phantom_example_figure(
        ct.array,
        label.array,
        ct.affine,
        labels,
        p.levels,
        title=f"Synthetic whole-thigh CT phantom ({p.subject})",
    )
    save_figure(fig, snakemake.output.png, dpi=p.dpi)
    log.info("phantom example of %s at levels %s", p.subject, dict(p.levels))
