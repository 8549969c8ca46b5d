"""Comparison of models: mean and sd of Dice and ASSD across the muscle classes, and a paired
Wilcoxon test of the per-subject mean Dice, with the definitions of the comparison table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd


def per_subject_mean(per_subject: pd.DataFrame, metric: str, class_ids: Iterable[int]) -> pd.Series:
    """Each subject's mean of ``metric`` over ``class_ids`` (NaN left out), indexed by subject."""
    sel = per_subject[per_subject["class_id"].isin([int(c) for c in class_ids])]
    return sel.groupby("subject")[metric].mean()


def compare_models(
    summaries: Mapping[str, pd.DataFrame],
    per_subject: Mapping[str, pd.DataFrame],
    class_ids: Iterable[int],
    proposed: str | None,
    baseline: str | None,
) -> pd.DataFrame:
    """Mean ± sd of Dice and ASSD per model, and a paired Wilcoxon test of per-subject mean Dice.

    Means and sds are taken over the per-class means of ``class_ids`` (the paper's "average of
    individual muscle classes"). The test pairs the subjects both models were evaluated on;
    its columns are filled on the ``proposed`` row. With fewer than 2 pairs, or all
    differences 0, the p-value is NaN and ``test_note`` says why.
    """
    from scipy.stats import wilcoxon

    class_ids = [int(c) for c in class_ids]
    rows = []
    for model, summary in summaries.items():
        sel = summary[summary["class_id"].isin(class_ids)]
        rows.append(
            {
                "model": model,
                "n_subjects": int(per_subject[model]["subject"].nunique()),
                "n_classes": len(sel),
                "dice_mean": float(sel["dice_mean"].mean()),
                "dice_sd": float(sel["dice_mean"].std(ddof=1)),
                "assd_mm_mean": float(sel["assd_mm_mean"].mean()),
                "assd_mm_sd": float(sel["assd_mm_mean"].std(ddof=1)),
                "test_vs": "",
                "n_pairs": math.nan,
                "dice_diff_median": math.nan,
                "wilcoxon_w": math.nan,
                "wilcoxon_p": math.nan,
                "test_note": "",
            }
        )
    table = pd.DataFrame(rows)
    if proposed in summaries and baseline in summaries and proposed != baseline:
        a = per_subject_mean(per_subject[proposed], "dice", class_ids)
        b = per_subject_mean(per_subject[baseline], "dice", class_ids)
        pairs = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
        diff = (pairs["a"] - pairs["b"]).to_numpy()
        test = {
            "test_vs": baseline,
            "n_pairs": len(pairs),
            "dice_diff_median": float(np.median(diff)) if len(diff) else math.nan,
        }
        if len(diff) < 2:
            test["test_note"] = f"not tested: {len(diff)} paired subject(s), need at least 2"
        elif not np.any(diff):
            test["test_note"] = "not tested: all paired differences are 0"
        else:
            res = wilcoxon(pairs["a"], pairs["b"], alternative="two-sided")
            test.update(wilcoxon_w=float(res.statistic), wilcoxon_p=float(res.pvalue))
            # The exact two-sided p cannot go below 2 / 2**n: with n < 6 it never reaches 0.05.
            min_p = 2.0 / 2 ** int(np.count_nonzero(diff))
            test["test_note"] = f"smallest attainable p = {min_p:.3g}" if min_p > 0.05 else ""
        idx = table.index[table["model"] == proposed][0]
        for k, v in test.items():
            table.at[idx, k] = v
    return table


COMPARISON_DEFINITIONS = {
    "dice_mean / dice_sd": "mean and sd (ddof=1) across the muscle classes of each class's mean Dice over subjects",
    "assd_mm_mean / assd_mm_sd": "the same for ASSD (mm)",
    "test_vs, n_pairs, dice_diff_median, wilcoxon_w, wilcoxon_p": "paired two-sided Wilcoxon signed-rank test of the per-subject mean muscle Dice, this model vs test_vs, over subjects evaluated with both; median of the paired differences",
    "test_note": "why no test was run, or the smallest p the exact test can reach with n_pairs",
}
