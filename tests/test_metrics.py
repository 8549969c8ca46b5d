"""Segmentation metrics, their summaries, ICC and the Fig 5 table (thighct.metrics)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats
from scipy.spatial.distance import cdist

from thighct import metrics as M

REPO = Path(__file__).resolve().parents[1]
SPACING = (0.8, 1.1, 2.5)  # anisotropic on purpose: every axis has its own voxel size (mm)
SHELL_SETTINGS = [0, 8, M.MAX_SHELL_OFFSETS]  # KD-tree only, a few lattice shells, the default


# ------------------------------------------------------------------------------ helpers
def smooth_labels(shape, n_labels, seed, background=0.3):
    """Random touching blobs: argmax of smoothed noise; the lowest `background` fraction is 0."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((n_labels - 1, *shape)), (0, 2.5, 2.5, 1.5))
    labels = (field.argmax(axis=0) + 1).astype(np.uint8)
    top = field.max(axis=0)
    labels[top < np.quantile(top, background)] = 0
    return labels


def brute_force_directed(src_mask, tgt_mask, spacing):
    """Distances from each boundary voxel of src to the nearest boundary voxel of tgt, all pairs."""
    a = np.argwhere(src_mask ^ ndimage.binary_erosion(src_mask)) * np.asarray(spacing)
    b = np.argwhere(tgt_mask ^ ndimage.binary_erosion(tgt_mask)) * np.asarray(spacing)
    return cdist(a, b).min(axis=1)


def reference_metrics(d_pg, d_gp):
    pooled = np.concatenate([d_pg, d_gp])
    return {
        "hd_mm": max(d_pg.max(), d_gp.max()),
        "hd95_mm": max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)),
        "hd95_pooled_mm": np.percentile(pooled, 95),
        "assd_mm": pooled.mean(),
    }


def box_boundary_voxels(lo, hi):
    """Voxel indices on the faces of the box [lo, hi] (inclusive)."""
    grid = np.stack(
        np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)], indexing="ij"), -1
    )
    grid = grid.reshape(-1, 3)
    on_face = ((grid == np.asarray(lo)) | (grid == np.asarray(hi))).any(axis=1)
    return grid[on_face]


def distance_to_box_boundary(points, lo, hi, spacing):
    """Analytic distance (mm) from voxels to the face voxels of the box [lo, hi].

    Outside the box the nearest face voxel is the point clamped into the box; inside it is
    the perpendicular foot on the nearest face (faces are full rectangles of voxels).
    """
    p, lo, hi, s = (np.asarray(v, dtype=float) for v in (points, lo, hi, spacing))
    excess = np.maximum(lo - p, 0) + np.maximum(p - hi, 0)
    outside = (excess > 0).any(axis=1)
    d_out = np.sqrt(((excess * s) ** 2).sum(axis=1))
    d_in = (np.minimum(p - lo, hi - p) * s).min(axis=1)
    return np.where(outside, d_out, d_in)


def box_mask(shape, lo, hi):
    m = np.zeros(shape, dtype=np.uint8)
    m[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1] = 1
    return m


# --------------------------------------------------------------------------- definitions
def test_boundary_is_mask_xor_erosion_with_face_neighbours():
    # Includes voxels on the array's faces: outside the volume counts as outside the mask.
    rng = np.random.default_rng(1)
    for _ in range(5):
        mask = ndimage.gaussian_filter(rng.random((17, 13, 9)), 1.5) > 0.5
        mask[0, :, :] |= rng.random((13, 9)) > 0.5
        expected = mask ^ ndimage.binary_erosion(mask)  # scipy default: cross (6-neighbour)
        np.testing.assert_array_equal(M.boundary(mask), expected)


def test_lattice_shells_hold_every_offset_up_to_their_radius():
    shells = M.lattice_shells(np.array(SPACING), 100)
    r = np.ceil(shells.radius_mm / np.array(SPACING)).astype(int) + 1
    grid = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in r], indexing="ij"), -1).reshape(
        -1, 3
    )
    lengths = np.sqrt(((grid * SPACING) ** 2).sum(axis=1))
    inside = (lengths > 0) & (lengths <= shells.radius_mm + 1e-12)
    assert len(shells.offsets) == inside.sum() <= 100
    assert np.all(np.diff(shells.lengths) >= 0)


