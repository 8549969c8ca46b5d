"""Sarcopenia statistics (thighct.stats) and Fig 7 / Fig 8 (thighct.plots.sarcopenia)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from conftest import REPO, TINY, run_snakemake
from PIL import Image
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from thighct import stats
from thighct.errors import ThighctError
from thighct.labels import read_labels
from thighct.stats.agreement import _rows_r

AWGS = {"M": 7.0, "F": 5.4}
PAPER_COUNTS = {("F", 1): 20, ("F", 0): 23, ("M", 1): 21, ("M", 0): 5}


@pytest.fixture(scope="module")
def labels():
    return read_labels(REPO / "config" / "labels.tsv")


def make_study(labels, counts=PAPER_COUNTS, effect=None, seed=0, no_smi=2):
    """A cohort and a long volume table in which sarcopenia shrinks every muscle by
    ``effect[sex]`` (fraction) plus noise: men strongly, women hardly, as the paper found."""
    effect = {"M": 0.25, "F": 0.02} if effect is None else effect
    rng = np.random.default_rng(seed)
    cohort, rows = [], []
    k = 0
    for (sex, status), n in counts.items():
        for _ in range(n):
            k += 1
            sid = f"S{k:03d}"
            height = rng.normal(165 if sex == "M" else 152, 6)
            smi = AWGS[sex] + (-0.6 if status else 0.6)
            cohort.append(
                {
                    "subject_id": sid,
                    "sex": sex,
                    "age": rng.normal(77, 9),
                    "height_cm": height,
                    "weight_kg": 21.5 * (height / 100) ** 2 + rng.normal(0, 4),
                    "smi": smi,
                    "split": "unlabelled",
                }
            )
            scale = (1 - effect[sex] * status + rng.normal(0, 0.05)) * (height / 100) ** 2
            for cid in labels.ids[1:]:
                rows.append(
                    {
                        "subject": sid,
                        "class_id": cid,
                        "class_name": labels.name_of(cid),
                        "volume_mm3": 4e4 * (1 + cid % 7) * scale * (1 + rng.normal(0, 0.06)),
                    }
                )
    for j in range(no_smi):
        sid = f"N{j:02d}"
        cohort.append(
            {
                "subject_id": sid,
                "sex": "F",
                "age": 80.0,
                "height_cm": 150.0,
                "weight_kg": 50.0,
                "smi": np.nan,
                "split": "unlabelled",
            }
        )
        rows += [
            {"subject": sid, "class_id": c, "class_name": labels.name_of(c), "volume_mm3": 1e5}
            for c in labels.ids[1:]
        ]
    return pd.DataFrame(cohort), pd.DataFrame(rows)


@pytest.fixture(scope="module")
def made_up(labels):
    """A made-up cohort with the paper's counts and its volume table, adjusted."""
    cohort, volumes = make_study(labels)
    adjusted, excluded = stats.adjusted_volumes(volumes, cohort, labels, AWGS)
    return cohort, volumes, adjusted, excluded


SETTINGS = stats.CorrelationSettings(min_n=10, min_per_status=2, resamples=300, seed=7)


@pytest.fixture(scope="module")
def correlations(made_up):
    adjusted = made_up[2]
    return {f: stats.correlate(adjusted, f, SETTINGS) for f in stats.FAMILIES}


# --------------------------------------------------------------------------- status, volumes
def test_sarcopenia_is_smi_below_the_sex_cutoff():
    smi = pd.Series([5.39, 5.40, 5.45, 6.99, 7.0, np.nan])
    sex = pd.Series(["F", "F", "F", "M", "M", "M"])
    awgs = stats.sarcopenia_status(
        smi, sex, stats.sarcopenia_cutoffs({"awgs2019": AWGS}, "awgs2019")
    )
    assert awgs.tolist()[:5] == [1, 0, 0, 1, 0]
    assert pd.isna(awgs.iloc[5])
    ewgsop2 = stats.sarcopenia_status(smi, sex, {"M": 7.0, "F": 5.5})
    assert ewgsop2.iloc[2] == 1  # 5.45 kg/m² is sarcopenic under EWGSOP2, not under AWGS 2019


