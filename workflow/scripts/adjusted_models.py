"""Rule adjusted_models: logistic regression of sarcopenia on each group's adjusted volume
(odds ratio per SD), adjusted for age and BMI, per sex."""

import pandas as pd

from thighct import stats
from thighct.io_tables import write_tsv
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    settings = stats.LogisticSettings(
        covariates=tuple(p.logistic["covariates"]),
        confidence=p.confidence,
        max_iter=p.logistic["max_iter"],
        max_se=p.logistic["max_se"],
        min_per_status=p.logistic["min_per_status"],
        min_events_per_variable=p.logistic["min_events_per_variable"],
    )
    adjusted = pd.read_csv(snakemake.input.adjusted, sep="\t", dtype={"subject": str})
    models = stats.logistic_models(adjusted, "groups", settings)
    write_tsv(models, snakemake.output[0], float_format="%.10g")
    for row in models.itertuples():
        log.info(
            "%s %-10s OR %.3g [%.3g, %.3g] %s",
            row.sex,
            row.structure,
            row.odds_ratio,
            row.ci_low,
            row.ci_high,
            row.reason,
        )