def test_confusion_matrix_counts_every_pair_of_labels():
    p = smooth_labels((20, 18, 10), 6, 3)
    g = smooth_labels((20, 18, 10), 6, 4)
    expected = np.zeros((6, 6), int)
    np.add.at(expected, (g.ravel(), p.ravel()), 1)
    np.testing.assert_array_equal(M.confusion_matrix(p, g, 6), expected)
    np.testing.assert_array_equal(
        M.confusion_matrix(np.asfortranarray(p), np.asfortranarray(g), 6), expected
    )


# ----------------------------------------------------------------------- analytic cases
@pytest.mark.parametrize("max_shell_offsets", SHELL_SETTINGS)
def test_dice_of_a_mask_with_itself_is_1_and_distances_0(max_shell_offsets):
    labels = smooth_labels((24, 20, 12), 5, 0)
    df = M.segmentation_metrics(
        labels, labels, SPACING, [1, 2, 3, 4], max_shell_offsets=max_shell_offsets
    )
    assert np.allclose(df["dice"], 1.0)
    for col in ("hd_mm", "hd95_mm", "hd95_pooled_mm", "assd_mm", "ravd"):
        assert np.allclose(df[col], 0.0), col
    voxel = np.prod(SPACING)
    np.testing.assert_allclose(
        df["volume_true_mm3"], [np.sum(labels == c) * voxel for c in (1, 2, 3, 4)]
    )


@pytest.mark.parametrize("max_shell_offsets", SHELL_SETTINGS)
@pytest.mark.parametrize("axis", [0, 1, 2, None])
@pytest.mark.parametrize("k", [1, 3])
def test_box_against_the_same_box_shifted_by_k_voxels(axis, k, max_shell_offsets):
    shape, lo, hi = (30, 26, 16), np.array([5, 4, 3]), np.array([16, 14, 9])
    shift = np.array([k, k, k]) if axis is None else np.eye(3, dtype=int)[axis] * k
    pred, truth = box_mask(shape, lo, hi), box_mask(shape, lo + shift, hi + shift)
    row = M.segmentation_metrics(
        pred, truth, SPACING, [1], max_shell_offsets=max_shell_offsets
    ).iloc[0]

    d_pg = distance_to_box_boundary(box_boundary_voxels(lo, hi), lo + shift, hi + shift, SPACING)
    d_gp = distance_to_box_boundary(box_boundary_voxels(lo + shift, hi + shift), lo, hi, SPACING)
    expected = reference_metrics(d_pg, d_gp)
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, abs=1e-9), key
    # The Hausdorff distance is the shift itself: the far face moves by k voxels.
    assert row["hd_mm"] == pytest.approx(np.sqrt(((shift * SPACING) ** 2).sum()), abs=1e-9)
    overlap = np.prod(hi - lo + 1 - shift)
    assert row["dice"] == pytest.approx(overlap / np.prod(hi - lo + 1))
    assert row["ravd"] == 0.0


@pytest.mark.parametrize("max_shell_offsets", SHELL_SETTINGS)
def test_sphere_against_a_larger_concentric_sphere(max_shell_offsets):
    # Physical radii 6 mm and 9 mm: every surface distance of the continuous spheres is 3 mm.
    shape = (32, 24, 11)
    centre = (np.array(shape) - 1) / 2 * SPACING
    grid = np.stack(
        np.meshgrid(
            *[np.arange(n) * s for n, s in zip(shape, SPACING, strict=True)], indexing="ij"
        ),
        -1,
    )
    r = np.sqrt(((grid - centre) ** 2).sum(-1))
    small, large = (r <= 6.0).astype(np.uint8), (r <= 9.0).astype(np.uint8)
    row = M.segmentation_metrics(
        small, large, SPACING, [1], max_shell_offsets=max_shell_offsets
    ).iloc[0]

    expected = reference_metrics(
        brute_force_directed(small > 0, large > 0, SPACING),
        brute_force_directed(large > 0, small > 0, SPACING),
    )
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, abs=1e-9), key
    # Voxelised, the surfaces sit within one voxel of the continuous ones.
    assert abs(row["assd_mm"] - 3.0) < max(SPACING)
    assert abs(row["hd_mm"] - 3.0) < max(SPACING)
    n_small, n_large = int(small.sum()), int(large.sum())
    assert row["ravd"] == pytest.approx((n_small - n_large) / n_large)


