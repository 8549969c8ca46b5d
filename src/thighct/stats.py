"""Sarcopenia statistics: height-adjusted muscle volumes, sarcopenia status from the SMI,
sex-stratified point-biserial correlations with FDR control, and adjusted logistic models.

Units: volumes in mm³, heights in cm (converted to m here), SMI in kg/m², adjusted volumes in
mm³/m² (volume / height², the paper's SMI-style adjustment). Sarcopenia is coded 1 (sarcopenic)
and 0 (not), so a negative r means sarcopenic subjects have smaller muscles.

Tables are long ("tidy"): one row per subject and structure, where a structure is a muscle
(family ``muscles``) or a muscle group (family ``groups``). Imports no torch or MONAI.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from .errors import ThighctError
from .labels import LabelTable
from .sarcopenia import sarcopenia_status

#: Sex codes of the cohort table, in panel order (A female, B male), and their display names.
SEXES: dict[str, str] = {"F": "Female", "M": "Male"}
#: The two families of structures; FDR control runs within each sex and family.
FAMILIES: tuple[str, ...] = ("muscles", "groups")
#: Name of the sarcopenia variable in correlation matrices.
SARCOPENIA = "sarcopenia"

ADJUSTED_COLUMNS = [
    "subject",
    "sex",
    "age",
    "height_cm",
    "weight_kg",
    "bmi",
    "smi",
    "sarcopenic",
    "family",
    "structure",
    "display",
    "volume_mm3",
    "adjusted_mm3_per_m2",
]
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


# --------------------------------------------------------------------------- status
def sarcopenia_cutoffs(
    cutoffs: Mapping[str, Mapping[str, float]], definition: str
) -> dict[str, float]:
    """Per-sex SMI cutoffs (kg/m²) of one consensus definition (e.g. ``awgs2019``, ``ewgsop2``)."""
    if definition not in cutoffs:
        raise ThighctError(
            f"unknown sarcopenia definition {definition!r}",
            fix=f"set sarcopenia.definition to one of {sorted(cutoffs)} (or add its cutoffs)",
        )
    chosen = {str(k): float(v) for k, v in cutoffs[definition].items()}
    missing = [s for s in SEXES if s not in chosen]
    if missing:
        raise ThighctError(
            f"sarcopenia cutoffs of {definition!r} lack sex {missing}",
            fix=f"give sarcopenia.cutoffs.{definition} a value for each of {list(SEXES)}",
        )
    return chosen


# --------------------------------------------------------------------------- volumes
def read_volume_table(path: str | Path, labels: LabelTable) -> pd.DataFrame:
    """Read a volume table into long form: subject, class_id, volume_mm3 (one row per class).

    Accepts the workflow's volume tables (``subject``, ``class_id`` and/or ``class_name``,
    ``volume_mm3``, more columns ignored), the synthetic generator's ``truth.tsv`` (same, or
    ``subject_id`` / ``class`` / ``name``), and wide tables with one column per class name.
    Rows naming something that is not a class (e.g. a group total) are dropped: groups are summed
    here from their members.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, sep="\t", dtype={"subject": str, "subject_id": str})
    except (OSError, ValueError) as exc:
        raise ThighctError(
            f"cannot read the volume table: {exc}",
            path=path,
            fix="run the rule that writes it, or point sarcopenia.source elsewhere",
        ) from exc
    subject_col = next((c for c in ("subject", "subject_id") if c in df.columns), None)
    if subject_col is None:
        raise ThighctError(
            "volume table has no subject column",
            path=path,
            fix="name the subject column 'subject' or 'subject_id'",
        )
    df = df.rename(columns={subject_col: "subject"})
    df["subject"] = df["subject"].astype(str)
    if "volume_mm3" not in df.columns:
        wide = [n for n in labels.names if n in df.columns]
        if not wide:
            raise ThighctError(
                "volume table has neither a volume_mm3 column nor class columns",
                path=path,
                fix="write volume_mm3 per subject and class (long format)",
            )
        df = df.melt(
            id_vars="subject", value_vars=wide, var_name="class_name", value_name="volume_mm3"
        )
    if "class_id" in df.columns:
        ids = pd.to_numeric(df["class_id"], errors="coerce")
    else:
        name_col = next(
            (c for c in ("class_name", "class", "name", "structure") if c in df.columns), None
        )
        if name_col is None:
            raise ThighctError(
                "volume table names no class (class_id or class_name)",
                path=path,
                fix="add a class_id or class_name column",
            )
        ids = df[name_col].astype(str).map(labels.name_to_id)
    out = pd.DataFrame(
        {
            "subject": df["subject"],
            "class_id": ids,
            "volume_mm3": pd.to_numeric(df["volume_mm3"], errors="coerce"),
        }
    )
    # Group totals are rows whose class_id is empty or whose name is no class: drop them.
    out = out[out["class_id"].isin(labels.ids)].copy()
    out["class_id"] = out["class_id"].astype(int)
    dup = out.duplicated(["subject", "class_id"], keep=False)
    if dup.any():
        first = out[dup].iloc[0]
        raise ThighctError(
            f"{int(dup.sum())} rows repeat a subject and class (e.g. class {first.class_id})",
            subject=str(first.subject),
            path=path,
            fix="write one row per subject and class (whole-structure volume_mm3; sides in columns)",
        )
    return out.reset_index(drop=True)


