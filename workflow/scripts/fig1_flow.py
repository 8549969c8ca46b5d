"""Rule fig1_flow: the CONSORT-style cohort flow diagram (Fig 1)."""

import pandas as pd

from thighct.plots.flow import plot_flow
from thighct.runlog import logged

with logged(snakemake.log[0]):
    flow = pd.read_csv(snakemake.input.flow, sep="\t")
    included = pd.read_csv(snakemake.input.included, sep="\t")
    plot_flow(
        flow,
        included,
        snakemake.output.png,
        dpi=snakemake.params.dpi,
        colour=snakemake.params.colour,
        also=("svg",),
    )
