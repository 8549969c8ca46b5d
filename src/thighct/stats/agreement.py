"""Agreement of one source's correlations with another's (e.g. predicted vs true volumes).

Holds the side-by-side table of two correlation tables with their difference in r, the
precision floor (how far r would move from a source's unbiased random error alone), and the
one-line summary of the differences per sex and family.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .adjusted import SEXES


def compare_correlations(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Two correlation tables side by side (e.g. predicted vs true volumes): sex, family,
    structure, r_a, r_b, delta_r = r_a - r_b, one row per structure both tables have."""
    keys = ["sex", "family", "structure"]
    out = a[keys + ["r"]].merge(
        b[keys + ["r"]], on=keys, suffixes=("_a", "_b"), validate="one_to_one"
    )
    out["delta_r"] = out["r_a"] - out["r_b"]
    return out


def truth_agreement_table(compared: pd.DataFrame) -> pd.DataFrame:
    """:func:`compare_correlations` output with ``abs_delta_r`` added (and ``above_floor``
    where :func:`precision_floor` columns are merged in), sorted by sex, family and structure
    (rows where either r is undefined keep NaN)."""
    out = compared.copy()
    out["abs_delta_r"] = out["delta_r"].abs()
    if "floor_p95_abs_delta_r" in out.columns:
        # Further from the truth than 95 % of unbiased errors of the source's own size.
        out["above_floor"] = out["abs_delta_r"] > out["floor_p95_abs_delta_r"]
    keys = ["sex", "family", "structure"]
    if "source" in out.columns:  # several sources: source first, in the order given
        out = out[["source", *[c for c in out.columns if c != "source"]]]
        out["_order"] = pd.factorize(out["source"])[0]
        keys = ["_order", *keys]
    out = out.sort_values(keys, kind="stable").reset_index(drop=True)
    return out.drop(columns="_order", errors="ignore")


def precision_floor(
    source: pd.DataFrame,
    truth: pd.DataFrame,
    resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """How far from the truth's r a source's r would fall from its random error alone.

    ``source`` and ``truth``: adjusted-volume tables (:func:`adjusted_volumes`) of the same
    subjects. Per sex, family and structure, the source's per-subject error is the log ratio
    of its volume to the true one; its spread within each sarcopenia status (``error_sd``, SD
    of the log ratio about the status's mean, n - 2 degrees of freedom) is the part that
    does not depend on status. The true volumes are then given ``resamples`` draws of
    unbiased errors of that size (log-normal, seeded), and the |delta r| of each draw from
    the true r is recorded: ``floor_mean_abs_delta_r`` and its 95th percentile
    ``floor_p95_abs_delta_r``. A source's own |delta r| well above its floor is bias (errors
    that follow status); one within it is what a segmentation of that precision gives on this
    many subjects. NaN where a volume is not positive or r is undefined.
    """
    keys = ["sex", "family", "structure"]
    both = source[[*keys, "subject", "sarcopenic", "adjusted_mm3_per_m2"]].merge(
        truth[[*keys, "subject", "adjusted_mm3_per_m2"]],
        on=[*keys, "subject"],
        suffixes=("_source", "_truth"),
        validate="one_to_one",
    )
    rng = np.random.default_rng(seed)
    rows = []
    for key, part in both.groupby(keys, sort=False):
        status = part["sarcopenic"].astype(float).to_numpy()
        ours = part["adjusted_mm3_per_m2_source"].to_numpy(float)
        true = part["adjusted_mm3_per_m2_truth"].to_numpy(float)
        row = dict(zip(keys, key, strict=True))
        row.update(error_sd=np.nan, floor_mean_abs_delta_r=np.nan, floor_p95_abs_delta_r=np.nan)
        defined = (
            len(status) > 3
            and min(status.sum(), len(status) - status.sum()) >= 2
            and (ours > 0).all()
            and (true > 0).all()
            and np.ptp(true) > 0
        )
        if defined:
            log_ratio = np.log(ours / true)
            resid = log_ratio.copy()
            for value in (0.0, 1.0):
                resid[status == value] -= log_ratio[status == value].mean()
            sd = float(np.sqrt((resid**2).sum() / (len(resid) - 2)))
            draws = true * np.exp(rng.normal(0.0, sd, (int(resamples), len(true))))
            r_true = float(np.corrcoef(status, true)[0, 1])
            d = np.abs(_rows_r(status, draws) - r_true)
            row.update(
                error_sd=sd,
                floor_mean_abs_delta_r=float(d.mean()),
                floor_p95_abs_delta_r=float(np.quantile(d, 0.95)),
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _rows_r(status: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Pearson r of ``status`` with each row of ``values`` (resamples x subjects)."""
    s = status - status.mean()
    v = values - values.mean(axis=1, keepdims=True)
    return (v @ s) / np.sqrt((v**2).sum(axis=1) * (s**2).sum())


def agreement_sentence(table: pd.DataFrame) -> str:
    """One line per sex and family: largest and mean |delta r| over the defined rows."""
    parts = []
    for (sex, family), part in table.groupby(["sex", "family"], sort=True):
        d = part["abs_delta_r"].dropna()
        if d.empty:
            parts.append(f"{SEXES.get(sex, sex)} {family}: not computed")
            continue
        parts.append(
            f"{SEXES.get(sex, sex)} {family}: max |Δr| {d.max():.3f} "
            f"({part.loc[d.idxmax(), 'structure']}), mean {d.mean():.3f}, n = {len(d)}"
        )
    return "; ".join(parts)
