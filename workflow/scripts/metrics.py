"""Rule metrics (metrics_fold): Dice, ASSD, HD, HD95, RAVD per subject and class on the native grid, and a summary."""

from thighct import metrics
from thighct.io_tables import write_tsv
from thighct.labels import read_labels
from thighct.runlog import logged

with logged(snakemake.log[0]) as log:
    p = snakemake.params
    labels = read_labels(snakemake.input.labels)
    classes = {int(c): labels.name_of(c) for c in labels.foreground["id"]}
    per_subject = metrics.evaluate_files(
        p.subjects,
        snakemake.input.pred,
        snakemake.input.truth,
        classes,
        workers=snakemake.threads,
        grid_tolerance_mm=p.grid_tolerance_mm,
        log=log,
    )
    summary = metrics.summarise_metrics(per_subject)
    what = f"{p.model} against the first rater on {len(p.subjects)} {p.subset} subjects"
    write_tsv(
        per_subject,
        snakemake.output.per_subject,
        metrics.table_header(f"Per subject and class: {what}", metrics.DEFINITIONS),
        float_format="%.6g",
    )
    write_tsv(
        summary,
        snakemake.output.summary,
        metrics.table_header(
            f"Per class: {what}", {**metrics.SUMMARY_DEFINITIONS, **metrics.DEFINITIONS}
        ),
        float_format="%.6g",
    )
    muscles = summary[summary["class_id"].isin(labels.muscles["id"])]
    log.info(
        "mean muscle Dice %.3f, ASSD %.2f mm",
        muscles["dice_mean"].mean(),
        muscles["assd_mm_mean"].mean(),
    )
