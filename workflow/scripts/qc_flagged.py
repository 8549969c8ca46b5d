"""Rule qc_flagged: the flagged scans on an axial and a coronal slice through their first flag."""

from thighct import io, qc
from thighct.labels import read_labels
from thighct.plots import qc as qc_plot
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    labels = read_labels(snakemake.input.labels)
    settings = qc.QCSettings.from_config(p.qc, p.body)
    flags = qc.read_flags(snakemake.input.flags)
    views = []
    for subject, source in qc.flagged_scans(flags, p.max_scans):
        i = p.subjects.index(subject)
        ct = io.load_nifti(snakemake.input.images[i], subject=subject)
        maps = {
            model: io.load_nifti(
                snakemake.input.predictions[i * len(p.models) + m], subject=subject
            ).array
            for m, model in enumerate(p.models)
        }
        own = flags[(flags["subject"] == subject) & (flags["source"] == source)]
        region = qc.flag_region(own.iloc[0], ct.array, ct.affine, maps, labels, settings)
        label = maps[qc.shown_label(source, maps)]
        k, j = qc.focus_slices(region, label)
        views.append(
            qc_plot.view_of(
                subject,
                qc_plot.source_name(source, p.model_names),
                qc_plot.flag_lines(own, labels),
                ct.array,
                label,
                region,
                ct.affine,
                k,
                j,
            )
        )
        log.info("%s (%s): %d flags, first %s", subject, source, len(own), own.iloc[0]["flag"])
    qc_plot.plot_flagged(
        views,
        labels,
        snakemake.output.png,
        n_flagged=flags["subject"].nunique(),
        n_scans=len(p.subjects),
        n_flags=len(flags),
        display_hu=p.figure["display_hu"],
        alpha=p.figure["alpha"],
        dpi=p.dpi,
    )
