"""Quality flags without labels: each check on small arrays, then planted failures in phantoms.

The planted-failure test generates tiny synthetic phantoms (tests/config/tiny.yaml's grid),
plants a structure erased, one muscle's left side shrunk, the field of view cut and a metal
implant, runs the QC library end to end (volumes -> per-scan measures -> flags) with the
default thresholds, and expects each planted failure flagged and the untouched scans not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, load_config

from thighct import io, qc, synthetic
from thighct import volumes as vol
from thighct.errors import ThighctError
from thighct.labels import read_labels
from thighct.volume_tables import COLUMNS as VOLUME_COLUMNS

REPO = Path(__file__).resolve().parents[1]
LABELS = read_labels(REPO / "config" / "labels.tsv")
CONFIG = load_config(TINY)
SETTINGS = qc.QCSettings.from_config(
    CONFIG["qc"], {k: v for k, v in CONFIG["preprocess"].items() if k.startswith("body_")}
)


def volume_rows(subject, name, left, right):
    return {
        "subject": subject,
        "class_id": LABELS.id_of(name),
        "class_name": name,
        "group": LABELS.id_to_group[LABELS.id_of(name)],
        "volume_mm3": left + right,
        "volume_left_mm3": left,
        "volume_right_mm3": right,
        "mean_hu": 45.0,
        "imat_fraction": 0.01,
        "fov_cut": False,
    }


# ----------------------------------------------------------------------------- one flag each
def test_a_structure_with_volume_zero_is_missing_and_a_present_one_is_not():
    table = pd.DataFrame(
        [volume_rows("A", "sartorius", 0.0, 0.0), volume_rows("A", "gracilis", 900.0, 1000.0)],
        columns=VOLUME_COLUMNS,
    )
    flags = qc.missing_flags(table, "unet")
    assert [(f["structure"], f["flag"]) for f in flags] == [("sartorius", "missing")]


def test_asymmetry_index_is_zero_for_equal_sides_and_one_for_a_missing_side():
    np.testing.assert_allclose(qc.asymmetry_index([5, 0, 3], [5, 4, 1]), [0.0, 1.0, 0.5])


def test_asymmetry_is_flagged_above_the_threshold_only():
    table = pd.DataFrame(
        [
            volume_rows("A", "sartorius", 1000.0, 1100.0),  # 0.048
            volume_rows("A", "gracilis", 1000.0, 3000.0),  # 0.5
        ],
        columns=VOLUME_COLUMNS,
    )
    flags = qc.asymmetry_flags(table, "unet", 0.3)
    assert [(f["structure"], round(f["value"], 3)) for f in flags] == [("gracilis", 0.5)]
    assert "left 1.0 cm³, right 3.0 cm³" in flags[0]["detail"]


def test_robust_z_of_the_median_is_zero_and_scales_with_the_mad():
    z = qc.robust_z(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert z[2] == 0.0
    np.testing.assert_allclose(z[:4], np.array([-2, -1, 0, 1]) / qc.MAD_TO_SD)
    assert np.isnan(qc.robust_z(np.ones(4))).all()


def test_a_volume_far_from_its_sex_is_an_outlier_and_too_few_scans_are_not_scored():
    rng = np.random.default_rng(0)
    rows, sex_of = [], {}
    for i in range(24):
        subject = f"S{i:02d}"
        sex_of[subject] = "FM"[i % 2]
        base = 60_000.0 if sex_of[subject] == "M" else 40_000.0  # men's muscles are larger
        v = base * np.exp(rng.normal(0, 0.08))
        if i == 4:
            v = base * 0.25  # a quarter of the usual: a failed segmentation
        rows.append(volume_rows(subject, "sartorius", v / 2, v / 2))
    table = pd.DataFrame(rows, columns=VOLUME_COLUMNS)
    flags = qc.volume_outlier_flags(table, "unet", sex_of, threshold=5.0, min_subjects=10)
    assert [(f["subject"], f["structure"]) for f in flags] == [("S04", "sartorius")]
    assert flags[0]["value"] < -5.0 and "sex F" in flags[0]["detail"]
    # 12 scans per sex: below a minimum of 13 nothing is scored.
    assert qc.volume_outlier_flags(table, "unet", sex_of, 5.0, min_subjects=13) == []


def test_a_subject_without_sex_stops_the_volume_check_with_the_fix():
    table = pd.DataFrame([volume_rows("X9", "sartorius", 1.0, 1.0)], columns=VOLUME_COLUMNS)
    with pytest.raises(ThighctError, match="X9") as err:
        qc.volume_outlier_flags(table, "unet", {}, 5.0, 3)
    assert "sex" in str(err.value) and "fix:" in str(err.value)


def test_edge_area_ratio_is_the_end_slice_area_over_the_median_area():
    label = np.zeros((4, 4, 6), np.uint8)
    label[:, :, 0:3] = 1  # 16 voxels on slice 0 as on its others: cut through its body
    label[:2, :2, 2:5] = 2  # 4 voxels a slice; 1 voxel on the last slice: a grazed end
    label[0, 0, 5] = 2
    label[3, 3, 3] = 3  # on neither end: left out
    assert qc.edge_area_ratios(label, 4) == {1: 1.0, 2: 0.25}


def test_unlabelled_muscle_counts_only_body_voxels_in_the_muscle_window():
    hu = np.array([40, 40, 40, 40, -100, 40, 2000, 40], float).reshape(2, 2, 2)
    body = np.ones(hu.shape, bool)
    body[1, 1, 1] = False  # the last muscle-density voxel lies outside the body
    label = np.array([1, 1, 0, 0, 0, 1, 0, 0]).reshape(2, 2, 2)
    # Muscle window inside the body: 5 voxels (fat, bone, outside left out), 2 without label.
    assert qc.unlabelled_muscle_fraction(label, hu, body, (-29, 150)) == pytest.approx(2 / 5)


def test_metal_is_body_voxels_at_or_above_the_threshold():
    hu = np.array([3071, 2500, 2499, 3071], float).reshape(2, 2, 1)
    body = np.array([True, True, True, False]).reshape(2, 2, 1)
    assert int(qc.metal_mask(hu, body, 2500).sum()) == 2


def test_structure_dice_of_a_map_with_itself_is_one_and_absent_classes_are_left_out():
    a = np.zeros((4, 4, 4), np.uint8)
    a[:2] = 1
    b = a.copy()
    b[0] = 0  # half of class 1 lost
    b[3] = 2  # class 2 only in b
    assert qc.structure_dice(a, a, 4) == {1: 1.0}
    assert qc.structure_dice(a, b, 4) == pytest.approx({1: 2 * 16 / (32 + 16), 2: 0.0})


def test_no_flag_gives_an_empty_table_with_the_columns():
    empty_volumes = pd.DataFrame(
        [volume_rows("A", "sartorius", 1000.0, 1000.0)], columns=VOLUME_COLUMNS
    )
    empty_measures = pd.DataFrame(columns=qc.MEASURE_COLUMNS)
    flags = qc.quality_flags({"unet": empty_volumes}, empty_measures, {"A": "F"}, SETTINGS)
    assert flags.empty and list(flags.columns) == qc.COLUMNS


def test_the_scans_with_most_flags_are_shown_first():
    flags = pd.DataFrame(
        [
            qc._flag("B", "unet", "sartorius", "asymmetry", 0.5, 0.3, ""),
            qc._flag("A", "unet", "sartorius", "asymmetry", 0.5, 0.3, ""),
            qc._flag("C", "unet", "gracilis", "missing", 0, 0, ""),
            qc._flag("C", "unet", "sartorius", "asymmetry", 0.5, 0.3, ""),
        ]
    )
    assert qc.flagged_scans(flags, 2) == [("C", "unet"), ("A", "unet")]


# ----------------------------------------------------------------------------- planted failures
def phantom(subject: str, sex: str, height_cm: float):
    """A tiny phantom, canonical RAS+ as ingested: (hu, label, affine)."""
    cutoff = CONFIG["sarcopenia"]["cutoffs"]["awgs2019"][sex]
    scan = synthetic.generate_subject(
        subject, sex, height_cm, cutoff + 1.0, cutoff, CONFIG["synthetic"], 7, LABELS
    )
    hu, affine = io.to_canonical(scan.ct, scan.affine)
    label, _ = io.to_canonical(scan.label, scan.affine)
    return np.array(hu), np.array(label), affine


def world_x(shape, affine):
    i, j, k = np.indices(shape)
    return affine[0, 0] * i + affine[0, 1] * j + affine[0, 2] * k + affine[0, 3]


def erase(hu, label, affine, name):
    label = label.copy()
    label[label == LABELS.id_of(name)] = 0
    return hu, label, affine


def shrink_left(hu, label, affine, name, volume_settings):
    """Keep the muscle's left half (world x below the midline) on every third slice only."""
    midline = vol.body_midline_x(hu, affine, volume_settings)
    left = (label == LABELS.id_of(name)) & (world_x(hu.shape, affine) < midline[None, None, :])
    drop = left & (np.arange(hu.shape[2]) % 3 != 0)[None, None, :]
    label = label.copy()
    label[drop] = 0
    return hu, label, affine