def test_distances_beyond_the_lattice_shells_come_from_the_kd_tree():
    # A far island in the prediction: its distance is longer than any shell radius.
    truth = box_mask((40, 12, 8), [2, 2, 2], [6, 6, 5])
    pred = truth.copy()
    pred[35:38, 4:6, 3:5] = 1
    row = M.segmentation_metrics(pred, truth, SPACING, [1], max_shell_offsets=8).iloc[0]
    d_pg = brute_force_directed(pred > 0, truth > 0, SPACING)
    d_gp = brute_force_directed(truth > 0, pred > 0, SPACING)
    assert row["hd_mm"] == pytest.approx((37 - 6) * SPACING[0])  # far end of the island
    for key, value in reference_metrics(d_pg, d_gp).items():
        assert row[key] == pytest.approx(value, abs=1e-9), key


def test_hd95_conventions_differ_when_one_surface_has_far_outliers():
    # An island holding 6.5% of the prediction's boundary voxels (3.4% of both boundaries):
    # the directed 95th percentile (MONAI) lands on it, the pooled one (MedPy) does not.
    truth = box_mask((60, 20, 10), [2, 2, 2], [15, 15, 7])
    pred = truth.copy()
    pred[50:55, 5:8, 3:6] = 1
    row = M.segmentation_metrics(pred, truth, SPACING, [1]).iloc[0]
    assert row["hd95_mm"] > 20 * row["hd95_pooled_mm"]


# ------------------------------------------------------------------ empty-mask rules
def test_empty_mask_rules():
    truth = np.zeros((10, 10, 6), np.uint8)
    pred = np.zeros_like(truth)
    truth[1:4, 1:4, 1:3] = 1  # class 1 only in truth
    pred[5:8, 5:8, 2:4] = 2  # class 2 only in prediction
    truth[6:9, 1:3, 1:5] = 3  # class 3 in both
    pred[6:9, 1:3, 1:5] = 3
    df = M.segmentation_metrics(pred, truth, SPACING, [1, 2, 3, 4]).set_index("class_id")
    distances = ["assd_mm", "hd_mm", "hd95_mm", "hd95_pooled_mm"]
    assert df.loc[1, "dice"] == 0 and df.loc[1, distances].isna().all() and df.loc[1, "ravd"] == -1
    assert (
        df.loc[2, "dice"] == 0
        and df.loc[2, distances].isna().all()
        and math.isnan(df.loc[2, "ravd"])
    )
    assert df.loc[3, "dice"] == 1 and (df.loc[3, distances] == 0).all()
    assert df.loc[4, ["dice", "ravd", *distances]].isna().all()  # absent from both


def test_summary_leaves_absent_classes_out_and_counts_misses():
    rows = []
    for subject, (vp, vt, dice, assd) in {
        "s1": (100.0, 110.0, 0.9, 1.0),
        "s2": (0.0, 50.0, 0.0, math.nan),  # missed by the prediction
        "s3": (0.0, 0.0, math.nan, math.nan),  # absent from both
        "s4": (200.0, 190.0, 0.8, 2.0),
    }.items():
        rows.append(
            {
                "subject": subject,
                "class_id": 1,
                "class": "sartorius",
                "dice": dice,
                "assd_mm": assd,
                "hd_mm": assd,
                "hd95_mm": assd,
                "ravd": (vp - vt) / vt if vt else math.nan,
                "hd95_pooled_mm": assd,
                "volume_pred_mm3": vp,
                "volume_true_mm3": vt,
            }
        )
    s = M.summarise_metrics(pd.DataFrame(rows)).iloc[0]
    assert s["n_subjects"] == 3 and s["misses"] == 1
    assert s["dice_mean"] == pytest.approx((0.9 + 0.0 + 0.8) / 3)
    assert s["assd_mm_mean"] == pytest.approx(1.5)
    assert s["vc"] == pytest.approx(np.corrcoef([100, 0, 200], [110, 50, 190])[0, 1])
    # Two subjects with both volumes: too few for a slope.
    assert math.isnan(s["volume_slope"])


