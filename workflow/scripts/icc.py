"""Rule icc: ICC(2,1) of volumes per class, each model and the second rater against the first rater."""

import pandas as pd

from thighct import metrics
from thighct.io_tables import write_tsv
from thighct.labels import read_labels
from thighct.runlog import logged


def read_volumes(path):
    return pd.read_csv(path, sep="\t", comment="#")


with logged(snakemake.log[0]) as log:
    p = snakemake.params
    labels = read_labels(snakemake.input.labels)
    classes = {int(c): labels.name_of(c) for c in labels.foreground["id"]}
    others = {
        model: (read_volumes(path), p.eval_subjects)
        for model, path in zip(p.models, snakemake.input.models, strict=True)
    }
    if snakemake.input.get("rater2"):
        others["rater2"] = (read_volumes(snakemake.input.rater2), p.rater2_subjects)
    table = metrics.icc_table(read_volumes(snakemake.input.ground_truth), others, classes, classes)
    write_tsv(
        table,
        snakemake.output.icc,
        metrics.table_header(
            "ICC(2,1) of class volumes against the first rater", metrics.ICC_DEFINITIONS
        ),
        float_format="%.6g",
    )
    for name, grp in table.groupby("comparison", sort=False):
        log.info(
            "%s: median ICC %.3f over %d classes",
            name,
            grp["icc"].median(),
            grp["icc"].notna().sum(),
        )