def cut_fov(hu, label, affine, share):
    """The lowest ``share`` of the slices (the knee end) removed, as a shorter scan."""
    k0 = int(round(share * hu.shape[2]))
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, k0]) + affine[:3, 3]
    return hu[:, :, k0:].copy(), label[:, :, k0:].copy(), shifted


def unlabel_below(hu, label, affine, share):
    """Labels kept only above the lowest ``share`` of the slices: a model that stopped short."""
    label = label.copy()
    label[:, :, : int(round(share * hu.shape[2]))] = 0
    return hu, label, affine


def add_metal(hu, label, affine, name="femur", radius_vox=2):
    """A ball of 3071 HU (the top of a 12-bit scanner) in one leg's structure: an implant."""
    voxels = np.argwhere(label == LABELS.id_of(name))
    voxels = voxels[voxels[:, 0] > voxels[:, 0].mean()]  # one side (both share the label)
    centre = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
    ball = (np.indices(hu.shape) - centre[:, None, None, None]) ** 2
    hu = hu.copy()
    hu[ball.sum(axis=0) <= radius_vox**2] = 3071
    return hu, label, affine


@pytest.fixture(scope="module")
def planted():
    """Nine phantoms (QC of source ``unet``): four untouched, five with one failure each."""
    body = {k: v for k, v in CONFIG["preprocess"].items() if k.startswith("body_")}
    volume_settings = vol.VolumeSettings.from_config({**CONFIG["volumes"], **body})
    subjects = {f"P{i}": ("FM"[i % 2], 152.0 + 3.0 * i) for i in range(9)}
    scans = {s: phantom(s, sex, h) for s, (sex, h) in subjects.items()}
    plants = {
        "P4": ("missing", "adductor_longus", erase(*scans["P4"], "adductor_longus")),
        "P5": (
            "asymmetry",
            "vastus_lateralis",
            shrink_left(*scans["P5"], "vastus_lateralis", volume_settings),
        ),
        "P6": ("fov_cut", "femur", cut_fov(*scans["P6"], 0.4)),
        "P7": ("metal", qc.SCAN, add_metal(*scans["P7"])),
        "P8": ("unlabelled_muscle", qc.SCAN, unlabel_below(*scans["P8"], 0.5)),
    }
    for s, (_, _, scan) in plants.items():
        scans[s] = scan
    tables, measures = [], []
    for s, (hu, label, affine) in scans.items():
        tables.append(vol.subject_volumes(s, label, hu, affine, LABELS, volume_settings))
        measures.append(qc.scan_measures(s, hu, affine, {"unet": label}, LABELS, SETTINGS))
    flags = qc.quality_flags(
        {"unet": pd.concat(tables, ignore_index=True)},
        pd.concat(measures, ignore_index=True),
        {s: sex for s, (sex, _) in subjects.items()},
        SETTINGS,
    )
    return flags, plants, scans


