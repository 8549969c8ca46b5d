"""The cohort table: the synthetic cohort, validation, filtering (the flow), split and folds.

A cohort table has one row per patient: ``subject_id, sex, age, height_cm, weight_kg, smi``,
one boolean column per filtering criterion, and the paths ``image``, ``label``,
``label_rater2``. Criteria are data (config ``criteria``): a subject stays when
``column op value`` holds.

The tables written under ``results/`` carry no path (a folder or file name may name the
patient): :func:`without_paths` replaces the path columns by ``has_label`` and
``has_label_rater2`` (true/false), and every function here reads either form.
"""

from __future__ import annotations

import operator
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CohortError, ThighctError

CLINICAL_COLUMNS = ("subject_id", "sex", "age", "height_cm", "weight_kg", "smi")
PATH_COLUMNS = ("image", "label", "label_rater2")
#: Path column -> the true/false column that replaces it in tables under results/.
FLAG_COLUMNS = {"label": "has_label", "label_rater2": "has_label_rater2"}
OPS = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


# ----------------------------------------------------------------------------- synthetic


def synthetic_cohort(
    cfg: dict, criteria: list[dict], cutoffs: dict, seed: int, image_root: str = "results/synthetic"
) -> pd.DataFrame:
    """Draw the synthetic cohort whose flow reproduces the configured counts exactly.

    ``cfg`` is config ``synthetic_cohort``: ``n_patients``, ``first_failures`` (subjects that
    first fail each criterion, in criterion order), ``n_annotated``, ``smi_counts``
    (sarcopenic / non_sarcopenic by sex), ``no_smi_counts``, age/height/BMI distributions,
    ``n_rater2``. ``cutoffs`` are the SMI cutoffs by sex (kg/m²) used to place each SMI on
    the intended side. Image paths point at ``{image_root}/{subject}/ct.nii.gz``.
    """
    rng = np.random.default_rng(int(seed))
    n = int(cfg["n_patients"])
    fails = cfg["first_failures"]
    names = [c["name"] for c in criteria]
    unknown = sorted(set(fails) - set(names))
    if unknown:
        raise ThighctError(
            f"synthetic_cohort.first_failures names unknown criteria {unknown}",
            fix=f"use criterion names from config 'criteria': {names}",
        )
    counts_eligible = _eligible_strata(cfg)
    n_eligible = sum(counts_eligible.values())
    n_failed = sum(int(fails.get(k, 0)) for k in names)
    if n_failed + n_eligible != n:
        raise ThighctError(
            f"synthetic cohort counts do not add up: {n_failed} excluded + {n_eligible} eligible "
            f"(smi_counts + no_smi_counts) != n_patients {n}",
            fix="make n_patients = sum(first_failures) + sum(smi_counts) + sum(no_smi_counts)",
        )
    if int(cfg["n_annotated"]) > n_eligible:
        raise ThighctError(
            f"n_annotated {cfg['n_annotated']} exceeds the {n_eligible} eligible",
            fix="lower synthetic_cohort.n_annotated",
        )

    # Who fails first where: a shuffled assignment of fates (eligible or a criterion index).
    fates = np.concatenate(
        [np.full(int(fails.get(k, 0)), i) for i, k in enumerate(names)] + [np.full(n_eligible, -1)]
    ).astype(int)
    rng.shuffle(fates)

    # Eligible strata: (sex, status) with status in {"sarc", "non", "none"}.
    strata = [s for s, k in counts_eligible.items() for _ in range(k)]
    order = rng.permutation(len(strata))
    strata = [strata[i] for i in order]

    ids = [f"SYN{i + 1:04d}" for i in range(n)]
    rows = []
    k_eligible = 0
    for i, sid in enumerate(ids):
        fate = fates[i]
        if fate == -1:
            sex, status = strata[k_eligible]
            k_eligible += 1
        else:
            sex = "F" if rng.random() < 0.65 else "M"
            status = "sarc" if rng.random() < 0.55 else ("non" if rng.random() < 0.6 else "none")
        row = _draw_clinical(rng, cfg, sex, status, cutoffs)
        row["subject_id"] = sid
        for j, crit in enumerate(criteria):
            passes = True if fate == -1 or j < fate else (j != fate and rng.random() > 0.15)
            row[crit["column"]] = _value_for(crit, passes, rng, row.get(crit["column"]))
        rows.append(row)
    df = pd.DataFrame(rows)

    # Annotation: a random n_annotated of the eligible, deterministic.
    eligible_ids = [sid for sid, f in zip(ids, fates, strict=True) if f == -1]
    annotated = set(rng.choice(eligible_ids, size=int(cfg["n_annotated"]), replace=False))
    df["image"] = [f"{image_root}/{s}/ct.nii.gz" for s in df["subject_id"]]
    df["label"] = [
        f"{image_root}/{s}/label.nii.gz" if s in annotated else "" for s in df["subject_id"]
    ]
    df["label_rater2"] = ""
    cols = list(CLINICAL_COLUMNS) + [
        c["column"] for c in criteria if c["column"] not in CLINICAL_COLUMNS
    ]
    cols += list(PATH_COLUMNS)
    return df[list(dict.fromkeys(cols))]


