"""Rule fig8_heatmap: Fig 8, sarcopenia and the five muscle groups (A female, B male)."""

import pandas as pd

from thighct.plots.sarcopenia import plot_correlation_heatmaps
from thighct.runlog import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    adjusted = pd.read_csv(snakemake.input.adjusted, sep="\t", dtype={"subject": str})
    correlations = pd.read_csv(snakemake.input.correlations, sep="\t")
    plot_correlation_heatmaps(
        adjusted,
        correlations,
        "groups",
        snakemake.output.png,
        cmap=p.cmap,
        alpha=p.alpha,
        dpi=p.dpi,
        source=p.source,
        also=("pdf",),
    )
