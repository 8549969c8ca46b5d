"""Point-biserial correlations of sarcopenia status with adjusted volumes, per sex and family.

Holds the correlation settings, the checks that tell why a correlation cannot be computed,
the point-biserial r with its Fisher-z CI, the status-stratified bootstrap CI, FDR control
within each sex and family, the correlation tables, and the correlation matrix of Fig 8.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from .adjusted import FAMILIES, SARCOPENIA, SEXES, structure_order, wide_by_sex

CORRELATION_COLUMNS = [
    "sex",
    "family",
    "structure",
    "display",
    "n",
    "n_sarcopenic",
    "n_non_sarcopenic",
    "r",
    "ci_low",
    "ci_high",
    "boot_ci_low",
    "boot_ci_high",
    "p",
    "p_fdr",
    "significant",
    "reason",
]


@dataclass(frozen=True)
class CorrelationSettings:
    """Settings of the correlation analysis (all from config ``sarcopenia``).

    min_n: fewest subjects of a sex for a correlation. min_per_status: fewest subjects in each
    status. confidence: CI level (0.95). resamples, seed, method: the bootstrap CI
    (``scipy.stats.bootstrap``; 0 resamples = no bootstrap). fdr_method: statsmodels
    ``multipletests`` method (``fdr_bh`` = Benjamini–Hochberg). alpha: level for ``significant``.
    """

    min_n: int = 10
    min_per_status: int = 2
    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0
    method: str = "percentile"
    fdr_method: str = "fdr_bh"
    alpha: float = 0.05


def degenerate_reason(
    status: np.ndarray, values: np.ndarray, min_n: int, min_per_status: int
) -> str:
    """Why a correlation of status (0/1) and values cannot be computed ("" when it can)."""
    n = len(status)
    n_sarc = int(np.sum(status == 1))
    n_non = n - n_sarc
    if n < min_n:
        return f"too few subjects (n={n} < min_n={min_n})"
    if n_sarc == 0 or n_non == 0:
        which = "sarcopenic" if n_non == 0 else "non-sarcopenic"
        return f"no variation in sarcopenia status (all {n} {which})"
    if min(n_sarc, n_non) < min_per_status:
        return (
            f"too few subjects in one status ({n_sarc} sarcopenic, {n_non} non-sarcopenic; "
            f"min_per_status={min_per_status})"
        )
    if np.ptp(values) == 0:
        return "adjusted volume is constant"
    return ""


def point_biserial(
    status: np.ndarray, values: np.ndarray, confidence: float
) -> tuple[float, float, float, float]:
    """Point-biserial r of status (0/1) and values, two-sided p, and the Fisher-z CI.

    r and p from ``scipy.stats.pointbiserialr``; the CI from ``scipy.stats.pearsonr``'s
    ``confidence_interval`` (Fisher transformation), since the point-biserial r is Pearson's r
    with a 0/1 variable. Returns (r, p, ci_low, ci_high).
    """
    res = sps.pointbiserialr(status, values)
    ci = sps.pearsonr(status.astype(float), values).confidence_interval(confidence_level=confidence)
    return float(res.statistic), float(res.pvalue), float(ci.low), float(ci.high)


def _r_of_two_samples(
    sarcopenic: np.ndarray, non_sarcopenic: np.ndarray, axis: int = -1
) -> np.ndarray:
    """Point-biserial r of two samples (status 1 and 0), vectorised along ``axis``."""
    x = np.concatenate([sarcopenic, non_sarcopenic], axis=axis)
    s = np.concatenate([np.ones(sarcopenic.shape[axis]), np.zeros(non_sarcopenic.shape[axis])])
    s = np.moveaxis(np.broadcast_to(s, np.moveaxis(x, axis, -1).shape), -1, axis)
    with warnings.catch_warnings():
        # A resample with constant volumes has no r; it is NaN and dropped from the CI.
        warnings.simplefilter("ignore")
        return sps.pearsonr(s, x, axis=axis).statistic


def bootstrap_ci(
    status: np.ndarray, values: np.ndarray, *, resamples: int, confidence: float, seed, method: str
) -> tuple[float, float]:
    """Bootstrap CI of the point-biserial r (``scipy.stats.bootstrap``).

    Resamples are stratified by status: sarcopenic and non-sarcopenic subjects are resampled
    separately, keeping both group sizes, so no resample lacks one status (with 5 non-sarcopenic
    men, a plain resample would lack them about 1 time in 250). ``seed`` is anything
    ``numpy.random.default_rng`` accepts. Returns (low, high), NaN when it cannot be computed.
    """
    if resamples <= 0:
        return float("nan"), float("nan")
    values = np.asarray(values, float)
    a, b = values[status == 1], values[status == 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = sps.bootstrap(
                (a, b),
                _r_of_two_samples,
                n_resamples=resamples,
                confidence_level=confidence,
                method=method,
                vectorized=True,
                rng=np.random.default_rng(seed),
            )
        except ValueError:
            return float("nan"), float("nan")
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def fdr(p: Sequence[float], method: str = "fdr_bh") -> np.ndarray:
    """Multiple-testing-adjusted p values (statsmodels ``multipletests``; ``none`` = raw p); NaN
    p stay NaN and do not count as tests."""
    p = np.asarray(p, float)
    if method == "none":
        return p.copy()
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method=method)[1]
    return out


def correlate_sex_family(
    adjusted: pd.DataFrame,
    family: str,
    sex: str,
    settings: CorrelationSettings,
    *,
    seed_key: int = 0,
) -> pd.DataFrame:
    """Point-biserial correlations of sarcopenia with every structure of a family, in one sex.

    One row per structure (columns :data:`CORRELATION_COLUMNS`); a degenerate sex gives NaN
    statistics with the ``reason``. p_fdr controls the FDR across the family's structures.
    """
    wide = wide_by_sex(adjusted, family, sex)
    displays = (
        adjusted[adjusted["family"] == family]
        .drop_duplicates("structure")
        .set_index("structure")["display"]
    )
    rows = []
    for k, structure in enumerate(c for c in wide.columns if c != SARCOPENIA):
        pair = wide[[SARCOPENIA, structure]].dropna()
        status = pair[SARCOPENIA].to_numpy(int)
        values = pair[structure].to_numpy(float)
        n_sarc = int(status.sum())
        row = {
            "sex": sex,
            "family": family,
            "structure": structure,
            "display": displays.get(structure, structure),
            "n": len(pair),
            "n_sarcopenic": n_sarc,
            "n_non_sarcopenic": len(pair) - n_sarc,
            "r": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "boot_ci_low": np.nan,
            "boot_ci_high": np.nan,
            "p": np.nan,
        }
        reason = degenerate_reason(status, values, settings.min_n, settings.min_per_status)
        if not reason:
            r, p, lo, hi = point_biserial(status, values, settings.confidence)
            blo, bhi = bootstrap_ci(
                status,
                values,
                resamples=settings.resamples,
                confidence=settings.confidence,
                method=settings.method,
                seed=[settings.seed, seed_key, k],
            )
            row.update(r=r, p=p, ci_low=lo, ci_high=hi, boot_ci_low=blo, boot_ci_high=bhi)
        row["reason"] = reason
        rows.append(row)
    out = pd.DataFrame(
        rows, columns=[c for c in CORRELATION_COLUMNS if c not in ("p_fdr", "significant")]
    )
    out["p_fdr"] = fdr(out["p"], settings.fdr_method)
    out["significant"] = out["p_fdr"] < settings.alpha
    return out[CORRELATION_COLUMNS]


def correlate(adjusted: pd.DataFrame, family: str, settings: CorrelationSettings) -> pd.DataFrame:
    """Correlations of sarcopenia with every structure of a family, per sex (F then M).

    A sex absent from the table still gets its rows (n = 0, NaN, reason), so both panels of the
    figures and both halves of the tables always exist.
    """
    parts = []
    for i, sex in enumerate(SEXES):
        part = correlate_sex_family(
            adjusted, family, sex, settings, seed_key=i * len(FAMILIES) + FAMILIES.index(family)
        )
        if part.empty:
            structures = structure_order(adjusted, family)
            displays = adjusted.drop_duplicates("structure").set_index("structure")["display"]
            part = pd.DataFrame(
                {
                    "sex": sex,
                    "family": family,
                    "structure": structures,
                    "display": [displays.get(s, s) for s in structures],
                    "n": 0,
                    "n_sarcopenic": 0,
                    "n_non_sarcopenic": 0,
                }
            )
            for col in ("r", "ci_low", "ci_high", "boot_ci_low", "boot_ci_high", "p", "p_fdr"):
                part[col] = np.nan
            part["significant"] = False
            part["reason"] = f"no {SEXES[sex].lower()} subjects"
        parts.append(part[CORRELATION_COLUMNS])
    return pd.concat(parts, ignore_index=True)


def correlation_matrix(adjusted: pd.DataFrame, family: str, sex: str) -> pd.DataFrame:
    """Pearson correlation matrix of sarcopenia (0/1) and the family's adjusted volumes in one
    sex (the sarcopenia row is the point-biserial r). Undefined entries are NaN."""
    wide = wide_by_sex(adjusted, family, sex)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return wide.astype(float).corr(method="pearson")
