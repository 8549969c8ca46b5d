"""Rule synthetic_truth: the per-subject true volumes in one table (results/synthetic/truth.tsv)."""

import pandas as pd

from thighct.io_tables import write_tsv
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    table = pd.concat([pd.read_csv(path, sep="\t") for path in snakemake.input], ignore_index=True)
    write_tsv(table, snakemake.output[0])
    log.info(
        "truth volumes: %d subjects x %d classes",
        table["subject"].nunique(),
        table["class_id"].nunique(),
    )