def test_volume_slope_is_one_for_proportional_volumes_and_shows_shrinkage():
    true = np.array([80.0, 100.0, 130.0, 170.0, 220.0])
    assert M.volume_slope(0.9 * true, true) == pytest.approx(1.0)
    # Larger structures drawn relatively smaller: pred = true ** 0.8 (times a constant).
    assert M.volume_slope(5.0 * true**0.8, true) == pytest.approx(0.8)
    # scipy's regression of the logs on the same pairs; a missed subject is left out.
    pred = np.array([70.0, 0.0, 120.0, 150.0, 210.0])
    keep = pred > 0
    expected = stats.linregress(np.log(true[keep]), np.log(pred[keep])).slope
    assert M.volume_slope(pred, true) == pytest.approx(expected)
    assert math.isnan(M.volume_slope(true, np.full(5, 100.0)))
    # VC cannot see it: shrunken volumes still correlate almost perfectly.
    assert M.pearson_r(5.0 * true**0.8, true) > 0.99


# --------------------------------------------------------------- agreement with MONAI/MedPy
@pytest.fixture(scope="module")
def random_pair():
    pred = smooth_labels((28, 24, 14), 6, 10)
    truth = smooth_labels((28, 24, 14), 6, 11)
    truth = np.where(np.random.default_rng(5).random(truth.shape) < 0.7, pred, truth).astype(
        np.uint8
    )
    truth = ndimage.median_filter(truth, 3)
    pred[pred == 5] = 0  # class 5 missed by the prediction
    return pred, truth


@pytest.mark.parametrize("max_shell_offsets", SHELL_SETTINGS)
def test_agrees_with_monai_metric_api(random_pair, max_shell_offsets):
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    pred, truth = random_pair
    ids = [1, 2, 3, 4]
    ours = M.segmentation_metrics(pred, truth, SPACING, ids, max_shell_offsets=max_shell_offsets)

    def onehot(a):
        return (
            torch.nn.functional.one_hot(torch.as_tensor(a).long(), 6)
            .permute(3, 0, 1, 2)[None]
            .float()
        )

    yp, yg = onehot(pred), onehot(truth)
    kw = {"include_background": False}
    dice = monai_metrics.compute_dice(yp, yg, **kw)[0, :4].numpy()
    hd = monai_metrics.compute_hausdorff_distance(yp, yg, spacing=SPACING, **kw)[0, :4].numpy()
    hd95 = monai_metrics.compute_hausdorff_distance(yp, yg, spacing=SPACING, percentile=95, **kw)[
        0, :4
    ].numpy()
    assd = monai_metrics.compute_average_surface_distance(
        yp, yg, spacing=SPACING, symmetric=True, **kw
    )
    np.testing.assert_allclose(ours["dice"], dice, atol=1e-6)
    np.testing.assert_allclose(ours["hd_mm"], hd, atol=1e-5)
    np.testing.assert_allclose(ours["hd95_mm"], hd95, atol=1e-5)
    np.testing.assert_allclose(ours["assd_mm"], assd[0, :4].numpy(), atol=1e-5)


def test_hd95_pooled_and_assd_agree_with_medpy(random_pair):
    medpy_binary = pytest.importorskip("medpy.metric.binary")
    pred, truth = random_pair
    ours = M.segmentation_metrics(pred, truth, SPACING, [1, 2, 3, 4])
    for c, row in zip([1, 2, 3, 4], ours.itertuples(), strict=True):
        p, g = pred == c, truth == c
        assert row.hd95_pooled_mm == pytest.approx(
            medpy_binary.hd95(p, g, voxelspacing=SPACING), abs=1e-9
        )
        # MedPy 0.5 pools both directions for its assd too (MedPy <= 0.4 averaged two means).
        assert row.assd_mm == pytest.approx(medpy_binary.assd(p, g, voxelspacing=SPACING), abs=1e-9)


def test_label_map_dtype_and_memory_order_do_not_change_results(random_pair):
    pred, truth = random_pair
    a = M.segmentation_metrics(pred, truth, SPACING, [1, 2, 3, 4, 5])
    b = M.segmentation_metrics(
        np.asfortranarray(pred.astype(np.int16)),
        np.asfortranarray(truth.astype(np.int32)),
        SPACING,
        [1, 2, 3, 4, 5],
    )
    pd.testing.assert_frame_equal(a, b)


