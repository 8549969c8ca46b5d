"""Rule metrics_cv: the held-out metrics of every cross-validation fold pooled, and their summary."""

import pandas as pd

from thighct import metrics
from thighct.io_tables import write_tsv
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    parts = []
    for fold, path in zip(p.folds, snakemake.input.per_subject, strict=True):
        part = pd.read_csv(path, sep="\t", comment="#")
        part.insert(1, "fold", fold)
        parts.append(part)
    per_subject = pd.concat(parts, ignore_index=True)
    summary = metrics.summarise_metrics(per_subject)
    what = f"{p.model}, {len(p.folds)}-fold cross-validation, each subject scored by the model that did not train on it"
    definitions = {"fold": "the fold whose model scored the subject", **metrics.DEFINITIONS}
    write_tsv(
        per_subject,
        snakemake.output.per_subject,
        metrics.table_header(f"Per subject and class: {what}", definitions),
        float_format="%.6g",
    )
    write_tsv(
        summary,
        snakemake.output.summary,
        metrics.table_header(f"Per class: {what}", {**metrics.SUMMARY_DEFINITIONS, **definitions}),
        float_format="%.6g",
    )
    log.info("%d subjects over %d folds", per_subject["subject"].nunique(), len(p.folds))
