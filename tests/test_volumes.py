"""Volumes and muscle quality: voxel counts x voxel volume, sides of the midline, IMAT, FOV cuts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from thighct import volume_tables
from thighct import volumes as vol
from thighct.labels import read_labels

REPO = Path(__file__).resolve().parents[1]
LABELS = read_labels(REPO / "config" / "labels.tsv")
SETTINGS = vol.VolumeSettings(body_coarse_mm=2.0, body_opening_mm=2.0, midline_smooth_mm=10.0)

SARTORIUS = LABELS.id_of("sartorius")
RECTUS = LABELS.id_of("rectus_femoris")
GRACILIS = LABELS.id_of("gracilis")
FEMUR = LABELS.id_of("femur")


def two_legs(shape=(60, 30, 20), spacing=(2.0, 2.0, 3.0), flip_x=False, shear=0.0):
    """Two thighs (muscle HU 50, air -1000) on an RAS grid; the subject's right leg at world +x.

    Returns (hu, label, affine, right_leg_mask). Sartorius only in the right leg, rectus femoris
    in both, femur in both; nothing touches the first or last slice except the femur.
    ``shear`` (mm of world x per slice) tilts the voxel grid against the body, as a gantry tilt.
    """
    nx, ny, nz = shape
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-nx * spacing[0] / 2, -ny * spacing[1] / 2, 100.0]
    if flip_x:  # an LAS grid: voxel index i grows towards the subject's left
        affine[0, 0] = -spacing[0]
        affine[0, 3] = nx * spacing[0] / 2
    affine[0, 2] = shear
    affine[0, 3] -= shear * nz / 2
    i = np.arange(nx)[:, None, None]
    j = np.arange(ny)[None, :, None]
    k = np.arange(nz)[None, None, :]
    x_world = affine[0, 0] * i + affine[0, 2] * k + affine[0, 3]
    y_world = affine[1, 1] * j + affine[1, 3] + 0 * k
    legs = np.zeros(shape, bool)
    right = np.zeros(shape, bool)
    for cx in (-30.0, 30.0):
        leg = (x_world - cx) ** 2 + y_world**2 < 20.0**2
        legs |= leg
        if cx > 0:
            right |= leg
    hu = np.where(legs, 50, -1000).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    inner = np.zeros(shape, bool)
    inner[:, :, 2 : nz - 2] = True
    label[inner & legs & (y_world > 4.0)] = RECTUS
    label[inner & right & (y_world < -8.0)] = SARTORIUS
    label[legs & ((np.abs(x_world) - 30.0) ** 2 + y_world**2 < 4.0**2)] = FEMUR  # cut at both ends
    return hu, label, affine, right


def row(table, name):
    return table.set_index("class_name").loc[name]


def test_volume_is_voxel_count_times_voxel_volume():
    hu, label, affine, _ = two_legs()
    table = vol.subject_volumes("S1", label, hu, affine, LABELS, SETTINGS)
    voxel = 2.0 * 2.0 * 3.0
    for cid in (SARTORIUS, RECTUS, FEMUR, GRACILIS):
        expected = (label == cid).sum() * voxel
        assert row(table, LABELS.name_of(cid))["volume_mm3"] == pytest.approx(expected)
    assert row(table, "gracilis")["volume_mm3"] == 0
    assert np.isnan(row(table, "gracilis")["mean_hu"])


def test_voxel_volume_of_an_oblique_grid_is_the_determinant():
    theta = np.deg2rad(20)
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 0.8, 1.5])
    assert vol.voxel_volume_mm3(affine) == pytest.approx(0.8 * 0.8 * 1.5)


@pytest.mark.parametrize(
    "flip_x, shear", [(False, 0.0), (True, 0.0), (False, 1.5)], ids=["RAS", "LAS", "tilted"]
)
def test_left_and_right_follow_the_subjects_sides(flip_x, shear):
    hu, label, affine, right = two_legs(flip_x=flip_x, shear=shear)
    table = vol.subject_volumes("S1", label, hu, affine, LABELS, SETTINGS)
    voxel = vol.voxel_volume_mm3(affine)
    sart = row(table, "sartorius")
    assert sart["volume_right_mm3"] == pytest.approx((label == SARTORIUS).sum() * voxel)
    assert sart["volume_left_mm3"] == 0
    rect = row(table, "rectus_femoris")
    assert rect["volume_right_mm3"] == pytest.approx(((label == RECTUS) & right).sum() * voxel)
    assert rect["volume_left_mm3"] == pytest.approx(((label == RECTUS) & ~right).sum() * voxel)
    assert rect["volume_left_mm3"] + rect["volume_right_mm3"] == pytest.approx(rect["volume_mm3"])


def test_a_table_wider_on_one_side_does_not_move_the_midline():
    hu, _, affine, _ = two_legs()
    with_table = hu.copy()
    with_table[30:, 1:3, :] = 100  # a thin plate under the legs, only on the right side
    plain = vol.body_midline_x(hu, affine, SETTINGS)
    tabled = vol.body_midline_x(with_table, affine, SETTINGS)
    assert np.abs(plain).max() < 1.0  # the legs are symmetric about world x = 0
    assert np.abs(tabled - plain).max() < 1.0
    # Without the opening the plate would pull the midline towards it.
    no_opening = vol.VolumeSettings(body_coarse_mm=2.0, body_opening_mm=0.0)
    assert vol.body_midline_x(with_table, affine, no_opening).min() > 2.0


def test_imat_fraction_is_the_share_of_voxels_in_the_band():
    label = np.zeros((10, 10, 6), np.uint8)
    label[2:8, 2:8, 1:5] = RECTUS  # 144 voxels
    label[0, 0, 2] = FEMUR
    hu = np.full(label.shape, 40, np.int16)
    muscle = np.argwhere(label == RECTUS)
    # Band ends are inside; one HU beyond each is not.
    values = [-190, -30, -100, -191, -29]
    for (i, j, k), v in zip(muscle[: len(values)], values, strict=True):
        hu[i, j, k] = v
    hu[0, 0, 2] = -150  # bone voxel in the band: bone gets no IMAT share
    sums = vol.class_sums(label, hu, np.eye(4), np.zeros(6), LABELS.n_classes, (-190, -30))
    assert sums.imat[RECTUS] == 3
    table = vol.subject_volumes("S1", label, hu, np.eye(4), LABELS, SETTINGS)
    assert row(table, "rectus_femoris")["imat_fraction"] == pytest.approx(3 / 144)
    assert np.isnan(row(table, "femur")["imat_fraction"])
    expected_hu = (40 * (144 - 5) + sum(values)) / 144
    assert row(table, "rectus_femoris")["mean_hu"] == pytest.approx(expected_hu)


def test_structures_touching_the_first_or_last_slice_are_flagged():
    hu, label, affine, _ = two_legs()
    table = vol.subject_volumes("S1", label, hu, affine, LABELS, SETTINGS)
    assert bool(row(table, "femur")["fov_cut"])
    assert not bool(row(table, "rectus_femoris")["fov_cut"])
    label[:, :, -1][label[:, :, -3] == RECTUS] = RECTUS
    table = vol.subject_volumes("S1", label, hu, affine, LABELS, SETTINGS)
    assert bool(row(table, "rectus_femoris")["fov_cut"])
    assert bool(row(table, "anterior")["fov_cut"])  # a group is cut when a member is


def test_groups_are_sums_of_their_members():
    hu, label, affine, _ = two_legs()
    hu = hu + np.random.default_rng(0).integers(-60, 60, hu.shape).astype(np.int16)
    table = vol.subject_volumes("S1", label, hu, affine, LABELS, SETTINGS)
    classes = table[table["class_id"] > 0]
    groups = table[table["class_id"] == vol.GROUP_ID].set_index("class_name")
    assert set(groups.index) == set(LABELS.groups(include_bone=True))
    for group, members in LABELS.groups(include_bone=True).items():
        part = classes[classes["class_id"].isin(members)]
        for col in ("volume_mm3", "volume_left_mm3", "volume_right_mm3"):
            assert groups.loc[group, col] == pytest.approx(part[col].sum())
    anterior = classes[classes["group"] == "anterior"]
    weights = anterior["volume_mm3"]
    assert groups.loc["anterior", "mean_hu"] == pytest.approx(
        (anterior["mean_hu"].fillna(0) * weights).sum() / weights.sum()
    )


def test_the_table_round_trips_and_stats_reads_its_classes(tmp_path):
    from thighct.stats import read_volume_table

    hu, label, affine, _ = two_legs()
    tables = [vol.subject_volumes(s, label, hu, affine, LABELS, SETTINGS) for s in ("S1", "S2")]
    path = tmp_path / "v.tsv"
    volume_tables.write_table(volume_tables.combine_tables(tables), path)
    back = volume_tables.read_table(path)
    assert list(back.columns) == volume_tables.COLUMNS
    pd.testing.assert_frame_equal(back, volume_tables.combine_tables(tables), check_dtype=False)
    long = read_volume_table(path, LABELS)
    assert len(long) == 2 * (LABELS.n_classes - 1)  # group rows are left to the reader


def test_a_label_map_on_another_grid_is_refused():
    from thighct.errors import ThighctError

    hu, label, affine, _ = two_legs()
    shifted = affine.copy()
    shifted[0, 3] += 1.5
    with pytest.raises(ThighctError, match="not on the grid"):
        vol.check_same_grid(label, shifted, hu, affine, subject="S1")


REAL = REPO.parent / "shared" / "data" / "real-ct"


@pytest.mark.realct
@pytest.mark.skipif(not (REAL / "example_seg_v1.nii.gz").exists(), reason=f"no real CT at {REAL}")
def test_the_midline_of_a_real_ct_splits_left_and_right_structures_as_totalsegmentator_does():
    """TotalSegmentator's example CT labels left and right femur, hip bone and glutei
    separately: our midline must give each side's volume (3 mm voxels; a metal hip on the left)."""
    from thighct import io

    ct = io.load_nifti(REAL / "example_ct.nii.gz")
    seg = io.load_nifti(REAL / "example_seg_v1.nii.gz").array
    assert io.orientation_of(ct.affine) == "RAS"
    pairs = {
        "femur": (88, 89),
        "iliac": (90, 91),
        "gluteus_maximus": (94, 95),
        "gluteus_medius": (96, 97),
    }
    label = np.zeros(seg.shape, np.uint8)
    for name, ids in pairs.items():
        label[np.isin(seg, ids)] = LABELS.id_of(name)
    table = vol.subject_volumes("realct", label, ct.array, ct.affine, LABELS, vol.VolumeSettings())
    voxel = vol.voxel_volume_mm3(ct.affine)
    for name, (left_id, right_id) in pairs.items():
        r = row(table, name)
        assert r["volume_left_mm3"] == pytest.approx((seg == left_id).sum() * voxel, rel=0.01)
        assert r["volume_right_mm3"] == pytest.approx((seg == right_id).sum() * voxel, rel=0.01)
        on_edge = np.isin(seg[:, :, [0, -1]], (left_id, right_id)).any()
        assert bool(r["fov_cut"]) == on_edge
    assert bool(row(table, "femur")["fov_cut"])  # the scan ends at the femoral heads
    assert row(table, "femur")["mean_hu"] > 300  # bone, and the left one is metal