def test_unknown_definition_names_the_choices():
    with pytest.raises(ThighctError, match="awgs2019"):
        stats.sarcopenia_cutoffs({"awgs2019": AWGS}, "sarc_f")


def test_paper_counts_and_left_out_subjects(made_up):
    _, _, adjusted, excluded = made_up
    counts = stats.status_counts(adjusted)
    assert counts.loc["F"].tolist() == [20, 23, 43]
    assert counts.loc["M"].tolist() == [21, 5, 26]
    assert len(excluded.analysed) == 69
    assert excluded.no_smi == ["N00", "N01"]
    assert excluded.table()["reason"].tolist() == ["no SMI", "no SMI"]


def test_adjusted_volume_is_volume_over_height_squared_and_groups_sum_members(made_up, labels):
    cohort, volumes, adjusted, _ = made_up
    subject = "S001"
    height_m = cohort.set_index("subject_id").loc[subject, "height_cm"] / 100
    own = adjusted[adjusted["subject"] == subject].set_index("structure")
    sart = volumes[(volumes["subject"] == subject) & (volumes["class_name"] == "sartorius")][
        "volume_mm3"
    ].item()
    assert own.loc["sartorius", "volume_mm3"] == pytest.approx(sart)
    assert own.loc["sartorius", "adjusted_mm3_per_m2"] == pytest.approx(sart / height_m**2)
    for group, members in labels.groups().items():
        names = [labels.name_of(m) for m in members]
        assert own.loc[group, "volume_mm3"] == pytest.approx(own.loc[names, "volume_mm3"].sum())
    assert set(own["family"]) == {"muscles", "groups"}
    assert (own["family"] == "muscles").sum() == 27
    assert (own["family"] == "groups").sum() == 5
    assert "femur" not in own.index  # bone is no muscle


def test_volume_table_group_rows_and_bone_do_not_count_twice(made_up, labels, tmp_path):
    _, volumes, adjusted, _ = made_up
    extra = volumes.groupby("subject", as_index=False)["volume_mm3"].sum()
    extra["class_id"] = pd.NA
    extra["class_name"] = "anterior"  # a group total written as a row
    path = tmp_path / "volumes.tsv"
    pd.concat([volumes, extra]).to_csv(path, sep="\t", index=False)
    again = stats.read_volume_table(path, labels)
    cohort = made_up[0]
    adjusted2, _ = stats.adjusted_volumes(again, cohort, labels, AWGS)
    pd.testing.assert_frame_equal(adjusted2, adjusted)


def test_volume_table_with_repeated_rows_is_refused(made_up, labels, tmp_path):
    volumes = made_up[1]
    path = tmp_path / "volumes.tsv"
    pd.concat([volumes, volumes.head(1)]).to_csv(path, sep="\t", index=False)
    with pytest.raises(ThighctError, match="one row per subject and class"):
        stats.read_volume_table(path, labels)


def test_subjects_without_height_are_left_out(labels):
    cohort, volumes = make_study(labels, counts={("F", 1): 6, ("F", 0): 6}, no_smi=0)
    cohort.loc[0, "height_cm"] = np.nan
    adjusted, excluded = stats.adjusted_volumes(volumes, cohort, labels, AWGS)
    assert excluded.no_height == ["S001"]
    assert adjusted["subject"].nunique() == 11


def test_no_subject_left_is_an_error_with_a_fix(labels):
    cohort, volumes = make_study(labels, counts={("F", 1): 3}, no_smi=0)
    cohort["smi"] = np.nan
    with pytest.raises(ThighctError, match="SMI"):
        stats.adjusted_volumes(volumes, cohort, labels, AWGS)


# --------------------------------------------------------------------------- correlations
def test_correlations_equal_scipy_pointbiserialr(made_up, correlations):
    adjusted = made_up[2]
    table = pd.concat(correlations.values())
    assert len(table) == 2 * (27 + 5)
    for row in table.itertuples():
        sub = adjusted[(adjusted["sex"] == row.sex) & (adjusted["structure"] == row.structure)]
        expect = sps.pointbiserialr(sub["sarcopenic"].astype(int), sub["adjusted_mm3_per_m2"])
        assert row.n == len(sub)
        assert row.r == pytest.approx(expect.statistic, abs=1e-12)
        assert row.p == pytest.approx(expect.pvalue, rel=1e-9)
        assert row.ci_low < row.r < row.ci_high
        assert row.boot_ci_low < row.r < row.boot_ci_high


