"""Logistic models of sarcopenia status on the adjusted volume, adjusted for covariates.

Holds the model settings, one logit fit (odds ratio per SD with its CI, or NaN with the reason
the fit failed) and the table of models per sex and structure.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .adjusted import SEXES, structure_order
from .correlation import degenerate_reason

MODEL_COLUMNS = [
    "sex",
    "family",
    "structure",
    "display",
    "n",
    "n_sarcopenic",
    "n_non_sarcopenic",
    "covariates",
    "odds_ratio",
    "ci_low",
    "ci_high",
    "p",
    "events_per_variable",
    "reason",
    "note",
]


@dataclass(frozen=True)
class LogisticSettings:
    """Settings of the adjusted logistic models (config ``sarcopenia.logistic``).

    covariates: adjustment variables among the adjusted table's columns (``age``, ``bmi``); BMI
    is dropped where a sex lacks weight. confidence: CI level. max_iter: Newton iterations.
    min_per_status: fewest subjects in each status. min_events_per_variable: below this the
    row carries a note (rule of thumb 10; not an exclusion). max_se: largest standard error of
    the log odds ratio per SD that still counts as an estimate.
    """

    covariates: tuple[str, ...] = ("age", "bmi")
    confidence: float = 0.95
    max_iter: int = 100
    max_se: float = 5.0
    min_per_status: int = 2
    min_events_per_variable: float = 10.0


def _zscore(x: pd.Series) -> pd.Series:
    sd = x.std(ddof=1)
    return (x - x.mean()) / sd


def fit_logistic(
    y: np.ndarray,
    exposure: np.ndarray,
    covariates: pd.DataFrame,
    *,
    confidence: float,
    max_iter: int,
    max_se: float,
) -> dict:
    """Logit of y (0/1) on the standardised exposure and covariates (statsmodels ``Logit``).

    Returns the exposure's odds ratio per SD with its CI and p, or NaN with a ``reason`` when the
    fit fails: perfect separation, no convergence, a singular design, or a standard error of the
    log odds ratio per SD above ``max_se`` (quasi-separation: the estimate runs off to infinity
    and its CI spans many orders of magnitude).
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import (
        ConvergenceWarning,
        PerfectSeparationError,
        PerfectSeparationWarning,
    )

    nan = {"odds_ratio": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan}
    design = pd.concat(
        [pd.Series(exposure, name="exposure", index=covariates.index), covariates], axis=1
    )
    design = sm.add_constant(design.astype(float), has_constant="add")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = sm.Logit(np.asarray(y, float), design).fit(disp=0, maxiter=max_iter)
        except PerfectSeparationError:
            return {**nan, "reason": "perfect separation: the status is predicted exactly"}
        except np.linalg.LinAlgError:
            return {**nan, "reason": "singular design (collinear covariates)"}
    kinds = {type(w.message) for w in caught if isinstance(w.message, Warning)}
    if PerfectSeparationWarning in kinds:
        return {**nan, "reason": "perfect separation: the status is predicted exactly"}
    if ConvergenceWarning in kinds or not res.mle_retvals.get("converged", True):
        return {**nan, "reason": "maximum likelihood did not converge (likely quasi-separation)"}
    bse = np.asarray(res.bse, float)
    if not np.all(np.isfinite(bse)) or not np.all(np.isfinite(np.asarray(res.params, float))):
        return {**nan, "reason": "non-finite estimate or standard error (separation)"}
    if bse[1] > max_se:
        return {
            **nan,
            "reason": f"unstable fit: SE of log OR per SD {bse[1]:.1f} > {max_se:g} "
            "(quasi-separation)",
        }
    ci = np.asarray(res.conf_int(alpha=1 - confidence))[1]
    return {
        "odds_ratio": float(np.exp(res.params.iloc[1])),
        "ci_low": float(np.exp(ci[0])),
        "ci_high": float(np.exp(ci[1])),
        "p": float(res.pvalues.iloc[1]),
        "reason": "",
    }


def logistic_models(
    adjusted: pd.DataFrame, family: str, settings: LogisticSettings
) -> pd.DataFrame:
    """Per sex and structure: logistic regression of sarcopenia on the adjusted volume
    (standardised within the sex: odds ratio per SD), adjusted for the covariates.

    One row per sex and structure (columns :data:`MODEL_COLUMNS`); failures give NaN + reason.
    """
    rows = []
    for sex in SEXES:
        sub = adjusted[(adjusted["family"] == family) & (adjusted["sex"] == sex)]
        people = sub.drop_duplicates("subject").set_index("subject")
        covariates = [c for c in settings.covariates if c in people.columns]
        dropped = [c for c in covariates if people[c].isna().any() or people[c].nunique() < 2]
        covariates = [c for c in covariates if c not in dropped]
        for structure in structure_order(adjusted, family):
            one = sub[sub["structure"] == structure].set_index("subject")
            y = one["sarcopenic"].astype(float).to_numpy()
            n_sarc = int(np.nansum(y))
            row = {
                "sex": sex,
                "family": family,
                "structure": structure,
                "display": one["display"].iloc[0] if len(one) else structure,
                "n": len(one),
                "n_sarcopenic": n_sarc,
                "n_non_sarcopenic": len(one) - n_sarc,
                "covariates": ", ".join(covariates) if covariates else "none",
                "events_per_variable": min(n_sarc, len(one) - n_sarc) / (1 + len(covariates)),
                "note": "",
            }
            if dropped:
                row["note"] = f"not adjusted for {', '.join(dropped)} (missing or constant)"
            reason = degenerate_reason(
                y.astype(int),
                one["adjusted_mm3_per_m2"].to_numpy(float),
                min_n=2 + len(covariates) + 1,
                min_per_status=settings.min_per_status,
            )
            if reason:
                rows.append(
                    {
                        **row,
                        "odds_ratio": np.nan,
                        "ci_low": np.nan,
                        "ci_high": np.nan,
                        "p": np.nan,
                        "reason": reason,
                    }
                )
                continue
            fit = fit_logistic(
                y,
                _zscore(one["adjusted_mm3_per_m2"]).to_numpy(),
                people.loc[one.index, covariates].apply(_zscore),
                confidence=settings.confidence,
                max_iter=settings.max_iter,
                max_se=settings.max_se,
            )
            if row["events_per_variable"] < settings.min_events_per_variable:
                few = (
                    f"few events: {min(n_sarc, len(one) - n_sarc)} in the smaller status for "
                    f"{1 + len(covariates)} predictors (EPV {row['events_per_variable']:.1f} < "
                    f"{settings.min_events_per_variable:g}); estimates unstable"
                )
                row["note"] = "; ".join(x for x in (row["note"], few) if x)
            rows.append({**row, **fit})
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)
