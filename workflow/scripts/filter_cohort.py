"""Rule filter_cohort: apply the criteria in order, write the flow and the included subjects."""

from thighct import cohort
from thighct.io_tables import write_tsv
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    table = cohort.read_cohort(snakemake.input.cohort)
    included, flow = cohort.filter_cohort(
        table, p.criteria, p.split["n_val"], p.split["folds"], p.seed, path=snakemake.input.cohort
    )
    write_tsv(flow, snakemake.output.flow)
    write_tsv(included, snakemake.output.included)
    for row in flow.itertuples():
        log.info(
            "%-26s %4d -> %4d (%d out)", row.criterion, row.n_before, row.n_after, row.n_excluded
        )
    log.info("split: %s", included["split"].value_counts().to_dict())
