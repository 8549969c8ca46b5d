"""Rule fig5_metrics: Fig 5 as a figure, the proposed model against the baseline per muscle and metric."""

import pandas as pd

from thighct.labels import read_labels
from thighct.metrics import METRIC_LABELS
from thighct.plots.metrics import fig5_figure
from thighct.plots.style import save_figure
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    labels = read_labels(snakemake.input.labels)
    summaries = {
        m: pd.read_csv(f, sep="\t", comment="#")
        for m, f in zip(p.models, snakemake.input.summary, strict=True)
    }
    fig = fig5_figure(
        summaries,
        list(labels.muscles["id"]),
        labels.id_to_display,
        labels.id_to_group,
        p.metrics,
        METRIC_LABELS,
        p.model_names,
    )
    for path in save_figure(fig, snakemake.output.png, also=("pdf",), dpi=p.dpi):
        log.info("wrote %s", path)
