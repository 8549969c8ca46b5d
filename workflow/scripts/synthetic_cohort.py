"""Rule synthetic_cohort: draw the synthetic cohort table (results/cohort/cohort.tsv)."""

from thighct import cohort
from thighct.io_tables import write_tsv
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    table = cohort.synthetic_cohort_table(
        p.cohort, p.criteria, p.cutoffs, p.split, p.seed, image_root=p.root
    )
    write_tsv(cohort.without_paths(table), snakemake.output[0])
    log.info("synthetic cohort: %d patients (seed %d)", len(table), p.seed)
