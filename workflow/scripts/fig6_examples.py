"""Rule fig6_examples: ground truth beside each model's prediction on three axial slices of two subjects.

Each model's mean Dice per subject comes from results/metrics/{model}/per_subject.tsv when the
evaluation scored the subject, else from the label maps themselves (same definition).
"""

import numpy as np
import pandas as pd

from thighct import io, metrics
from thighct.labels import read_labels
from thighct.plots import segmentation
from thighct.runlog import logged


def reported_dice(paths, models):
    """model -> subject -> mean Dice over the classes the evaluation scored."""
    out = {}
    for model, path in zip(models, paths, strict=True):
        table = pd.read_csv(path, sep="\t", comment="#", dtype={"subject": str})
        out[model] = table.groupby("subject")["dice"].mean().to_dict()
    return out


with logged(snakemake.log[0]) as log:
    p = snakemake.params
    labels = read_labels(snakemake.input.labels)
    metric_files = snakemake.input.get("metrics", [])
    reported = reported_dice(metric_files, p.models) if metric_files else {}
    rows = []
    for s, subject in enumerate(p.subjects):
        ct = io.load_nifti(snakemake.input.images[s], subject=subject)
        truth = io.load_nifti(snakemake.input.truths[s], subject=subject).array
        preds, dice = {}, {}
        for m, model in enumerate(p.models):
            path = snakemake.input.predictions[m * len(p.subjects) + s]
            preds[model] = io.load_nifti(path, subject=subject).array
            dice[model] = reported.get(model, {}).get(subject)
            if dice[model] is None:
                confusion = metrics.confusion_matrix(preds[model], truth, labels.n_classes)
                dice[model] = segmentation.mean_dice(confusion)
            log.info("%s %s: mean Dice %.3f", subject, model, dice[model])
        for k in segmentation.level_slices(truth, p.figure["levels"]):
            rows.append(
                segmentation.ExampleRow(
                    subject=subject,
                    k=k,
                    z_mm=float((ct.affine @ np.array([0.0, 0.0, k, 1.0]))[2]),
                    ct=np.asarray(ct.array[:, :, k], dtype=np.float32),
                    truth=np.asarray(truth[:, :, k]),
                    predictions={m: np.asarray(v[:, :, k]) for m, v in preds.items()},
                    affine=ct.affine,
                    dice=dice,
                )
            )
    segmentation.plot_examples(
        rows,
        p.models,
        labels,
        snakemake.output.png,
        model_names=p.model_names,
        display_hu=p.figure["display_hu"],
        alpha=p.figure["alpha"],
        dpi=p.dpi,
    )