def assign_rater2(
    cohort: pd.DataFrame,
    included: pd.DataFrame,
    n_rater2: int,
    image_root: str = "results/synthetic",
) -> pd.DataFrame:
    """Give the first ``n_rater2`` validation subjects (by id) a second rater's label path."""
    val = sorted(included.loc[included["split"] == "val", "subject_id"])[: int(n_rater2)]
    out = cohort.copy()
    mask = out["subject_id"].isin(val)
    out.loc[mask, "label_rater2"] = [
        f"{image_root}/{s}/label_rater2.nii.gz" for s in out.loc[mask, "subject_id"]
    ]
    return out


def _eligible_strata(cfg: dict) -> dict[tuple[str, str], int]:
    out = {}
    for status, key in (("sarc", "sarcopenic"), ("non", "non_sarcopenic")):
        for sex in ("F", "M"):
            out[(sex, status)] = int(cfg["smi_counts"][key][sex])
    for sex in ("F", "M"):
        out[(sex, "none")] = int(cfg["no_smi_counts"][sex])
    return out


def _draw_clinical(rng, cfg, sex, status, cutoffs) -> dict:
    age = float(np.clip(rng.normal(cfg["age_mean"], cfg["age_sd"]), 51, 101))
    h_mean, h_sd = cfg["height_cm"][sex]
    height = float(np.clip(rng.normal(h_mean, h_sd), 135, 195))
    bmi = float(np.clip(rng.normal(*cfg["bmi"]), 14, 38))
    weight = bmi * (height / 100) ** 2
    cut = float(cutoffs[sex])
    if status == "none":
        smi = np.nan
    elif status == "sarc":
        smi = cut - 0.05 - abs(rng.normal(0.0, 0.55 if sex == "M" else 0.45))
    else:
        smi = cut + 0.05 + abs(rng.normal(0.0, 0.55 if sex == "M" else 0.45))
    return {
        "sex": sex,
        "age": round(age, 1),
        "height_cm": round(height, 1),
        "weight_kg": round(weight, 1),
        "smi": round(float(smi), 2) if np.isfinite(smi) else np.nan,
    }


def _value_for(crit: dict, passes: bool, rng, current):
    """A column value that makes ``crit`` hold (``passes``) or not."""
    op, value = crit["op"], crit["value"]
    if isinstance(value, bool):
        truth = value if op == "==" else (not value)
        return truth if passes else (not truth)
    value = float(value)
    if passes:
        ok = current is not None and OPS[op](float(current), value)
        return current if ok else (value + 1.0 if op in (">", ">=") else value - 1.0)
    # Fail a numeric criterion with a value on the wrong side (e.g. an age of 40..50).
    return round(
        float(value - rng.uniform(0, 10) if op in (">", ">=") else value + rng.uniform(0, 10)), 1
    )


# ---------------------------------------------------------------------------- validation


def read_cohort(path: str | Path) -> pd.DataFrame:
    """Read a cohort TSV (ids and paths as strings, empty cells as NaN/"" )."""
    path = Path(path)
    if not path.exists():
        raise ThighctError(
            "cohort table not found",
            path=path,
            fix="set config cohort.table to an existing TSV, or empty for the synthetic cohort",
        )
    try:
        df = pd.read_csv(
            path,
            sep="\t",
            comment=None,
            dtype={"subject_id": str, "sex": str, "image": str, "label": str, "label_rater2": str},
        )
    except (ValueError, pd.errors.ParserError) as exc:
        raise ThighctError(
            f"cannot parse the cohort table: {exc}",
            path=path,
            fix="save it as tab-separated text with a header row",
        ) from exc
    for col in PATH_COLUMNS:
        if col in df.columns:
            df[col] = df[col].fillna("").astype(str)
    return df


SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "cohort.schema.yaml"
NUMERIC_COLUMNS = ("age", "height_cm", "weight_kg", "smi")


def load_cohort_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The row schema of the cohort table (workflow/schemas/cohort.schema.yaml)."""
    import yaml

    with open(path) as fh:
        return yaml.safe_load(fh)


def validate_cohort(
    df: pd.DataFrame, criteria: list[dict], path=None, schema: dict | None = None
) -> pd.DataFrame:
    """Check a cohort table; raise one :class:`CohortError` listing every problem.

    Every row is checked against the cohort schema (required values, id pattern, sex F/M,
    plausible age, height in cm, weight, SMI), plus duplicate ids and criterion columns that
    are not true/false. Messages name the row (1-based, header = row 1), subject and column.
    Returns the table with typed columns.
    """
    import jsonschema

    schema = dict(schema or load_cohort_schema())
    crit_cols = list(dict.fromkeys(c["column"] for c in criteria))
    schema["required"] = list(dict.fromkeys(list(schema.get("required", [])) + crit_cols))
    with_paths = "image" in df.columns or not set(FLAG_COLUMNS.values()) & set(df.columns)
    if not with_paths:  # a table written under results/ (see without_paths)
        schema["required"] = [c for c in schema["required"] if c not in PATH_COLUMNS]
    validator = jsonschema.Draft202012Validator(schema)
    problems: list[str] = []
    missing_cols = [c for c in schema["required"] if c not in df.columns]
    if missing_cols:
        raise CohortError([f"missing column(s) {missing_cols}"], path=path)
    df = df.copy()
    reported: set = set()  # (row, column) already explained; the schema pass skips them
    for col in NUMERIC_COLUMNS:
        if col in df.columns:
            numeric = pd.to_numeric(df[col], errors="coerce")
            for i in df.index[
                numeric.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
            ]:
                reported.add((i, col))
                problems.append(f"{_row(df, i)}, column {col}: {df.at[i, col]!r} is not a number")
            df[col] = numeric
    bool_cols = [c["column"] for c in criteria if isinstance(c["value"], bool)]
    if not with_paths:
        bool_cols += [c for c in FLAG_COLUMNS.values() if c in df.columns and c not in bool_cols]
    for col in bool_cols:
        parsed = df[col].map(_parse_bool)
        for i in df.index[parsed.isna() & df[col].notna()]:
            reported.add((i, col))
            problems.append(f"{_row(df, i)}, column {col}: {df.at[i, col]!r} is not true/false")
        df[col] = parsed

    for i, record in zip(df.index, df.to_dict("records"), strict=True):
        row = {k: _json_value(v) for k, v in record.items()}
        row = {k: v for k, v in row.items() if v is not None}  # empty cell = absent
        for err in sorted(validator.iter_errors(row), key=lambda e: list(e.path)):
            col = err.path[0] if err.path else "?"
            if err.validator == "required":
                col = err.message.split("'")[1]
                if (i, col) in reported:
                    continue
                problems.append(f"{_row(df, i)}, column {col}: missing value")
            else:
                desc = schema["properties"].get(col, {}).get("description", "")
                problems.append(
                    f"{_row(df, i)}, column {col}: {err.message}"
                    + (f" (expected: {desc})" if desc else "")
                )
    sid = df["subject_id"].astype("string")
    dups = sid[sid.duplicated(keep=False) & sid.notna()]
    for dup in sorted(set(dups)):
        rows = [str(i + 2) for i in df.index[sid == dup]]
        problems.append(f"rows {', '.join(rows)}, column subject_id: duplicate id {dup!r}")
    if problems:
        raise CohortError(problems, path=path)
    for col in bool_cols:
        df[col] = df[col].astype(bool)
    df["subject_id"] = df["subject_id"].astype(str)
    if with_paths:
        for col in PATH_COLUMNS:
            if col not in df.columns:
                df[col] = ""
            df[col] = df[col].fillna("").astype(str)
        for col, flag in FLAG_COLUMNS.items():
            df[flag] = df[col] != ""
    else:
        for flag in FLAG_COLUMNS.values():
            df[flag] = df[flag].astype(bool) if flag in df.columns else False
    return df


def without_paths(df: pd.DataFrame) -> pd.DataFrame:
    """The table without its path columns: ``image`` dropped, ``label`` and ``label_rater2``
    replaced in place by ``has_label`` and ``has_label_rater2`` (true/false).

    What the tables under results/ hold: the subject id and whether labels exist, never a path
    (a folder or file name may carry the patient's name or record number).
    """
    out = df.copy()
    for col, flag in FLAG_COLUMNS.items():
        if col in out.columns:
            out[col] = out[col].fillna("").astype(str) != ""
            out = out.drop(columns=[flag], errors="ignore").rename(columns={col: flag})
    return out.drop(columns=["image"], errors="ignore")


def has_label(df: pd.DataFrame) -> pd.Series:
    """Which rows have a first-rater label map (from ``label`` or ``has_label``)."""
    if "label" in df.columns:
        return df["label"].fillna("").astype(str) != ""
    return df["has_label"].astype(bool)


def _row(df: pd.DataFrame, i) -> str:
    sid = df.at[i, "subject_id"]
    return f"row {i + 2} (subject {sid if pd.notna(sid) and str(sid) else '?'})"


def _json_value(v):
    """A cell as a JSON value: NaN/empty -> None, numpy scalars -> Python."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, str) and v.strip() == "":
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def _parse_bool(v):
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if pd.isna(v):
        return None
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "y", "t"):
        return True
    if s in ("false", "0", "no", "n", "f"):
        return False
    return None


