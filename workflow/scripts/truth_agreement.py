"""Rule truth_agreement: the configured source's correlations beside the generator's truth."""

import pandas as pd

from thighct import stats
from thighct.io_tables import write_tsv
from thighct.runlog import logged

with logged(snakemake.log[0]):
    i = snakemake.input
    both = [
        stats.compare_correlations(
            pd.read_csv(i[family], sep="\t"), pd.read_csv(i[f"truth_{family}"], sep="\t")
        )
        for family in stats.FAMILIES
    ]
    table = stats.truth_agreement_table(pd.concat(both, ignore_index=True))
    write_tsv(table.rename(columns={"r_a": "r_source", "r_b": "r_truth"}), snakemake.output[0])
    print(
        f"source {snakemake.params.source} vs the generator's truth: "
        + stats.agreement_sentence(table)
    )
