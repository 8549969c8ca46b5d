"""Rule qc: every quality flag of every scan's label maps (results/qc/flags.tsv), from the
per-scan measures, each model's volume table and the subjects' sex."""

import pandas as pd

from thighct import qc, volume_tables
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    settings = qc.QCSettings.from_config(p.qc)
    tables = {
        model: volume_tables.read_table(path)
        for model, path in zip(p.models, snakemake.input.volumes, strict=True)
    }
    measures = qc.read_measures(snakemake.input.scans)
    included = pd.read_csv(
        snakemake.input.included, sep="\t", comment="#", dtype={"subject_id": str}
    )
    sex_of = dict(zip(included["subject_id"], included["sex"], strict=True))
    flags = qc.quality_flags(tables, measures, sex_of, settings)
    qc.write_flags(flags, snakemake.output.flags)
    counts = flags.groupby("flag").size().to_dict() if len(flags) else {}
    log.info(
        "%d flags on %d of %d scans: %s",
        len(flags),
        flags["subject"].nunique(),
        len(p.subjects),
        ", ".join(f"{k} {v}" for k, v in counts.items()) or "none",
    )
