"""Rule adjust_volumes: join volumes with sex, height and SMI; volume / height² per structure."""

import pandas as pd

from thighct import stats
from thighct.io_tables import write_tsv
from thighct.labels import read_labels
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    labels = read_labels(snakemake.input.labels)
    volumes = stats.read_volume_table(snakemake.input.volumes, labels)
    cohort = pd.read_csv(snakemake.input.cohort, sep="\t", dtype={"subject_id": str})
    cutoffs = stats.sarcopenia_cutoffs(p.cutoffs, p.definition)
    log.info(
        "volumes: %s (%s); sarcopenia: %s %s",
        p.source,
        snakemake.input.volumes,
        p.definition,
        cutoffs,
    )
    table, excluded = stats.adjusted_volumes(volumes, cohort, labels, cutoffs)
    for line in excluded.lines():
        log.info("%s", line)
    log.info("subjects per sex and status:\n%s", stats.status_counts(table).to_string())
    write_tsv(table, snakemake.output.table, float_format="%.10g")
    write_tsv(excluded.table(), snakemake.output.excluded)