def test_fdr_equals_statsmodels_multipletests_within_sex_and_family(correlations):
    for family, table in correlations.items():
        for sex, part in table.groupby("sex"):
            expect = multipletests(part["p"], method="fdr_bh")[1]
            np.testing.assert_allclose(part["p_fdr"], expect, rtol=1e-12, err_msg=f"{family} {sex}")
            assert (part["significant"] == (expect < 0.05)).all()


def test_men_strongly_negative_women_weak(correlations):
    muscles = correlations["muscles"]
    men = muscles[muscles["sex"] == "M"]
    women = muscles[muscles["sex"] == "F"]
    assert men["r"].median() < -0.6
    assert men["significant"].mean() > 0.8
    assert women["r"].abs().median() < 0.3
    groups = correlations["groups"]
    assert (groups.loc[groups["sex"] == "M", "r"] < -0.6).all()


def test_predicted_and_true_correlations_compare_structure_by_structure(
    labels, made_up, correlations
):
    cohort, volumes, _, _ = made_up
    noisy = volumes.copy()
    noisy["volume_mm3"] *= 1 + np.random.default_rng(3).normal(0, 0.01, len(noisy))
    adjusted, _ = stats.adjusted_volumes(noisy, cohort, labels, AWGS)
    predicted = stats.correlate(adjusted, "muscles", SETTINGS)
    both = stats.compare_correlations(predicted, correlations["muscles"])
    assert len(both) == 54
    assert both["delta_r"].abs().max() < 0.1  # 1 % volume noise barely moves r


def test_precision_floor_tells_random_error_from_error_that_follows_status(labels, made_up):
    cohort, volumes, _, _ = made_up
    truth, _ = stats.adjusted_volumes(volumes, cohort, labels, AWGS)
    rng = np.random.default_rng(5)
    noisy = volumes.copy()
    # Unbiased 4 % error everywhere; in men, the sartorius also drawn 25 % larger when
    # sarcopenic (as a segmentation that misses more of a larger muscle).
    noisy["volume_mm3"] *= np.exp(rng.normal(0, 0.04, len(noisy)))
    smi = noisy["subject"].map(dict(zip(cohort.subject_id, cohort.smi, strict=True)))
    sex = noisy["subject"].map(dict(zip(cohort.subject_id, cohort.sex, strict=True)))
    biased = (noisy["class_name"] == "sartorius") & (sex == "M") & (smi < 7.0)
    noisy.loc[biased, "volume_mm3"] *= 1.25
    ours, _ = stats.adjusted_volumes(noisy, cohort, labels, AWGS)
    floor = stats.precision_floor(ours, truth, resamples=1000, seed=1)
    muscles = floor[floor["family"] == "muscles"]
    assert len(muscles) == 2 * 27 and muscles["error_sd"].notna().all()
    # The error's size is recovered (27 muscles x 2 sexes, n = 26 and 43).
    assert 0.03 < muscles["error_sd"].median() < 0.05
    assert (muscles["floor_p95_abs_delta_r"] > muscles["floor_mean_abs_delta_r"]).all()
    # The same volumes: no error, no floor. Seeded: the same call, the same floor.
    exact = stats.precision_floor(truth, truth, resamples=200, seed=1)
    assert np.allclose(exact["error_sd"], 0) and np.allclose(exact["floor_p95_abs_delta_r"], 0)
    again = stats.precision_floor(ours, truth, resamples=1000, seed=1)
    pd.testing.assert_frame_equal(floor, again)
    # Larger random error, higher floor.
    wider = noisy.copy()
    wider["volume_mm3"] *= np.exp(rng.normal(0, 0.08, len(wider)))
    wide, _ = stats.adjusted_volumes(wider, cohort, labels, AWGS)
    wide_floor = stats.precision_floor(wide, truth, resamples=1000, seed=1)
    assert (
        wide_floor["floor_mean_abs_delta_r"].median()
        > 1.5 * floor["floor_mean_abs_delta_r"].median()
    )
    # The agreement table flags the biased structure: its |delta r| is beyond its floor.
    table = stats.truth_agreement_table(
        stats.compare_correlations(
            stats.correlate(ours, "muscles", SETTINGS), stats.correlate(truth, "muscles", SETTINGS)
        ).merge(floor, on=["sex", "family", "structure"])
    )
    row = table[(table["sex"] == "M") & (table["structure"] == "sartorius")].iloc[0]
    assert row["above_floor"] and row["abs_delta_r"] > 2 * row["floor_p95_abs_delta_r"]
    # Unbiased error: about 5 % of the structures beyond their 95th percentile, not more.
    assert table["above_floor"].sum() <= 6


