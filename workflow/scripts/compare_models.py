"""Rule compare_models: mean ± sd of Dice and ASSD per model, paired Wilcoxon of the proposed vs the baseline."""

import pandas as pd

from thighct import metrics
from thighct.io_tables import write_tsv
from thighct.labels import read_labels
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    muscles = list(read_labels(snakemake.input.labels).muscles["id"])
    per_subject = {
        m: pd.read_csv(f, sep="\t", comment="#")
        for m, f in zip(p.models, snakemake.input.per_subject, strict=True)
    }
    summaries = {
        m: pd.read_csv(f, sep="\t", comment="#")
        for m, f in zip(p.models, snakemake.input.summary, strict=True)
    }
    table = metrics.compare_models(summaries, per_subject, muscles, p.proposed, p.baseline)
    write_tsv(
        table,
        snakemake.output.comparison,
        metrics.table_header(
            f"Models compared over the {len(muscles)} muscles", metrics.COMPARISON_DEFINITIONS
        ),
        float_format="%.6g",
    )
    log.info("\n%s", table.to_string(index=False))