def structure_volumes(volumes: pd.DataFrame, labels: LabelTable) -> pd.DataFrame:
    """Muscle and group volumes (mm³) per subject, long: subject, family, structure, display,
    volume_mm3. Group volumes are the sums of their member muscles (``labels.groups()``).

    A muscle absent from a subject's rows (a segmentation that found none of it) counts as 0 mm³.
    """
    muscles = labels.muscles
    muscle_ids = [int(i) for i in muscles["id"]]
    wide = (
        volumes[volumes["class_id"].isin(muscle_ids)]
        .pivot_table(index="subject", columns="class_id", values="volume_mm3", aggfunc="sum")
        .reindex(columns=muscle_ids)
    )
    wide = wide.reindex(sorted(volumes["subject"].unique(), key=str)).fillna(0.0)
    rows = []
    for cid in muscle_ids:
        rows.append(
            pd.DataFrame(
                {
                    "subject": wide.index,
                    "family": "muscles",
                    "structure": labels.name_of(cid),
                    "display": labels.id_to_display[cid],
                    "volume_mm3": wide[cid].to_numpy(float),
                }
            )
        )
    for group, members in labels.groups().items():
        members = [m for m in members if m in muscle_ids]
        if not members:
            continue
        rows.append(
            pd.DataFrame(
                {
                    "subject": wide.index,
                    "family": "groups",
                    "structure": group,
                    "display": group_display(group),
                    "volume_mm3": wide[members].sum(axis=1).to_numpy(float),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def group_display(group: str) -> str:
    """Display name of a muscle group ('anterior' -> 'Anterior')."""
    return group.replace("_", " ").capitalize()


@dataclass
class Exclusions:
    """Subjects left out of the sarcopenia analysis, by reason (counts and ids)."""

    not_in_volumes: list[str]
    not_in_cohort: list[str]
    no_height: list[str]
    no_smi: list[str]
    bad_sex: list[str]
    analysed: list[str]

    REASONS = {
        "not_in_volumes": "no volumes",
        "no_height": "no height",
        "no_smi": "no SMI",
        "bad_sex": "sex not F/M",
    }

    def table(self) -> pd.DataFrame:
        """Included subjects left out of the analysis: subject, reason."""
        rows = [(s, why) for attr, why in self.REASONS.items() for s in getattr(self, attr)]
        return pd.DataFrame(rows, columns=["subject", "reason"])

    def lines(self) -> list[str]:
        """Human-readable log lines, one per reason."""
        out = [f"analysed: {len(self.analysed)} subjects"]
        for what, ids in (
            ("included subjects without volumes", self.not_in_volumes),
            ("volume rows for subjects not in the included cohort (ignored)", self.not_in_cohort),
            ("left out: no height", self.no_height),
            ("left out: no SMI", self.no_smi),
            ("left out: sex not F/M", self.bad_sex),
        ):
            if ids:
                shown = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
                out.append(f"{what}: {len(ids)} ({shown})")
            else:
                out.append(f"{what}: 0")
        return out


def adjusted_volumes(
    volumes: pd.DataFrame, cohort: pd.DataFrame, labels: LabelTable, cutoffs: Mapping[str, float]
) -> tuple[pd.DataFrame, Exclusions]:
    """Join structure volumes with the cohort and adjust them by height².

    ``volumes``: long table from :func:`read_volume_table`. ``cohort``: the included cohort
    (subject_id, sex, age, height_cm, weight_kg, smi). Adjusted volume = volume_mm3 / height_m²
    (mm³/m²). Subjects without height or SMI are left out and listed in the returned
    :class:`Exclusions`. Status is from the SMI with the given per-sex cutoffs (kg/m²).
    """
    cohort = cohort.rename(columns={"subject_id": "subject"}).copy()
    cohort["subject"] = cohort["subject"].astype(str)
    for col in ("age", "height_cm", "weight_kg", "smi"):
        cohort[col] = pd.to_numeric(cohort[col], errors="coerce") if col in cohort else np.nan
    cohort["sex"] = cohort["sex"].astype(str)
    have_volumes = set(volumes["subject"])
    in_cohort = set(cohort["subject"])
    not_in_volumes = sorted(in_cohort - have_volumes, key=str)
    not_in_cohort = sorted(have_volumes - in_cohort, key=str)
    cohort = cohort[cohort["subject"].isin(have_volumes)]
    bad_height = cohort["height_cm"].isna() | (cohort["height_cm"] <= 0)
    no_height = sorted(cohort.loc[bad_height, "subject"], key=str)
    cohort = cohort[~bad_height]
    no_smi = sorted(cohort.loc[cohort["smi"].isna(), "subject"], key=str)
    cohort = cohort[cohort["smi"].notna()]
    bad_sex = sorted(cohort.loc[~cohort["sex"].isin(list(SEXES)), "subject"], key=str)
    cohort = cohort[cohort["sex"].isin(list(SEXES))].copy()
    height_m2 = (cohort["height_cm"] / 100.0) ** 2
    cohort["bmi"] = cohort["weight_kg"] / height_m2
    cohort["sarcopenic"] = sarcopenia_status(cohort["smi"], cohort["sex"], cutoffs)
    structures = structure_volumes(volumes[volumes["subject"].isin(set(cohort["subject"]))], labels)
    table = structures.merge(
        cohort[["subject", "sex", "age", "height_cm", "weight_kg", "bmi", "smi", "sarcopenic"]],
        on="subject",
        how="inner",
        validate="many_to_one",
    )
    table["adjusted_mm3_per_m2"] = table["volume_mm3"] / (table["height_cm"] / 100.0) ** 2
    table = table[ADJUSTED_COLUMNS]
    family_order = {f: i for i, f in enumerate(FAMILIES)}
    structure_order = {s: i for i, s in enumerate(structures["structure"].drop_duplicates())}
    table = table.sort_values(
        by=["family", "structure", "subject"],
        key=lambda c: (
            c.map(family_order)
            if c.name == "family"
            else c.map(structure_order)
            if c.name == "structure"
            else c
        ),
    ).reset_index(drop=True)
    analysed = sorted(table["subject"].unique(), key=str)
    excluded = Exclusions(not_in_volumes, not_in_cohort, no_height, no_smi, bad_sex, analysed)
    if not analysed:
        raise ThighctError(
            "no subject is left for the sarcopenia analysis:\n  " + "\n  ".join(excluded.lines()),
            fix="give the included subjects an SMI (kg/m²) and a height (cm) in the cohort table, "
            "and check that the volume table covers them (sarcopenia.source)",
        )
    return table, excluded


def structure_order(adjusted: pd.DataFrame, family: str) -> list[str]:
    """Structures of a family in the order of the table (label-table order)."""
    return list(adjusted.loc[adjusted["family"] == family, "structure"].drop_duplicates())


def wide_by_sex(adjusted: pd.DataFrame, family: str, sex: str) -> pd.DataFrame:
    """One row per subject of a sex: the ``sarcopenia`` status (0/1) then one column per
    structure of the family with its adjusted volume (mm³/m²)."""
    sub = adjusted[(adjusted["family"] == family) & (adjusted["sex"] == sex)]
    order = structure_order(adjusted, family)
    wide = sub.pivot(index="subject", columns="structure", values="adjusted_mm3_per_m2")
    wide = wide.reindex(columns=order)
    status = sub.drop_duplicates("subject").set_index("subject")["sarcopenic"]
    wide.insert(0, SARCOPENIA, status.reindex(wide.index).astype(float))
    wide.columns.name = None
    return wide


# --------------------------------------------------------------------------- correlation
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


def correlation_matrix(adjusted: pd.DataFrame, family: str, sex: str) -> pd.DataFrame:
    """Pearson correlation matrix of sarcopenia (0/1) and the family's adjusted volumes in one
    sex (the sarcopenia row is the point-biserial r). Undefined entries are NaN."""
    wide = wide_by_sex(adjusted, family, sex)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return wide.astype(float).corr(method="pearson")


# --------------------------------------------------------------------------- logistic models
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


# --------------------------------------------------------------------------- summary
def status_counts(adjusted: pd.DataFrame) -> pd.DataFrame:
    """Subjects per sex and status: rows F, M; columns sarcopenic, non_sarcopenic, total."""
    people = adjusted.drop_duplicates("subject")
    out = pd.DataFrame(
        index=list(SEXES), columns=["sarcopenic", "non_sarcopenic", "total"], dtype=int
    )
    for sex in SEXES:
        s = people.loc[people["sex"] == sex, "sarcopenic"]
        out.loc[sex] = [int((s == 1).sum()), int((s == 0).sum()), int(s.notna().sum())]
    return out.astype(int)


def _fmt(x: float, digits: int = 2) -> str:
    return "NA" if not np.isfinite(x) else f"{x:.{digits}f}"


def summary_markdown(
    counts: pd.DataFrame,
    correlations: Mapping[str, pd.DataFrame],
    models: pd.DataFrame | None,
    *,
    source: str,
    definition: str,
    cutoffs: Mapping[str, float],
    alpha: float,
    exclusions: Iterable[str] = (),
    reference_counts: Mapping[str, Mapping[str, int]] | None = None,
    reference_r: Mapping[str, Mapping[str, float]] | None = None,
    agreement: pd.DataFrame | None = None,
) -> str:
    """The short Markdown summary of the sarcopenia analysis.

    counts: from :func:`status_counts`. correlations: family -> correlation table. models: the
    logistic-model table (or None). reference_counts: status -> sex -> n of the paper.
    reference_r: sex -> structure -> the paper's r, printed beside ours.
    agreement: :func:`truth_agreement_table` (synthetic cohort), summarised per sex and family.
    """
    cut = ", ".join(f"{SEXES[s].lower()} < {cutoffs[s]:g}" for s in SEXES)
    lines = [
        "# Sarcopenia and thigh muscle volume",
        "",
        f"Volumes: `{source}`. Sarcopenia: {definition} (SMI kg/m²: {cut}). "
        f"Adjusted volume = volume / height² (mm³/m²). Point-biserial r (sarcopenic = 1, so r < 0 "
        f"means smaller muscles in sarcopenia); Benjamini–Hochberg FDR within each sex and family; "
        f"significant: p_fdr < {alpha:g}.",
        "",
        "## Subjects",
        "",
    ]
    header = "| sex | sarcopenic | non-sarcopenic | total |"
    if reference_counts:
        header = "| sex | sarcopenic (paper) | non-sarcopenic (paper) | total (paper) |"
    lines += [header, "|---|---|---|---|"]
    for sex in SEXES:
        c = counts.loc[sex]
        if reference_counts:
            rs = int(reference_counts.get("sarcopenic", {}).get(sex, 0))
            rn = int(reference_counts.get("non_sarcopenic", {}).get(sex, 0))
            lines.append(
                f"| {SEXES[sex]} | {c.sarcopenic} ({rs}) | {c.non_sarcopenic} ({rn}) | "
                f"{c.total} ({rs + rn}) |"
            )
        else:
            lines.append(f"| {SEXES[sex]} | {c.sarcopenic} | {c.non_sarcopenic} | {c.total} |")
    total = int(counts["total"].sum())
    ref_total = ""
    if reference_counts:
        ref_total = (
            f" (paper: {sum(int(v) for d in reference_counts.values() for v in d.values())})"
        )
    lines += ["", f"Analysed: {total}{ref_total}."]
    lines += [f"- {e}" for e in exclusions]
    for family, table in correlations.items():
        lines += ["", f"## Significant correlations: {family}", ""]
        for sex in SEXES:
            part = table[table["sex"] == sex]
            reasons = sorted(set(part["reason"].dropna()) - {""})
            sig = part[part["significant"].astype(bool)].sort_values("r")
            head = f"**{SEXES[sex]}** (n = {int(part['n'].max()) if len(part) else 0}): "
            if reasons and part["r"].isna().all():
                lines.append(head + f"not computed ({'; '.join(reasons)}).")
            elif sig.empty:
                lines.append(head + "none.")
            else:
                items = []
                for row in sig.itertuples():
                    ref = (reference_r or {}).get(sex, {}).get(row.structure)
                    ref_txt = f"; paper {ref:.2f}" if ref is not None else ""
                    items.append(
                        f"{row.display} r = {row.r:.2f} [{_fmt(row.ci_low)}, "
                        f"{_fmt(row.ci_high)}], p_fdr = {row.p_fdr:.2g}{ref_txt}"
                    )
                lines.append(head + f"{len(sig)} of {len(part)}: " + "; ".join(items) + ".")
            lines.append("")
    reference_rows = [
        (sex, structure, r_paper)
        for sex, by_structure in (reference_r or {}).items()
        for structure, r_paper in (by_structure or {}).items()
    ]
    if reference_rows:
        ours = pd.concat(list(correlations.values()), ignore_index=True).set_index(
            ["sex", "structure"]
        )
        lines += [
            "## Beside the paper",
            "",
            "| sex | structure | paper r | r [95% CI] | p_fdr |",
            "|---|---|---|---|---|",
        ]
        for sex, structure, r_paper in reference_rows:
            if (sex, structure) not in ours.index:
                continue
            row = ours.loc[(sex, structure)]
            mark = " *" if bool(row["significant"]) else ""
            lines.append(
                f"| {SEXES.get(sex, sex)} | {row['display']} | {r_paper:.2f} | {_fmt(row['r'])} "
                f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]{mark} | {_fmt(row['p_fdr'], 3)} |"
            )
        lines.append("")
    if models is not None and len(models):
        lines += [
            "## Adjusted logistic models (odds ratio of sarcopenia per SD of adjusted volume)",
            "",
        ]
        lines += [
            "| sex | structure | n | adjusted for | OR [95% CI] | p | note |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in models.itertuples():
            est = (
                f"{row.odds_ratio:.2f} [{row.ci_low:.2f}, {row.ci_high:.2f}]"
                if np.isfinite(row.odds_ratio)
                else f"not estimable: {row.reason}"
            )
            note = row.note if isinstance(row.note, str) else ""
            lines.append(
                f"| {SEXES.get(row.sex, row.sex)} | {row.display} | {row.n} | {row.covariates} | "
                f"{est} | {_fmt(row.p, 3)} | {note} |"
            )
        lines.append("")
    if agreement is not None and len(agreement):
        table = agreement if "source" in agreement.columns else agreement.assign(source=source)
        lines += [
            "## Agreement with the generator's true volumes (synthetic cohort)",
            "",
            "r from each source's volumes minus r from the phantoms' exact volumes "
            "(`results/sarcopenia/truth_agreement.tsv`); n: structures where both are defined. "
            "Floor: the mean abs Δr that unbiased per-subject errors of the source's own size "
            "would give on these subjects; beyond floor: structures whose abs Δr exceeds 95 % "
            "of such errors' (about 1 in 20 by chance; more means errors that follow status).",
            "",
            "| source | sex | family | n | mean abs Δr | floor | max abs Δr (structure) "
            "| beyond floor |",
            "|---|---|---|---|---|---|---|---|",
        ]
        floors = "floor_mean_abs_delta_r" in table.columns
        # Rows come ordered by truth_agreement_table (source, then sex and family).
        for (src, sex, family), part in table.groupby(["source", "sex", "family"], sort=False):
            d = part["abs_delta_r"].dropna()
            if d.empty:
                lines.append(
                    f"| {src} | {SEXES.get(sex, sex)} | {family} | 0 | NA | NA | NA | NA |"
                )
                continue
            worst = part.loc[d.idxmax(), "structure"]
            floor = _fmt(part["floor_mean_abs_delta_r"].mean(), 3) if floors else "NA"
            beyond = str(int(part["above_floor"].astype(bool).sum())) if floors else "NA"
            lines.append(
                f"| {src} | {SEXES.get(sex, sex)} | {family} | {len(d)} | {d.mean():.3f} | "
                f"{floor} | {d.max():.3f} ({worst}) | {beyond} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
