"""Sarcopenia status from the skeletal muscle index: the one definition of the rule.

The cohort table, the synthetic phantoms and the statistics all call :func:`is_sarcopenic`;
the cutoffs are config (``sarcopenia.cutoffs``; AWGS 2019: 7.0 men, 5.4 women, kg/m², DXA).
Needs numpy and pandas only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def is_sarcopenic(smi, cutoff):
    """Sarcopenia by SMI: the SMI (kg/m², DXA) below the sex's cutoff (AWGS 2019: 7.0 men,
    5.4 women; config sarcopenia.cutoffs). Elementwise on arrays. The one definition of the
    rule: the cohort, the synthetic phantoms and the statistics all call it. Status comes from
    the SMI only, never from a CT volume (that would make the correlations circular)."""
    return smi < cutoff


def sarcopenia_status(smi: pd.Series, sex: pd.Series, cutoffs: dict) -> pd.Series:
    """1 where sarcopenic (:func:`is_sarcopenic`), 0 where not, <NA> where the SMI or the
    sex's cutoff is missing."""
    smi = pd.to_numeric(smi, errors="coerce")
    cut = sex.astype(str).map({k: float(v) for k, v in cutoffs.items()})
    status = is_sarcopenic(smi, cut).astype("Int64")
    return status.mask(smi.isna() | cut.isna())


def subject_sarcopenic(smi, cutoff: float) -> bool | None:
    """:func:`is_sarcopenic` of one subject; None when there is no SMI."""
    if smi is None or smi == "" or (isinstance(smi, float) and np.isnan(smi)):
        return None
    return bool(is_sarcopenic(float(smi), float(cutoff)))
