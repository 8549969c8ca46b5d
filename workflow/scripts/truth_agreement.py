"""Rule truth_agreement: each source's correlations beside the generator's true volumes."""

from itertools import product

import pandas as pd

from thighct import stats
from thighct.io_tables import write_tsv
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    truth = dict(zip(p.families, snakemake.input.truth, strict=True))

    def read_adjusted(path):
        return pd.read_csv(path, sep="\t", dtype={"subject": str})

    adjusted_truth = read_adjusted(snakemake.input.adjusted_truth)
    # What each source's random per-subject error alone would do to r (its floor).
    floors = {
        source: stats.precision_floor(read_adjusted(path), adjusted_truth, **p.floor)
        for source, path in zip(p.sources, snakemake.input.adjusted, strict=True)
    }
    parts = []
    # expand() lists the files source-major, then family: the order of product().
    pairs = product(p.sources, p.families)
    for (source, family), path in zip(pairs, snakemake.input.sources, strict=True):
        ours = pd.read_csv(path, sep="\t")
        both = stats.compare_correlations(ours, pd.read_csv(truth[family], sep="\t"))
        both = both.merge(floors[source], on=["sex", "family", "structure"], how="left")
        parts.append(both.assign(source=source))
    table = stats.truth_agreement_table(pd.concat(parts, ignore_index=True))
    table = table.rename(columns={"r_a": "r_source", "r_b": "r_truth"})
    write_tsv(table, snakemake.output[0])
    for source, part in table.groupby("source", sort=False):
        log.info("%s vs the generator's truth: %s", source, stats.agreement_sentence(part))
