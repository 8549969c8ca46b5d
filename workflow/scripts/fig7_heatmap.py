"""Rule fig7_heatmap: Fig 7, sarcopenia and the 27 muscles' adjusted volumes (A female, B male)."""

import pandas as pd

from thighct.labels import read_labels
from thighct.plots.sarcopenia import plot_correlation_heatmaps
from thighct.runlog import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    labels = read_labels(snakemake.input.labels)
    adjusted = pd.read_csv(snakemake.input.adjusted, sep="\t", dtype={"subject": str})
    correlations = pd.read_csv(snakemake.input.correlations, sep="\t", keep_default_na=True)
    groups = dict(zip(labels.table["name"], labels.table["group"], strict=True))
    plot_correlation_heatmaps(
        adjusted,
        correlations,
        "muscles",
        snakemake.output.png,
        groups=groups,
        cmap=p.cmap,
        alpha=p.alpha,
        dpi=p.dpi,
        source=p.source,
        also=("pdf",),
    )
