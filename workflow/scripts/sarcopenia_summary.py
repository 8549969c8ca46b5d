"""Rule sarcopenia_summary: results/sarcopenia/summary.md."""

import pandas as pd

from thighct import stats
from thighct.io_tables import write_text
from thighct.runlog import logged

with logged(snakemake.log[0]):
    p = snakemake.params
    i = snakemake.input
    adjusted = pd.read_csv(i.adjusted, sep="\t", dtype={"subject": str})
    excluded = pd.read_csv(i.excluded, sep="\t", dtype={"subject": str})
    correlations = {f: pd.read_csv(i[f], sep="\t") for f in stats.FAMILIES}
    models = pd.read_csv(i.models, sep="\t")
    agreement_files = [i.agreement] if isinstance(i.agreement, str) else list(i.agreement)
    agreement = pd.read_csv(agreement_files[0], sep="\t") if agreement_files else None
    left_out = [f"left out, {why}: {n}" for why, n in excluded["reason"].value_counts().items()]
    text = stats.summary_markdown(
        stats.status_counts(adjusted),
        correlations,
        models,
        source=p.source,
        definition=p.definition,
        cutoffs=stats.sarcopenia_cutoffs(p.cutoffs, p.definition),
        alpha=p.alpha,
        exclusions=left_out,
        reference_counts=p.reference.get("counts"),
        reference_r=p.reference.get("r"),
        agreement=agreement,
    )
    write_text(text, snakemake.output[0])
