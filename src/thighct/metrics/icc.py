"""Agreement of volumes between two sources (a model and the first rater, or the two raters):
ICC(2,1) per class with its CI, and the definitions of the ICC table's columns.

pingouin is imported only when an ICC is computed."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from ..errors import ThighctError

# pingouin's two-way ANOVA needs at least 5 ratings: 3 subjects for 2 raters.
ICC_MIN_SUBJECTS = 3


def volume_icc(
    reference: pd.DataFrame,
    other: pd.DataFrame,
    class_ids: Iterable[int],
    subjects: Iterable[str] | None = None,
) -> pd.DataFrame:
    """ICC(2,1) of volumes (two-way random, absolute agreement, single rater) per class.

    ``reference`` and ``other`` are volume tables with columns subject, class_id, volume_mm3
    (mm³); only subjects present in both (and in ``subjects`` if given) are used. Computed with
    pingouin's ``intraclass_corr`` (row "ICC(A,1)", called "ICC2" before pingouin 0.7) with its
    95% CI at full precision. Classes with fewer than ``ICC_MIN_SUBJECTS`` subjects or no
    variance give NaN.
    """
    import pingouin  # heavy import; the per-scan kernel above does not need it

    rows = []
    for cid in class_ids:
        a = _class_volumes(reference, cid)
        b = _class_volumes(other, cid)
        common = a.index.intersection(b.index)
        if subjects is not None:
            common = common.intersection(pd.Index(list(subjects)))
        common = sorted(common)
        row = {"class_id": int(cid), "n_subjects": len(common)}
        row.update(
            dict.fromkeys(("icc", "ci95_low", "ci95_high", "f", "df1", "df2", "p"), math.nan)
        )
        values = np.concatenate([a.loc[common].to_numpy(float), b.loc[common].to_numpy(float)])
        row["note"] = ""
        if len(common) < ICC_MIN_SUBJECTS:
            row["note"] = f"not estimable: {len(common)} subject(s), need {ICC_MIN_SUBJECTS}"
        elif np.ptp(values) == 0:
            row["note"] = "not estimable: all volumes equal"
        else:
            long = pd.DataFrame(
                {
                    "subject": common * 2,
                    "rater": ["reference"] * len(common) + ["other"] * len(common),
                    "volume": values,
                }
            )
            res = _icc_full_precision(pingouin, long)
            hit = res[res["Type"].isin(["ICC(A,1)", "ICC2"])].iloc[0]
            row.update(
                icc=float(hit["ICC"]),
                ci95_low=float(hit["CI95"][0]),
                ci95_high=float(hit["CI95"][1]),
                f=float(hit["F"]),
                df1=float(hit["df1"]),
                df2=float(hit["df2"]),
                p=float(hit["pval"]),
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _class_volumes(volumes: pd.DataFrame, class_id: int) -> pd.Series:
    # One volume per subject for the class; a duplicated subject is a broken volume table.
    sel = volumes[volumes["class_id"].astype(int) == int(class_id)]
    if sel["subject"].duplicated().any():
        dup = sorted(sel.loc[sel["subject"].duplicated(), "subject"].astype(str))
        raise ThighctError(
            f"volume table has several rows for class {class_id} of subjects {dup}",
            fix="rerun the rule that writes results/volumes/*.tsv",
        )
    return sel.set_index(sel["subject"].astype(str))["volume_mm3"].astype(float)


def icc_table(
    reference: pd.DataFrame,
    others: Mapping[str, tuple[pd.DataFrame, Iterable[str] | None]],
    class_ids: Iterable[int],
    class_names: Mapping[int, str],
) -> pd.DataFrame:
    """:func:`volume_icc` of each table in ``others`` (name -> (volumes, subjects)) vs ``reference``.

    Rows: comparison ("<name> vs rater1"), class_id, class, n_subjects, icc, ci95_low,
    ci95_high, f, df1, df2, p.
    """
    class_ids = [int(c) for c in class_ids]
    parts = []
    for name, (volumes, subjects) in others.items():
        part = volume_icc(reference, volumes, class_ids, subjects)
        part.insert(0, "comparison", f"{name} vs rater1")
        part.insert(2, "class", [class_names[c] for c in part["class_id"]])
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _icc_full_precision(pingouin, long: pd.DataFrame) -> pd.DataFrame:
    # pingouin rounds CI95 to 2 decimals by default; lift that for the call only.
    key = "round.column.CI95"
    saved = pingouin.options.get(key)
    pingouin.options[key] = None
    try:
        import warnings

        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return pingouin.intraclass_corr(
                data=long, targets="subject", raters="rater", ratings="volume", nan_policy="omit"
            )
    finally:
        pingouin.options[key] = saved


ICC_DEFINITIONS = {
    "icc": "ICC(2,1), Shrout & Fleiss: two-way random effects, absolute agreement, single measurement (pingouin ICC(A,1)) of volumes in mm³",
    "ci95_low / ci95_high": "95% confidence interval of the ICC (pingouin, F-distribution based)",
    "f, df1, df2, p": "F test of ICC > 0 (pingouin)",
    "comparison": "<model> vs rater1: model volumes against the first rater on the evaluation subjects; rater2 vs rater1: the two raters on the doubly annotated subjects",
    "n_subjects": f"subjects with a volume in both tables (ICC needs >= {ICC_MIN_SUBJECTS} and some variance, else NaN)",
    "note": "why the ICC is NaN, if it is",
}
