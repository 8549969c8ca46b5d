"""The cohort: synthetic table, validation, the flow 478 -> 98 -> 72, split and folds."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from thighct import cohort, sarcopenia
from thighct.errors import CohortError, ThighctError


def _synthetic(cfg):
    cut = cfg["sarcopenia"]["cutoffs"][cfg["sarcopenia"]["definition"]]
    return cohort.synthetic_cohort(cfg["synthetic_cohort"], cfg["criteria"], cut, cfg["seed"])


def _filtered(cfg):
    table = _synthetic(cfg)
    return cohort.filter_cohort(
        table, cfg["criteria"], cfg["split"]["n_val"], cfg["split"]["folds"], cfg["seed"]
    )


def test_flow_counts_are_478_98_72(default_config):
    included, flow = _filtered(default_config)
    assert flow["n_before"].iloc[0] == 478
    eligible = flow.loc[flow["kind"] == "exclusion", "n_after"].iloc[-1]
    assert eligible == 98
    assert flow["n_after"].iloc[-1] == 72
    assert (flow["n_before"] - flow["n_excluded"] == flow["n_after"]).all()
    assert (flow["n_after"].iloc[:-1].to_numpy() == flow["n_before"].iloc[1:].to_numpy()).all()
    # every configured reason excludes exactly its configured count
    expected = default_config["synthetic_cohort"]["first_failures"]
    got = dict(zip(flow["criterion"], flow["n_excluded"], strict=True))
    assert all(got[k] == v for k, v in expected.items())
    assert len(included) == 98


def test_split_is_60_train_12_val_26_unlabelled(default_config):
    included, _ = _filtered(default_config)
    assert included["split"].value_counts().to_dict() == {"train": 60, "val": 12, "unlabelled": 26}


def test_sarcopenia_counts_mirror_the_paper(default_config):
    included, _ = _filtered(default_config)
    cut = default_config["sarcopenia"]["cutoffs"]["awgs2019"]
    status = sarcopenia.sarcopenia_status(included["smi"], included["sex"], cut)
    assert included["smi"].notna().sum() == 69
    table = pd.crosstab(included["sex"], status)
    assert table.loc["F", 1] == 20 and table.loc["M", 1] == 21
    assert table.loc["F", 0] == 23 and table.loc["M", 0] == 5


def test_clinical_values_are_plausible_for_elderly_hip_fracture(default_config):
    included, _ = _filtered(default_config)
    assert 72 < included["age"].mean() < 83
    assert (included["age"] > 50).all()
    assert (
        included.groupby("sex")["height_cm"].mean()["M"]
        > included.groupby("sex")["height_cm"].mean()["F"]
    )
    bmi = included["weight_kg"] / (included["height_cm"] / 100) ** 2
    assert bmi.between(14, 38).all()


def test_small_configured_cohort(tiny_config):
    included, flow = _filtered(tiny_config)
    assert flow["n_before"].iloc[0] == 40
    assert len(included) == 12
    assert flow["n_after"].iloc[-1] == 8
    assert included["split"].value_counts().to_dict() == {"train": 6, "val": 2, "unlabelled": 4}


def test_synthetic_cohort_is_deterministic_for_a_seed(default_config):
    a, b = _synthetic(default_config), _synthetic(default_config)
    pd.testing.assert_frame_equal(a, b)
    other = dict(default_config, seed=default_config["seed"] + 1)
    assert not a.equals(_synthetic(other))


def test_counts_that_do_not_add_up_are_an_error(default_config):
    cfg = dict(default_config)
    cfg["synthetic_cohort"] = dict(cfg["synthetic_cohort"], n_patients=500)
    with pytest.raises(ThighctError, match="do not add up"):
        _synthetic(cfg)


def test_validation_split_is_stratified_by_sex(default_config):
    included, _ = _filtered(default_config)
    ann = included[included["split"] != "unlabelled"]
    share_f = (ann["sex"] == "F").mean()
    val = ann[ann["split"] == "val"]
    assert abs((val["sex"] == "F").sum() - round(12 * share_f)) <= 1


def test_folds_are_balanced_and_cover_annotated(default_config):
    table = _synthetic(default_config)
    included, _ = cohort.filter_cohort(
        table, default_config["criteria"], 12, 5, default_config["seed"]
    )
    ann = included[included["split"] != "unlabelled"]
    sizes = ann["fold"].value_counts()
    assert sorted(sizes.index) == [0, 1, 2, 3, 4]
    assert sizes.max() - sizes.min() <= 1
    assert (included.loc[included["split"] == "unlabelled", "fold"] == -1).all()


# --------------------------------------------------------------------------- validation


def _table(default_config, n=6):
    t = _synthetic(default_config).head(n).astype(object).copy()
    return t


def _errors(df, cfg):
    with pytest.raises(CohortError) as info:
        cohort.validate_cohort(df, cfg["criteria"], path="cohort.tsv")
    return info.value


def test_duplicate_ids_are_named_with_their_rows(default_config):
    t = _table(default_config)
    t.loc[3, "subject_id"] = t.loc[1, "subject_id"]
    err = _errors(t, default_config)
    assert any("duplicate id" in p and "rows 3, 5" in p for p in err.problems)


def test_unsafe_id_is_an_error(default_config):
    t = _table(default_config)
    t.loc[0, "subject_id"] = "../etc/passwd"
    err = _errors(t, default_config)
    assert any("row 2" in p and "subject_id" in p for p in err.problems)


def test_height_in_metres_is_impossible(default_config):
    t = _table(default_config)
    t.loc[2, "height_cm"] = 1.62
    err = _errors(t, default_config)
    assert any("row 4" in p and "height_cm" in p and "cm" in p for p in err.problems)


def test_negative_age_and_bad_sex_and_missing_value_all_reported_at_once(default_config):
    t = _table(default_config)
    t.loc[0, "age"] = -3
    t.loc[1, "sex"] = "X"
    t.loc[2, "height_cm"] = np.nan
    t.loc[3, "metal_artefact"] = "maybe"
    err = _errors(t, default_config)
    text = "\n".join(err.problems)
    assert "row 2" in text and "column age" in text
    assert "row 3" in text and "column sex" in text
    assert "row 4" in text and "column height_cm: missing value" in text
    assert "row 5" in text and "metal_artefact" in text and "true/false" in text
    assert len(err.problems) == 4
    assert "fix:" in str(err)


def test_missing_column_is_an_error(default_config):
    t = _table(default_config).drop(columns=["amputation"])
    err = _errors(t, default_config)
    assert "amputation" in err.problems[0]


def test_table_read_from_tsv_round_trips(default_config, tmp_path):
    t = _synthetic(default_config)
    path = tmp_path / "cohort.tsv"
    t.to_csv(path, sep="\t", index=False)
    back = cohort.validate_cohort(cohort.read_cohort(path), default_config["criteria"])
    assert list(back["subject_id"]) == list(t["subject_id"])
    assert back["label"].eq(t["label"]).all()


def test_the_table_without_paths_gives_the_same_flow_and_split(default_config, tmp_path):
    """What results/cohort/cohort.tsv holds (no path, has_label flags) filters like the original."""
    cfg = default_config
    t = _synthetic(cfg)
    stripped = cohort.without_paths(t)
    assert not set(cohort.PATH_COLUMNS) & set(stripped.columns)
    assert list(stripped["has_label"]) == list(t["label"] != "")
    stripped.to_csv(tmp_path / "cohort.tsv", sep="\t", index=False)
    args = (cfg["criteria"], cfg["split"]["n_val"], cfg["split"]["folds"], cfg["seed"])
    included, flow = cohort.filter_cohort(cohort.read_cohort(tmp_path / "cohort.tsv"), *args)
    want_included, want_flow = _filtered(cfg)
    pd.testing.assert_frame_equal(flow, want_flow)
    assert list(included["subject_id"]) == list(want_included["subject_id"])
    assert list(included["split"]) == list(want_included["split"])
    assert list(included["fold"]) == list(want_included["fold"])
    bad = stripped.copy()
    bad["has_label"] = bad["has_label"].astype(object)
    bad.loc[0, "has_label"] = "maybe"
    with pytest.raises(CohortError, match="has_label"):
        cohort.validate_cohort(bad, cfg["criteria"])


def test_image_path_not_found_names_subject_and_path(default_config, tmp_path):
    included, _ = _filtered(default_config)
    with pytest.raises(CohortError) as info:
        cohort.check_paths(included.head(2), root=tmp_path)
    assert len(info.value.problems) >= 2
    assert included["subject_id"].iloc[0] in info.value.problems[0]
    assert "path not found" in info.value.problems[0]


def test_no_subject_passing_is_an_error_that_shows_the_flow(default_config):
    t = _synthetic(default_config)
    t["amputation"] = True
    with pytest.raises(ThighctError) as info:
        cohort.filter_cohort(t, default_config["criteria"], 12, 0, 1)
    assert "amputation" in str(info.value) and "n_after" in str(info.value)


def test_missing_value_fails_a_criterion():
    df = pd.DataFrame({"age": [60.0, np.nan, 40.0]})
    kept, flow = cohort.apply_criteria(
        df, [{"name": "a", "kind": "inclusion", "column": "age", "op": ">", "value": 50}]
    )
    assert len(kept) == 1 and flow["n_excluded"].iloc[0] == 2


def test_sarcopenia_status_uses_per_sex_cutoffs():
    smi = pd.Series([5.3, 5.5, 6.9, 7.1, np.nan])
    sex = pd.Series(["F", "F", "M", "M", "F"])
    st = sarcopenia.sarcopenia_status(smi, sex, {"F": 5.4, "M": 7.0})
    assert st.iloc[:4].tolist() == [1, 0, 1, 0] and pd.isna(st.iloc[4])
    st2 = sarcopenia.sarcopenia_status(smi, sex, {"F": 5.5, "M": 7.0})  # EWGSOP2
    assert st2.iloc[1] == 0
    assert (
        sarcopenia.sarcopenia_status(pd.Series([5.45]), pd.Series(["F"]), {"F": 5.5}).iloc[0] == 1
    )
    # At the cutoff itself: not sarcopenic (AWGS: SMI below the cutoff).
    assert sarcopenia.sarcopenia_status(pd.Series([7.0]), pd.Series(["M"]), {"M": 7.0}).iloc[0] == 0
    assert sarcopenia.subject_sarcopenic(6.99, 7.0) is True
    assert sarcopenia.subject_sarcopenic(7.0, 7.0) is False
    assert sarcopenia.subject_sarcopenic(None, 7.0) is None
    assert sarcopenia.subject_sarcopenic(float("nan"), 7.0) is None


def test_read_cohort_reports_unparseable_file(tmp_path):
    p = tmp_path / "c.tsv"
    p.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ThighctError):
        cohort.validate_cohort(cohort.read_cohort(p), [])
    with pytest.raises(ThighctError, match="not found"):
        cohort.read_cohort(tmp_path / "missing.tsv")


def test_schema_documents_every_clinical_column():
    schema = cohort.load_cohort_schema()
    for col in (
        "subject_id",
        "sex",
        "age",
        "height_cm",
        "weight_kg",
        "smi",
        "image",
        "label",
        "label_rater2",
    ):
        assert "description" in schema["properties"][col]
    _ = io  # keep import for doc examples


# ------------------------------------------------------------------------- chunks of subjects
@pytest.mark.parametrize(
    "n, chunks, size, expected",
    [
        (98, "auto", 25, 4),  # the default cohort: four jobs per stage
        (100, "auto", 25, 4),
        (101, "auto", 25, 8),  # doubles only when the cohort outgrows 4 x 25
        (10_000, "auto", 25, 512),
        (5, "auto", 25, 1),
        (0, "auto", 25, 1),
        (98, 3, 25, 3),
        (98, 0, 25, 98),  # one job per subject
    ],
)
def test_chunk_count(n, chunks, size, expected):
    assert cohort.chunk_count(n, chunks, size) == expected


def test_chunk_subjects_is_stable_when_a_subject_is_added():
    subjects = [f"S{i:04d}" for i in range(200)]
    before = cohort.chunk_subjects(subjects, 8)
    after = cohort.chunk_subjects([*subjects, "NEW"], 8)
    changed = [name for name in after if after[name] != before.get(name)]
    assert len(changed) == 1 and "NEW" in after[changed[0]]
    assert sorted(s for members in before.values() for s in members) == sorted(subjects)
    # Doubling the count splits each chunk in two: a subject's new chunk is its old one or +8.
    doubled = cohort.chunk_subjects(subjects, 16)
    home = {s: int(name[5:]) for name, members in before.items() for s in members}
    assert all(int(name[5:]) % 8 == home[s] for name, ms in doubled.items() for s in ms)
    assert max(len(m) for m in before.values()) <= 2 * 200 / 8
