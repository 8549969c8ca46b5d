"""Rule correlate: point-biserial r of sarcopenia and every muscle and group, per sex."""

import pandas as pd

from thighct import stats
from thighct.io_tables import write_tsv
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    settings = stats.CorrelationSettings(**snakemake.params.settings)
    adjusted = pd.read_csv(snakemake.input.adjusted, sep="\t", dtype={"subject": str})
    for family in stats.FAMILIES:
        table = stats.correlate(adjusted, family, settings)
        write_tsv(table, snakemake.output[family], float_format="%.10g")
        for sex, part in table.groupby("sex", sort=False):
            reasons = sorted(set(part["reason"]) - {""})
            sig = part[part["significant"]]
            log.info(
                "%s %s: %d of %d significant (p_fdr < %g)%s",
                family,
                sex,
                len(sig),
                len(part),
                settings.alpha,
                f"; {'; '.join(reasons)}" if reasons else "",
            )
