"""Rule fig5_table: the paper's Fig 5 table (metric × model rows, one column per muscle), TSV and Markdown."""

import pandas as pd

from thighct import metrics
from thighct.io_tables import write_text, write_tsv
from thighct.labels import read_labels
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    labels = read_labels(snakemake.input.labels)
    muscles = list(labels.muscles["id"])
    summaries = {
        m: pd.read_csv(f, sep="\t", comment="#")
        for m, f in zip(p.models, snakemake.input.summary, strict=True)
    }
    table = metrics.fig5_table(
        summaries, muscles, labels.id_to_display, p.metrics, p.model_names, metrics.METRIC_LABELS
    )
    title = "Fig 5: segmentation metrics per muscle, " + " vs ".join(
        p.model_names.get(m, m) for m in p.models
    )
    write_tsv(
        table,
        snakemake.output.tsv,
        metrics.table_header(title, metrics.FIG5_DEFINITIONS),
        float_format="%.6g",
    )
    write_text(
        f"# {title}\n\n" + metrics.markdown_table(table, metrics.MARKDOWN_DECIMALS),
        snakemake.output.md,
    )
    log.info("%d rows x %d muscles", len(table), len(muscles))