def test_rows_r_is_pearsons_r_of_each_row():
    rng = np.random.default_rng(2)
    status = (rng.random(30) < 0.4).astype(float)
    values = rng.normal(size=(5, 30)) + status
    want = [np.corrcoef(status, row)[0, 1] for row in values]
    np.testing.assert_allclose(_rows_r(status, values), want, rtol=1e-12)


def test_truth_agreement_table_and_summary_section(labels, made_up, correlations):
    cohort, volumes, _, _ = made_up
    shrunk = volumes.copy()
    # A segmentation that misses half the Sartorius in sarcopenic men moves their r.
    men = set(cohort.loc[cohort["sex"] == "M", "subject_id"])
    hit = volumes["subject"].isin(men) & (volumes["class_name"] == "sartorius")
    shrunk.loc[hit, "volume_mm3"] *= np.where(
        volumes.loc[hit, "subject"].map(dict(zip(cohort.subject_id, cohort.smi, strict=True)))
        < 7.0,
        0.5,
        1.0,
    )
    adjusted, _ = stats.adjusted_volumes(shrunk, cohort, labels, AWGS)
    predicted = stats.correlate(adjusted, "muscles", SETTINGS)
    table = stats.truth_agreement_table(
        stats.compare_correlations(predicted, correlations["muscles"])
    )
    worst = table.loc[table["abs_delta_r"].idxmax()]
    assert (worst["sex"], worst["structure"]) == ("M", "sartorius")
    assert worst["abs_delta_r"] > 0.1
    others = table[table["structure"] != "sartorius"]
    assert others["abs_delta_r"].max() < 1e-12
    sentence = stats.agreement_sentence(table)
    assert "Male muscles: max |Δr|" in sentence and "(sartorius)" in sentence
    text = stats.summary_markdown(
        stats.status_counts(adjusted),
        {"muscles": predicted},
        None,
        source="unetr",
        definition="awgs2019",
        cutoffs=AWGS,
        alpha=0.05,
        agreement=table,
    )
    assert "## Agreement with the generator's true volumes" in text
    row = next(line for line in text.splitlines() if line.startswith("| unetr | Male | muscles"))
    assert f"{worst['abs_delta_r']:.3f} (sartorius)" in row


def test_bootstrap_ci_is_deterministic_for_a_seed(made_up):
    adjusted = made_up[2]
    a = stats.correlate(adjusted, "groups", SETTINGS)
    b = stats.correlate(adjusted, "groups", SETTINGS)
    pd.testing.assert_frame_equal(a, b)
    c = stats.correlate(
        adjusted, "groups", stats.CorrelationSettings(min_n=10, resamples=300, seed=8)
    )
    assert not np.allclose(a["boot_ci_low"], c["boot_ci_low"])


