"""The height-adjusted volume table the sarcopenia statistics start from.

Holds the per-sex SMI cutoffs of a sarcopenia definition, the reading of volume tables into long
form, muscle and group volumes per subject, the join with the included cohort (volume /
height², sarcopenia status from the SMI, the subjects left out and why), and the views of the
adjusted table that the analyses share (structure order, one sex and family as a wide table).
Also the sex codes, families and column names every part of :mod:`thighct.stats` uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ThighctError
from ..labels import LabelTable
from ..sarcopenia import sarcopenia_status

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
