"""Per-class summaries of the per-subject metrics: means and sds, misses, the volume
correlation (VC) and the log-log volume slope, with the definitions of the summary columns."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .kernel import METRIC_COLUMNS

# Two points always lie on a line (r = ±1), so VC needs three subjects to mean anything.
VC_MIN_SUBJECTS = 3


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two samples; NaN with fewer than ``VC_MIN_SUBJECTS`` pairs or no variance."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < VC_MIN_SUBJECTS:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return math.nan if denom == 0 else float((dx * dy).sum() / denom)


def volume_slope(pred: np.ndarray, true: np.ndarray) -> float:
    """Slope of log predicted on log true volume (OLS) over pairs with both volumes > 0.

    1 means volumes in proportion; below 1, larger structures are drawn relatively smaller
    (and smaller ones larger), which pulls any group comparison of volumes toward zero even
    where the volume correlation is high. NaN with fewer than ``VC_MIN_SUBJECTS`` pairs or
    constant true volumes.
    """
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    keep = (pred > 0) & (true > 0)
    if keep.sum() < VC_MIN_SUBJECTS:
        return math.nan
    x, y = np.log(true[keep]), np.log(pred[keep])
    dx = x - x.mean()
    sxx = float((dx * dx).sum())
    return math.nan if sxx == 0 else float((dx * (y - y.mean())).sum() / sxx)


def is_miss(per_subject: pd.DataFrame) -> pd.Series:
    """Rows where the class is present in exactly one of prediction and ground truth."""
    return (per_subject["volume_pred_mm3"] > 0) != (per_subject["volume_true_mm3"] > 0)


def summarise_metrics(per_subject: pd.DataFrame) -> pd.DataFrame:
    """Per class: mean and sd (ddof 1, NaN left out) of each metric, misses and VC.

    ``per_subject`` has one row per (subject, class) as written by the ``metrics`` rule.
    ``n_subjects`` counts subjects where the class is present in P or G; ``misses`` those where
    it is present in only one; ``vc`` is the Pearson r of predicted against true volumes over
    the subjects where the class is present in P or G, ``volume_slope`` the log-log slope of
    predicted on true volume (:func:`volume_slope`).
    """
    rows = []
    for (cid, name), grp in per_subject.groupby(["class_id", "class"], sort=True):
        present = grp[(grp["volume_pred_mm3"] > 0) | (grp["volume_true_mm3"] > 0)]
        row = {"class_id": int(cid), "class": name, "n_subjects": len(present)}
        for m in METRIC_COLUMNS:
            vals = present[m].dropna()
            row[f"{m}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{m}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        row["misses"] = int(is_miss(present).sum())
        row["vc"] = pearson_r(present["volume_pred_mm3"], present["volume_true_mm3"])
        row["volume_slope"] = volume_slope(present["volume_pred_mm3"], present["volume_true_mm3"])
        rows.append(row)
    return pd.DataFrame(rows)


SUMMARY_DEFINITIONS = {
    "<metric>_mean / <metric>_sd": "mean and sample sd (ddof=1) over subjects where the metric is defined (NaN left out)",
    "n_subjects": "subjects where the class is present in the prediction or the ground truth",
    "misses": "subjects where the class is present in only one of prediction and ground truth (dice 0, distances NaN)",
    "vc": f"volume correlation: Pearson r between predicted and true volumes across the n_subjects subjects (NaN below {VC_MIN_SUBJECTS})",
    "volume_slope": f"OLS slope of log predicted on log true volume across the subjects with both > 0 (1: proportional; below 1: larger structures drawn relatively smaller; NaN below {VC_MIN_SUBJECTS})",
}