@pytest.mark.parametrize(
    ("counts", "constant", "reason"),
    [
        ({("F", 1): 6, ("F", 0): 6, ("M", 1): 2, ("M", 0): 1}, False, "too few subjects"),
        ({("F", 1): 6, ("F", 0): 6, ("M", 1): 12}, False, "no variation in sarcopenia status"),
        (
            {("F", 1): 6, ("F", 0): 6, ("M", 1): 11, ("M", 0): 1},
            False,
            "too few subjects in one status",
        ),
        ({("F", 1): 6, ("F", 0): 6, ("M", 1): 6, ("M", 0): 6}, True, "constant"),
        ({("F", 1): 6, ("F", 0): 6}, False, "too few subjects"),
    ],
)
def test_degenerate_sex_gives_nan_with_a_reason(labels, counts, constant, reason):
    cohort, volumes = make_study(labels, counts=counts, no_smi=0)
    if constant:
        men = set(cohort.loc[cohort["sex"] == "M", "subject_id"])
        volumes.loc[volumes["subject"].isin(men), "volume_mm3"] = 1e5
        cohort.loc[cohort["sex"] == "M", "height_cm"] = 165.0
    adjusted, _ = stats.adjusted_volumes(volumes, cohort, labels, AWGS)
    settings = stats.CorrelationSettings(min_n=10, min_per_status=2, resamples=50, seed=1)
    for family in stats.FAMILIES:
        table = stats.correlate(adjusted, family, settings)
        men, women = table[table["sex"] == "M"], table[table["sex"] == "F"]
        assert len(men) == len(women) > 0
        assert men[["r", "p", "p_fdr", "ci_low", "boot_ci_low"]].isna().all().all()
        assert men["reason"].str.contains(reason).all()
        assert not men["significant"].any()
        assert women["r"].notna().all() and (women["reason"] == "").all()


# --------------------------------------------------------------------------- logistic models
def test_logistic_odds_ratio_per_sd_matches_statsmodels(made_up):
    adjusted = made_up[2]
    settings = stats.LogisticSettings(covariates=("age", "bmi"))
    models = stats.logistic_models(adjusted, "groups", settings)
    row = models[(models["sex"] == "F") & (models["structure"] == "medial")].iloc[0]
    sub = adjusted[(adjusted["sex"] == "F") & (adjusted["structure"] == "medial")]
    z = lambda x: (x - x.mean()) / x.std(ddof=1)  # noqa: E731
    design = sm.add_constant(
        pd.DataFrame(
            {"v": z(sub["adjusted_mm3_per_m2"]), "age": z(sub["age"]), "bmi": z(sub["bmi"])}
        )
    )
    fit = sm.Logit(sub["sarcopenic"].astype(float), design).fit(disp=0)
    assert row["reason"] == ""
    assert row["odds_ratio"] == pytest.approx(np.exp(fit.params["v"]), rel=1e-6)
    assert row["ci_low"] < row["odds_ratio"] < row["ci_high"]
    assert row["covariates"] == "age, bmi"


def test_perfect_separation_gives_nan_and_a_reason_not_a_crash(labels):
    # 5 non-sarcopenic men, all clearly larger: the status is predicted exactly.
    cohort, volumes = make_study(
        labels,
        counts={("M", 1): 21, ("M", 0): 5, ("F", 1): 8, ("F", 0): 8},
        effect={"M": 0.6, "F": 0.0},
        no_smi=0,
    )
    adjusted, _ = stats.adjusted_volumes(volumes, cohort, labels, AWGS)
    models = stats.logistic_models(adjusted, "groups", stats.LogisticSettings())
    men = models[models["sex"] == "M"]
    assert men["odds_ratio"].isna().all()
    assert men["reason"].str.contains("separation|converge").all()
    assert men["note"].str.contains("few events").all()
    assert models.loc[models["sex"] == "F", "odds_ratio"].notna().all()


def test_bmi_is_dropped_where_weight_is_missing(made_up):
    adjusted = made_up[2].copy()
    adjusted.loc[adjusted["sex"] == "F", "bmi"] = np.nan
    models = stats.logistic_models(adjusted, "groups", stats.LogisticSettings())
    women = models[models["sex"] == "F"]
    assert (women["covariates"] == "age").all()
    assert women["note"].str.contains("not adjusted for bmi").all()