def test_each_planted_failure_is_flagged(planted):
    flags, plants, _ = planted
    for subject, (flag, structure, _) in plants.items():
        hits = flags[
            (flags["subject"] == subject)
            & (flags["flag"] == flag)
            & (flags["structure"] == structure)
        ]
        assert len(hits) == 1, (subject, flag, structure, flags[flags["subject"] == subject])
        hit = hits.iloc[0]
        assert hit["source"] == ("image" if flag == "metal" else "unet")
        if flag != "missing":  # the value crossed the threshold the row names
            assert (hit["value"] - hit["threshold"]) * (
                -1 if flag == "model_disagreement" else 1
            ) > 0


def test_the_untouched_scans_have_no_flag(planted):
    flags, plants, scans = planted
    untouched = sorted(set(scans) - set(plants))
    assert len(untouched) == 4
    assert flags[flags["subject"].isin(untouched)].empty, flags[flags["subject"].isin(untouched)]


def test_every_flag_row_names_its_value_threshold_and_detail(planted):
    flags, _, _ = planted
    assert list(flags.columns) == qc.COLUMNS
    assert set(flags["flag"]) <= set(qc.FLAGS)
    assert flags["detail"].str.len().gt(0).all()


def test_two_models_disagreeing_on_a_structure_is_flagged(planted):
    _, _, scans = planted
    hu, label, affine = scans["P0"]
    other = label.copy()
    other[label == LABELS.id_of("sartorius")] = LABELS.id_of("rectus_femoris")  # a swap
    measures = qc.scan_measures("P0", hu, affine, {"unetr": label, "unet": other}, LABELS, SETTINGS)
    flags = qc.disagreement_flags(measures, SETTINGS.model_dice)
    by_structure = {f["structure"]: f for f in flags}
    assert by_structure["sartorius"]["value"] == 0.0
    assert by_structure["sartorius"]["source"] == "unetr vs unet"
    # Only the two swapped structures can disagree; every other one is identical.
    assert set(by_structure) <= {"sartorius", "rectus_femoris"}


