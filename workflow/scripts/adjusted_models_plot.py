"""Rule adjusted_models_plot: forest plot of the adjusted logistic models, per sex."""

import pandas as pd

from thighct.plots.sarcopenia import plot_adjusted_models
from thighct.runlog import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    models = pd.read_csv(snakemake.input.models, sep="\t")
    plot_adjusted_models(
        models, snakemake.output.png, dpi=p.dpi, confidence=p.confidence, also=("pdf",)
    )