# --------------------------------------------------------------------------- summary, figures
def test_summary_compares_counts_with_the_paper(made_up, correlations):
    adjusted = made_up[2]
    text = stats.summary_markdown(
        stats.status_counts(adjusted),
        correlations,
        None,
        source="unetr",
        definition="awgs2019",
        cutoffs=AWGS,
        alpha=0.05,
        reference_counts={"sarcopenic": {"F": 20, "M": 21}, "non_sarcopenic": {"F": 23, "M": 5}},
        reference_r={"M": {"adductor_magnus": -0.83}},
    )
    assert "| Male | 21 (21) | 5 (5) | 26 (26) |" in text
    assert "| Female | 20 (20) | 23 (23) | 43 (43) |" in text
    assert "Adductor magnus r = " in text and "paper -0.83" in text


@pytest.mark.parametrize(
    ("family", "n_structures", "name", "stacked"),
    [("muscles", 27, "Vastus lateralis", True), ("groups", 5, "Posterior", False)],
)
def test_heatmap_has_both_panels_with_labels(
    made_up, correlations, labels, tmp_path, family, n_structures, name, stacked
):
    from thighct.plots.sarcopenia import plot_correlation_heatmaps

    png = tmp_path / f"{family}.png"
    groups = dict(zip(labels.table["name"], labels.table["group"], strict=True))
    fig = plot_correlation_heatmaps(
        made_up[2],
        correlations[family],
        family,
        png,
        groups=groups,
        dpi=40,
        source="UNETR predictions",
    )
    assert png.exists() and png.with_suffix(".pdf").exists()
    # The caption says whose volumes these are.
    assert (
        fig._supxlabel.get_text()
        .replace("\n", " ")
        .startswith("Volumes from UNETR predictions, adjusted by height")
    )
    width, height = Image.open(png).size
    # Fig 7: A above B, one page wide (7.5 in); Fig 8: A beside B.
    if stacked:
        assert height > 1.3 * width and width <= 7.6 * 40
    else:
        assert width > 1.8 * height
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    assert titles == ["A   Female", "B   Male"]
    tick_texts = [[t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes]
    row_labels = [t for t in tick_texts if name in t]
    assert len(row_labels) == 2 and all(len(t) == n_structures for t in row_labels)
    column_headers = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels()]
    assert column_headers.count("Sarcopenia") == 2
    # The sarcopenia column prints r with the FDR mark.
    men_r = correlations[family].query("sex == 'M'")["r"].iloc[0]
    printed = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert f"{men_r:.2f}".replace("-", "\u2212") + "*" in printed


def test_heatmap_of_a_degenerate_sex_still_draws_both_panels(labels, tmp_path):
    from thighct.plots.sarcopenia import plot_correlation_heatmaps

    cohort, volumes = make_study(labels, counts={("F", 1): 6, ("F", 0): 6, ("M", 1): 3}, no_smi=0)
    adjusted, _ = stats.adjusted_volumes(volumes, cohort, labels, AWGS)
    table = stats.correlate(adjusted, "groups", stats.CorrelationSettings(min_n=4, resamples=0))
    fig = plot_correlation_heatmaps(adjusted, table, "groups", tmp_path / "f.png", dpi=30)
    assert [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")] == [
        "A   Female",
        "B   Male",
    ]
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    flat = [t.replace("\n", " ") for t in texts]
    assert any("not computed" in t and "too few subjects (n=3" in t for t in flat)


def test_forest_plot_says_why_a_model_is_missing(labels, tmp_path):
    from thighct.plots.sarcopenia import plot_adjusted_models

    cohort, volumes = make_study(
        labels,
        counts={("M", 1): 21, ("M", 0): 5, ("F", 1): 8, ("F", 0): 8},
        effect={"M": 0.6, "F": 0.0},
        no_smi=0,
    )
    adjusted, _ = stats.adjusted_volumes(volumes, cohort, labels, AWGS)
    models = stats.logistic_models(adjusted, "groups", stats.LogisticSettings())
    fig = plot_adjusted_models(models, tmp_path / "forest.png", dpi=40)
    assert (tmp_path / "forest.png").exists()
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["A   Female", "B   Male"]
    assert "Odds ratio" in fig.axes[0].get_xlabel()
    assert any("not estimable" in t.get_text() for t in fig.axes[1].texts)