def check_paths(included: pd.DataFrame, root: str | Path = ".") -> None:
    """Every included subject's image (and given labels) must exist; one error lists all."""
    root = Path(root)
    problems = []
    for _, row in included.iterrows():
        for col in PATH_COLUMNS:
            p = str(row[col])
            if col == "image" and not p:
                problems.append(f"subject {row['subject_id']}, column image: no image path")
            elif p and not (root / p).exists():
                problems.append(f"subject {row['subject_id']}, column {col}: path not found: {p}")
    if problems:
        raise CohortError(problems)


# ----------------------------------------------------------------------------- filtering


def apply_criteria(df: pd.DataFrame, criteria: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the criteria in order; return (kept rows, flow table).

    The flow table has one row per step: step, kind, criterion, description, n_before,
    n_excluded, n_after. A missing value fails a criterion (cannot show it holds).
    """
    kept = df
    flow = []
    for step, crit in enumerate(criteria, start=1):
        col = kept[crit["column"]]
        value = crit["value"]
        holds = OPS[crit["op"]](col, value) & col.notna()
        n_before = len(kept)
        kept = kept[holds.to_numpy(dtype=bool)]
        flow.append(
            {
                "step": step,
                "kind": crit["kind"],
                "criterion": crit["name"],
                "description": crit.get("description", crit["name"]),
                "n_before": n_before,
                "n_excluded": n_before - len(kept),
                "n_after": len(kept),
            }
        )
    return kept.reset_index(drop=True), pd.DataFrame(flow)


def split_subjects(
    included: pd.DataFrame, n_val: int | float, folds: int, seed: int
) -> pd.DataFrame:
    """Add ``split`` (train / val / unlabelled) and ``fold`` columns.

    Annotated subjects (a label map, see :func:`has_label`) are split stratified by sex:
    ``n_val`` subjects (or a fraction when ``n_val < 1``) go to validation, in each sex proportionally (largest
    remainder). With ``folds = k > 0`` annotated subjects get folds 0..k-1, stratified by sex;
    unlabelled subjects get fold -1. Deterministic for a seed.
    """
    out = included.copy()
    annotated = has_label(out)
    n_ann = int(annotated.sum())
    n_val = int(round(n_val * n_ann)) if 0 < n_val < 1 else int(n_val)
    if n_val >= n_ann and n_ann > 0:
        raise ThighctError(
            f"split.n_val = {n_val} leaves no training subjects among {n_ann} annotated",
            fix="lower split.n_val",
        )
    out["split"] = np.where(annotated, "train", "unlabelled")
    out["fold"] = -1
    rng = np.random.default_rng([int(seed), 7])
    sexes = sorted(out.loc[annotated, "sex"].unique())
    per_sex = {s: sorted(out.loc[annotated & (out["sex"] == s), "subject_id"]) for s in sexes}
    # Largest-remainder allocation of the validation places to each sex.
    quotas = {s: n_val * len(v) / max(n_ann, 1) for s, v in per_sex.items()}
    alloc = {s: int(np.floor(q)) for s, q in quotas.items()}
    for s in sorted(quotas, key=lambda s: (-(quotas[s] - alloc[s]), s))[
        : n_val - sum(alloc.values())
    ]:
        alloc[s] += 1
    val_ids = []
    for s in sexes:
        ids = list(rng.permutation(per_sex[s]))
        val_ids += ids[: alloc[s]]
    out.loc[out["subject_id"].isin(val_ids), "split"] = "val"
    if folds and folds > 0:
        if folds > n_ann:
            raise ThighctError(
                f"split.folds = {folds} exceeds the {n_ann} annotated subjects",
                fix="lower split.folds",
            )
        offset = 0
        for s in sexes:
            ids = list(rng.permutation(per_sex[s]))
            for j, sid in enumerate(ids):
                out.loc[out["subject_id"] == sid, "fold"] = (offset + j) % folds
            offset += len(ids)
    return out


def filter_cohort(
    df: pd.DataFrame,
    criteria: list[dict],
    n_val,
    folds: int,
    seed: int,
    path=None,
    validated: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate, filter and split: returns (included with split and fold, flow table).

    The flow table gains a last row for annotation (eligible -> annotated); subjects without a
    label stay included as ``unlabelled`` (segmented by the model, not used to train).
    An empty result is an error that shows the flow.
    """
    if not validated:  # the caller may have validated already (row-wise schema checks cost)
        df = validate_cohort(df, criteria, path=path)
    kept, flow = apply_criteria(df, criteria)
    if kept.empty:
        raise ThighctError(
            "no subject passes the inclusion and exclusion criteria:\n"
            + flow.to_string(index=False),
            path=path,
            fix="check the criteria in config 'criteria' against the table's columns",
        )
    n_ann = int(has_label(kept).sum())
    flow = pd.concat(
        [
            flow,
            pd.DataFrame(
                [
                    {
                        "step": len(flow) + 1,
                        "kind": "annotation",
                        "criterion": "annotated",
                        "description": "Manual annotation available (others: unlabelled, model only)",
                        "n_before": len(kept),
                        "n_excluded": len(kept) - n_ann,
                        "n_after": n_ann,
                    }
                ]
            ),
        ],
        ignore_index=True,
    )
    included = split_subjects(kept, n_val, folds, seed)
    return included, flow


def synthetic_cohort_table(
    cfg: dict,
    criteria: list[dict],
    cutoffs: dict,
    split: dict,
    seed: int,
    image_root: str = "results/synthetic",
) -> pd.DataFrame:
    """The synthetic cohort table as the workflow uses it: drawn (:func:`synthetic_cohort`),
    filtered and split to find the annotated subjects, and given second-rater labels
    (:func:`assign_rater2`). The workflow calls it once while it is read (to know the
    subjects) and rule synthetic_cohort once more (to write the table): one definition."""
    table = synthetic_cohort(cfg, criteria, cutoffs, seed, image_root=image_root)
    included, _ = filter_cohort(table, criteria, split["n_val"], split["folds"], seed)
    return assign_rater2(table, included, cfg["n_rater2"], image_root)


def chunk_count(n_subjects: int, chunks: int | str, chunk_size: int) -> int:
    """Number of chunks the per-scan stages are split into (config ``chunks``, ``chunk_size``).

    ``chunks`` is a count, 0 (one job per subject), or ``"auto"``: the smallest power of two
    that keeps chunks at about ``chunk_size`` subjects or fewer. A power of two keeps the
    assignment stable as a cohort grows: it changes only when the cohort doubles, and then
    each chunk splits in two.
    """
    if chunks == "auto":
        wanted = max(1, -(-n_subjects // max(int(chunk_size), 1)))
        return 1 << (wanted - 1).bit_length()
    return int(chunks) or max(n_subjects, 1)


def chunk_subjects(subjects: list[str], n_chunks: int) -> dict[str, list[str]]:
    """Split subjects into at most ``n_chunks`` named chunks by a stable hash of the id.

    Adding or removing one subject changes only the chunk it hashes to. With ``n_chunks`` at
    least the number of subjects every subject gets its own chunk (named after it).
    Empty chunks are left out; members keep their order in ``subjects``.
    """
    if n_chunks >= len(subjects):
        return {s: [s] for s in subjects}
    out: dict[str, list[str]] = {}
    for s in subjects:
        out.setdefault(f"chunk{zlib.crc32(s.encode()) % n_chunks:03d}", []).append(s)
    return dict(sorted(out.items()))
