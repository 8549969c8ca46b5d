"""Rule volumes: the per-subject volume tables of one source stacked into one table."""

from thighct import volume_tables as volumes
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    tables = [volumes.read_table(path) for path in snakemake.input.tables]
    table = volumes.combine_tables(tables)
    volumes.write_table(table, snakemake.output.table)
    log.info("%s: %d subjects, %d rows", snakemake.wildcards.source, len(tables), len(table))