def test_stats_and_plots_import_no_torch_or_monai():
    code = (
        "import sys, thighct.stats, thighct.plots.sarcopenia; "
        "bad = [m for m in ('torch', 'monai') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- workflow
@pytest.mark.workflow
def test_fig7_fig8_and_summary_build_from_volumes_and_cohort(labels, tmp_path):
    """The sarcopenia stage alone: given a volume table and the included cohort, Snakemake
    builds the tables, Fig 7, Fig 8, the summary, and the same correlations for another source."""
    cohort, volumes = make_study(labels)
    (tmp_path / "results" / "cohort").mkdir(parents=True)
    (tmp_path / "results" / "volumes").mkdir(parents=True)
    cohort.to_csv(tmp_path / "results/cohort/included.tsv", sep="\t", index=False)
    volumes.to_csv(tmp_path / "results/volumes/unetr.tsv", sep="\t", index=False)
    volumes.to_csv(tmp_path / "results/volumes/ground_truth.tsv", sep="\t", index=False)
    # The generator's truth (synthetic cohort): the same volumes, the adductor longus 40 %
    # smaller in sarcopenic men, so the agreement table has one structure that moved.
    truth = volumes.rename(columns={"class_name": "name"})
    sarcopenic_men = set(cohort.loc[(cohort["sex"] == "M") & (cohort["smi"] < 7.0), "subject_id"])
    moved = truth["subject"].isin(sarcopenic_men) & (truth["name"] == "adductor_longus")
    truth.loc[moved, "volume_mm3"] *= 0.6
    (tmp_path / "results" / "synthetic").mkdir(parents=True)
    truth.to_csv(tmp_path / "results/synthetic/truth.tsv", sep="\t", index=False)
    targets = [
        "results/figures/fig7_heatmap.png",
        "results/figures/fig8_heatmap.png",
        "results/sarcopenia/summary.md",
        "results/figures/adjusted_models.png",
        "results/sarcopenia/by_source/ground_truth/correlations_groups.tsv",
    ]
    rules = [
        "adjust_volumes",
        "correlate",
        "fig7_heatmap",
        "fig8_heatmap",
        "adjusted_models",
        "adjusted_models_plot",
        "sarcopenia_summary",
        "adjust_volumes_by_source",
        "correlate_by_source",
        "truth_agreement",
    ]
    volumes.to_csv(tmp_path / "results/volumes/unet.tsv", sep="\t", index=False)
    run_snakemake(tmp_path, "--cores", "2", *targets, "--allowed-rules", *rules, configfiles=[TINY])
    for t in targets:
        assert (tmp_path / t).exists(), t
    ours = pd.read_csv(tmp_path / "results/sarcopenia/correlations_groups.tsv", sep="\t")
    other = pd.read_csv(
        tmp_path / "results/sarcopenia/by_source/ground_truth/correlations_groups.tsv", sep="\t"
    )
    np.testing.assert_allclose(ours["r"], other["r"])  # same volumes, same r
    assert (ours.loc[ours["sex"] == "M", "r"] < -0.6).all()
    summary = (tmp_path / "results/sarcopenia/summary.md").read_text()
    assert "| Male | 21 (21) | 5 (5) | 26 (26) |" in summary
    agreement = pd.read_csv(tmp_path / "results/sarcopenia/truth_agreement.tsv", sep="\t")
    assert {"r_source", "r_truth", "delta_r", "abs_delta_r"} <= set(agreement.columns)
    assert {"error_sd", "floor_mean_abs_delta_r", "floor_p95_abs_delta_r"} <= set(agreement.columns)
    assert set(agreement["source"]) == {"unetr", "unet"}
    moved_rows = agreement[(agreement["abs_delta_r"] > 1e-9) & (agreement["source"] == "unetr")]
    assert set(zip(moved_rows["sex"], moved_rows["structure"], strict=True)) == {
        ("M", "adductor_longus"),
        ("M", "medial"),  # its group, the sum of its members
    }
    # The move follows status exactly (no random error): beyond the floor, the rest are not.
    flagged = agreement[agreement["above_floor"] & (agreement["source"] == "unetr")]
    assert set(zip(flagged["sex"], flagged["structure"], strict=True)) == {
        ("M", "adductor_longus"),
        ("M", "medial"),
    }
    assert "(adductor_longus)" in summary.split("## Agreement with the generator")[1]