def test_mismatched_maps_are_refused():
    with pytest.raises(ValueError, match="shape"):
        M.segmentation_metrics(
            np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3, 4), np.uint8), SPACING, [1]
        )
    with pytest.raises(ValueError, match="integer"):
        M.segmentation_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), SPACING, [1])


# --------------------------------------------------------------------------------- ICC
def _shrout_fleiss_icc21(x):
    """ICC(2,1) from the two-way ANOVA mean squares (Shrout & Fleiss 1979), x: subjects × raters."""
    n, k = x.shape
    grand = x.mean()
    msr = k * ((x.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    msc = n * ((x.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand
    mse = (resid**2).sum() / ((n - 1) * (k - 1))
    return (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)


def _volumes(subjects, values, class_id=1):
    return pd.DataFrame({"subject": subjects, "class_id": class_id, "volume_mm3": values})


def test_icc_is_shrout_fleiss_icc21_and_equals_pingouin():
    pingouin = pytest.importorskip("pingouin")
    rng = np.random.default_rng(3)
    subjects = [f"s{i}" for i in range(12)]
    truth = rng.normal(50_000, 8_000, 12)
    model = truth * 1.03 + rng.normal(0, 1_500, 12)  # a small bias: agreement < consistency
    icc = M.volume_icc(_volumes(subjects, truth), _volumes(subjects, model), [1]).iloc[0]
    assert icc["icc"] == pytest.approx(
        _shrout_fleiss_icc21(np.stack([truth, model], axis=1)), rel=1e-10
    )

    long = pd.DataFrame({"s": subjects * 2, "r": ["a"] * 12 + ["b"] * 12, "v": np.r_[truth, model]})
    saved = pingouin.options.get("round.column.CI95")
    pingouin.options["round.column.CI95"] = None  # compare at full precision
    try:
        ref = pingouin.intraclass_corr(long, targets="s", raters="r", ratings="v").set_index("Type")
    finally:
        pingouin.options["round.column.CI95"] = saved
    ref = ref.loc["ICC(A,1)"] if "ICC(A,1)" in ref.index else ref.loc["ICC2"]
    assert icc["icc"] == pytest.approx(ref["ICC"], rel=1e-12)
    assert (icc["ci95_low"], icc["ci95_high"]) == pytest.approx(tuple(ref["CI95"]), rel=1e-12)
    assert icc["p"] == pytest.approx(ref["pval"])
    assert icc["ci95_low"] < icc["icc"] < icc["ci95_high"]


def test_icc_uses_only_common_subjects_and_is_nan_when_too_few():
    ref = _volumes(["a", "b", "c"], [1.0, 2.0, 3.5])
    other = _volumes(["b", "c", "d"], [2.1, 3.4, 9.0])
    two = M.volume_icc(ref, other, [1]).iloc[0]
    assert two["n_subjects"] == 2 and math.isnan(two["icc"])  # pingouin needs 3 subjects
    ref3, other3 = _volumes(list("abc"), [1.0, 2.0, 3.5]), _volumes(list("abc"), [1.1, 2.0, 3.4])
    assert M.volume_icc(ref3, other3, [1]).iloc[0]["icc"] > 0.9
    table = M.icc_table(
        ref, {"unetr": (other, None), "rater2": (other, ["c"])}, [1], {1: "sartorius"}
    )
    assert list(table["comparison"]) == ["unetr vs rater1", "rater2 vs rater1"]


# ------------------------------------------------------------------ comparison and Fig 5
def _per_subject(dices, model_shift=0.0):
    rows = []
    for i, d in enumerate(dices):
        for cid in (1, 2):
            rows.append(
                {
                    "subject": f"s{i}",
                    "class_id": cid,
                    "class": f"c{cid}",
                    "dice": d + model_shift,
                    "assd_mm": 1.0,
                    "hd_mm": 2.0,
                    "hd95_mm": 1.5,
                    "ravd": 0.0,
                    "hd95_pooled_mm": 1.4,
                    "volume_pred_mm3": 10.0 + i,
                    "volume_true_mm3": 10.0 + i,
                }
            )
    return pd.DataFrame(rows)


def test_comparison_runs_a_paired_wilcoxon_on_per_subject_mean_dice():
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.8, 8)
    proposed = base + rng.uniform(0.05, 0.15, 8)
    per = {"unetr": _per_subject(proposed), "unet": _per_subject(base)}
    summaries = {m: M.summarise_metrics(t) for m, t in per.items()}
    table = M.compare_models(summaries, per, [1, 2], "unetr", "unet").set_index("model")
    assert table.loc["unetr", "wilcoxon_p"] == pytest.approx(wilcoxon(proposed, base).pvalue)
    assert table.loc["unetr", "n_pairs"] == 8 and table.loc["unetr", "test_vs"] == "unet"
    assert table.loc["unet", "dice_mean"] == pytest.approx(base.mean())


def test_comparison_with_too_few_subjects_says_so():
    per = {"unetr": _per_subject([0.8]), "unet": _per_subject([0.7])}
    summaries = {m: M.summarise_metrics(t) for m, t in per.items()}
    row = M.compare_models(summaries, per, [1, 2], "unetr", "unet").set_index("model").loc["unetr"]
    assert math.isnan(row["wilcoxon_p"]) and "need at least 2" in row["test_note"]


def test_fig5_table_has_metric_by_model_rows_and_one_column_per_muscle():
    per = {"unetr": _per_subject([0.8, 0.9]), "unet": _per_subject([0.7, 0.6])}
    summaries = {m: M.summarise_metrics(t) for m, t in per.items()}
    table = M.fig5_table(
        summaries,
        [1, 2],
        {1: "Sartorius", 2: "Rectus femoris"},
        ["dice", "assd_mm", "vc"],
        {"unetr": "UNETR", "unet": "U-Net"},
        {"dice": "Dice", "assd_mm": "ASSD (mm)", "vc": "VC"},
    )
    assert list(table.columns) == ["model", "metric", "Sartorius", "Rectus femoris"]
    assert list(zip(table["model"], table["metric"], strict=True))[:3] == [
        ("UNETR", "Dice"),
        ("UNETR", "ASSD (mm)"),
        ("UNETR", "VC"),
    ]
    assert table.iloc[0]["Sartorius"] == pytest.approx(0.85)
    md = M.markdown_table(table, {"Dice": 3})
    assert md.splitlines()[0].startswith("| model | metric | Sartorius")


def test_tables_carry_their_definitions_as_comment_lines(tmp_path):
    from thighct.io_tables import write_tsv

    path = tmp_path / "t.tsv"
    write_tsv(
        pd.DataFrame({"a": [1.0, math.nan]}), path, M.table_header("title", {"a": "a thing, mm"})
    )
    text = path.read_text()
    assert text.startswith("# title\n# a: a thing, mm\n")
    back = pd.read_csv(path, sep="\t", comment="#")
    assert back["a"].iloc[0] == 1.0 and math.isnan(back["a"].iloc[1])


def test_volume_correlation_needs_three_subjects():
    two = _per_subject([0.8, 0.9])
    two["volume_pred_mm3"] = [10.0, 10.0, 12.0, 12.0]
    assert M.summarise_metrics(two)["vc"].isna().all()  # two points always give r = ±1


def test_fig5_figure_has_one_panel_per_metric_and_a_legend_per_model(tmp_path):
    from thighct.labels import read_labels
    from thighct.plots.metrics import fig5_figure
    from thighct.plots.style import save_figure

    labels = read_labels(REPO / "config" / "labels.tsv")
    ids = list(labels.muscles["id"])
    rng = np.random.default_rng(0)
    summary = pd.DataFrame({"class_id": ids, "vc": rng.uniform(0.9, 1, len(ids))})
    for m in ("dice", "assd_mm"):
        summary[f"{m}_mean"], summary[f"{m}_sd"] = rng.uniform(0.5, 1, len(ids)), 0.05
    fig = fig5_figure(
        {"unetr": summary, "unet": summary.assign(dice_mean=0.7)},
        ids,
        labels.id_to_display,
        labels.id_to_group,
        ["dice", "assd_mm", "vc"],
        M.METRIC_LABELS,
        {"unetr": "UNETR", "unet": "U-Net"},
    )
    assert [ax.get_title() for ax in fig.axes] == ["Dice", "ASSD (mm)", "VC"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["UNETR", "U-Net"]
    assert len(fig.axes[0].get_yticklabels()) == len(ids)
    written = save_figure(fig, tmp_path / "fig5.png")
    assert written[0].stat().st_size > 10_000


# ------------------------------------------------------------------------- the workflow
@pytest.mark.workflow
def test_evaluation_rules_run_on_the_tiny_config(tmp_path):
    """metrics, icc, compare_models, fig5_table and fig5_metrics on made-up predictions."""
    import subprocess
    import sys

    import yaml

    from thighct import cohort
    from thighct.io import save_nifti
    from thighct.io_tables import write_tsv

    def merged(a, b):
        for k, v in b.items():
            a[k] = merged(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a

    cfg = merged(
        yaml.safe_load((REPO / "config/config.yaml").read_text()),
        yaml.safe_load((REPO / "tests/config/tiny.yaml").read_text()),
    )
    crit = cfg["criteria"]
    cut = cfg["sarcopenia"]["cutoffs"][cfg["sarcopenia"]["definition"]]
    raw = cohort.synthetic_cohort(
        cfg["synthetic_cohort"], crit, cut, cfg["seed"], image_root="results/synthetic"
    )
    annotated = [s for s, lab in zip(raw["subject_id"], raw["label"], strict=True) if lab]

    affine = np.diag([1.5, 1.2, 3.0, 1.0])
    rng = np.random.default_rng(0)
    volumes = {k: [] for k in ("unetr", "unet", "ground_truth", "rater2")}
    for i, subject in enumerate(annotated):
        truth = smooth_labels((24, 20, 10), 30, 100 + i, background=0.2)
        save_nifti(
            tmp_path / f"results/ingested/{subject}/label.nii.gz", truth, affine, dtype="uint8"
        )
        for name, noise in (
            ("unetr", 0.05),
            ("unet", 0.25),
            ("rater2", 0.03),
            ("ground_truth", 0.0),
        ):
            pred = np.where(
                rng.random(truth.shape) < noise, np.roll(truth, 1, axis=0), truth
            ).astype(np.uint8)
            if name in ("unetr", "unet"):
                save_nifti(
                    tmp_path / f"results/predictions/{name}/{subject}.nii.gz",
                    pred,
                    affine,
                    dtype="uint8",
                )
            volumes[name] += [
                {"subject": subject, "class_id": c, "volume_mm3": float((pred == c).sum() * 5.4)}
                for c in range(1, 30)
            ]
    for name, rows in volumes.items():
        write_tsv(pd.DataFrame(rows), tmp_path / f"results/volumes/{name}.tsv")

    targets = [
        "results/metrics/icc.tsv",
        "results/metrics/comparison.tsv",
        "results/tables/fig5_metrics.tsv",
        "results/figures/fig5_metrics.png",
    ]
    cmd = [
        sys.executable, "-m", "snakemake", *targets, "-s", str(REPO / "Snakefile"), "-c1",
        "--directory", str(tmp_path), "--configfile", str(REPO / "tests/config/tiny.yaml"),
        # Only the evaluation rules: the made-up inputs stand in for every earlier stage.
        "--allowed-rules", "metrics", "icc", "compare_models", "fig5_table", "fig5_metrics",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    per = pd.read_csv(tmp_path / "results/metrics/unetr/per_subject.tsv", sep="\t", comment="#")
    assert list(per.columns[:9]) == [
        "subject",
        "class_id",
        "class",
        "dice",
        "assd_mm",
        "hd_mm",
        "hd95_mm",
        "ravd",
        "hd95_pooled_mm",
    ]
    assert per["class_id"].nunique() == 29
    fig5 = pd.read_csv(tmp_path / "results/tables/fig5_metrics.tsv", sep="\t", comment="#")
    assert fig5.shape == (2 * len(cfg["metrics"]["fig5_metrics"]), 2 + 27)
    comparison = pd.read_csv(tmp_path / "results/metrics/comparison.tsv", sep="\t", comment="#")
    unetr, unet = comparison.set_index("model").loc[["unetr", "unet"], "dice_mean"]
    assert unetr > unet  # less noise, higher Dice
    icc = pd.read_csv(tmp_path / "results/metrics/icc.tsv", sep="\t", comment="#")
    assert set(icc["comparison"]) >= {"unetr vs rater1", "unet vs rater1"}
