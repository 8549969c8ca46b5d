"""Rule volume_table: the per-subject volume tables of one source stacked into one table."""

from thighct import volume_tables
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    tables = [volume_tables.read_table(path) for path in snakemake.input.tables]
    table = volume_tables.combine_tables(tables)
    volume_tables.write_table(table, snakemake.output.table)
    log.info("%s: %d subjects, %d rows", snakemake.wildcards.source, len(tables), len(table))
