"""Rule cohort_table: validate the user's cohort table and copy it, without paths, to results/."""

from thighct import cohort
from thighct.io_tables import write_tsv
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    table = cohort.read_cohort(snakemake.input.table)
    table = cohort.validate_cohort(table, snakemake.params.criteria, path=snakemake.input.table)
    write_tsv(cohort.without_paths(table), snakemake.output[0])
    log.info("cohort table %s: %d patients", snakemake.input.table, len(table))