# ----------------------------------------------------------------------------- the figure
def draw_flagged(flags, scans, png, max_scans=6):
    """What rule qc_flagged does, on the planted scans (source ``unet``)."""
    from thighct.plots import qc as qc_plot

    views = []
    for subject, source in qc.flagged_scans(flags, max_scans):
        hu, label, affine = scans[subject]
        own = flags[(flags["subject"] == subject) & (flags["source"] == source)]
        maps = {"unet": label}
        region = qc.flag_region(own.iloc[0], hu, affine, maps, LABELS, SETTINGS)
        k, j = qc.focus_slices(region, maps[qc.shown_label(source, maps)])
        views.append(
            qc_plot.view_of(
                subject,
                qc_plot.source_name(source, {"unet": "U-Net"}),
                qc_plot.flag_lines(own, LABELS),
                hu,
                label,
                region,
                affine,
                k,
                j,
            )
        )
    qc_plot.plot_flagged(
        views,
        LABELS,
        png,
        n_flagged=flags["subject"].nunique(),
        n_scans=len(scans),
        n_flags=len(flags),
        dpi=100,
    )
    return views


def test_the_figure_shows_each_flagged_scan_through_its_first_flag(planted, tmp_path):
    flags, plants, scans = planted
    views = draw_flagged(flags, scans, tmp_path / "qc_flagged.png")
    assert {v.subject for v in views} == set(plants)
    png = (tmp_path / "qc_flagged.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    metal = next(v for v in views if v.subject == "P7")
    assert metal.flags[0].startswith("metal") and metal.axial[2].any()  # the implant outlined
    asym = next(v for v in views if v.subject == "P5")
    assert asym.flags == ["L/R asymmetry: Vastus lateralis (0.52 > 0.3)"]


def test_the_figure_says_so_when_nothing_is_flagged(tmp_path):
    empty = pd.DataFrame(columns=qc.COLUMNS)
    assert draw_flagged(empty, {"A": None}, tmp_path / "none.png") == []
    assert (tmp_path / "none.png").stat().st_size > 5_000


def test_flags_survive_the_round_trip_through_their_file(planted, tmp_path):
    flags, _, _ = planted
    qc.write_flags(flags, tmp_path / "flags.tsv")
    back = qc.read_flags(tmp_path / "flags.tsv")
    pd.testing.assert_frame_equal(back, flags, check_exact=False, rtol=1e-5)
    assert (tmp_path / "flags.tsv").read_text().startswith("# Quality flags")


@pytest.mark.workflow
def test_the_tiny_run_builds_the_flag_table_and_the_figure(tiny_run):
    flags = qc.read_flags(tiny_run / "results/qc/flags.tsv")
    assert list(flags.columns) == qc.COLUMNS
    assert set(flags["flag"]) <= set(qc.FLAGS)
    included = pd.read_csv(
        tiny_run / "results/cohort/included.tsv", sep="\t", comment="#", dtype=str
    )
    assert set(flags["subject"]) <= set(included["subject_id"])
    scans = sorted((tiny_run / "results/qc/scans").glob("*.tsv"))
    assert len(scans) == len(included)
    measures = qc.read_measures(scans)
    # Every scan: metal measured on the CT, unlabelled muscle on each model's map, models' Dice.
    per_scan = measures.groupby("subject")["measure"].agg(set)
    assert all({"metal_volume_mm3", "unlabelled_muscle_fraction"} <= m for m in per_scan)
    assert "unetr vs unet" in set(measures["source"])
    png = (tiny_run / "results/figures/qc_flagged.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@pytest.mark.workflow
def test_an_unknown_structure_in_fov_cut_expected_stops_before_any_job(tmp_path):
    from conftest import run_snakemake

    bad = tmp_path / "bad.yaml"
    bad.write_text("qc:\n  fov_cut_expected: [psoas, gluteus_maximum]\n")
    proc = run_snakemake(tmp_path, "--cores", "1", "-n", configfiles=[TINY, bad], check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "qc.fov_cut_expected" in text and "gluteus_maximum" in text and "fix:" in text
    assert not (tmp_path / "results").exists()
