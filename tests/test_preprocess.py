"""The paper's pre-processing: HU window, gamma, crop to the body, resampling, and the way back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from thighct import io
from thighct import preprocess as pp

PHANTOM_SPACING = (3.0, 3.0, 5.0)
PAPER_SPACING = (1.5, 1.5, 2.0)


def thigh_phantom(shape=(64, 56, 36), spacing=PHANTOM_SPACING, table=True):
    """Two thighs (muscle compartments around a femur) on a scanner table, HU and label (x, y, z)."""
    x, y, z = np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij")
    hu = np.full(shape, -1000, dtype=np.int16)
    label = np.zeros(shape, dtype=np.uint8)
    for cx in (shape[0] * 0.3, shape[0] * 0.7):
        r2 = ((x - cx) / 11.0) ** 2 + ((y - shape[1] * 0.55) / 12.0) ** 2
        leg = r2 < 1
        hu[leg] = -100  # subcutaneous fat
        muscle = r2 < 0.7
        hu[muscle] = 50
        angle = np.arctan2(y - shape[1] * 0.55, x - cx)
        label[muscle & (angle < -1.0)] = 8  # adductor_magnus
        label[muscle & (angle >= -1.0) & (angle < 1.2)] = 3  # vastus_lateralis
        label[muscle & (angle >= 1.2)] = 2  # rectus_femoris
        label[muscle & (z > shape[2] * 0.6) & (angle < -1.0)] = 11  # gluteus_maximus
        femur = r2 < 0.08
        hu[femur] = 700
        label[femur] = 28
    if table:
        hu[:, 4:6, :] = 100  # a flat table under the legs, 2 voxels thick
        hu[:, 6 : int(shape[1] * 0.55) - 11, :][:, -1:, :] = -100  # touching the back of the legs
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-100.0, -90.0, -400.0]
    return hu, affine, label


def dice(a, b, c):
    a, b = a == c, b == c
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def phantom():
    return thigh_phantom()


# ------------------------------------------------------------------------------ intensities
def test_hu_window_maps_minus_57_to_0_and_164_to_1_with_clipping():
    hu = np.array([-1000, -57, 53.5, 164, 3000])
    np.testing.assert_allclose(pp.scale_hu(hu, (-57, 164)), [0, 0, 0.5, 1, 1], atol=1e-6)


def test_gamma_2_squares_a_full_range_image():
    x = np.array([0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(pp.apply_gamma(x, 2.0), x**2, atol=1e-6)


def test_the_pipeline_image_is_window_then_gamma_of_the_hu(phantom):
    hu, affine, _ = phantom
    settings = pp.PreprocessSettings(spacing_mm=PHANTOM_SPACING)
    result = pp.preprocess_volume(hu, affine, settings)
    start, end = result.transform["crop"]["start"], result.transform["crop"]["end"]
    expected = pp.apply_gamma(pp.scale_hu(hu, (-57, 164)), 2.0)
    expected = expected[start[0] : end[0], start[1] : end[1], start[2] : end[2]]
    np.testing.assert_allclose(result.image, expected, atol=1e-5)
    assert result.image.dtype == np.float32
    assert 0.0 <= result.image.min() and result.image.max() <= 1.0


# ------------------------------------------------------------------------------ crop
def test_crop_keeps_the_body_and_drops_the_table_and_air(phantom):
    hu, affine, label = phantom
    settings = pp.PreprocessSettings(spacing_mm=PHANTOM_SPACING, body_margin_mm=0.0)
    start, end = pp.body_box(hu, affine, settings)
    body = np.argwhere(hu > -500)
    legs = np.argwhere(label > 0)
    assert start[1] > 5, "the table (y = 4..5) must be cropped away"
    assert np.all(legs.min(axis=0) >= start) and np.all(legs.max(axis=0) < end)
    assert end[0] - start[0] < hu.shape[0]  # air at the sides goes too
    assert body[:, 1].min() < start[1]  # thresholding alone would have kept the table


def test_margin_widens_the_box_by_whole_voxels(phantom):
    hu, affine, _ = phantom
    tight = pp.body_box(hu, affine, pp.PreprocessSettings(body_margin_mm=0.0))
    wide = pp.body_box(hu, affine, pp.PreprocessSettings(body_margin_mm=6.0))
    assert wide[0][0] == max(tight[0][0] - 2, 0) and wide[1][0] == min(tight[1][0] + 2, hu.shape[0])


def test_a_scan_without_body_keeps_its_full_extent():
    hu = np.full((10, 10, 4), -1000, dtype=np.int16)
    assert pp.body_box(hu, np.eye(4), pp.PreprocessSettings()) == ([0, 0, 0], [10, 10, 4])


# ------------------------------------------------------------------------------ resampling
def test_output_has_the_target_spacing_and_keeps_the_world_position(phantom):
    hu, affine, label = phantom
    result = pp.preprocess_volume(
        hu, affine, pp.PreprocessSettings(spacing_mm=PAPER_SPACING), label
    )
    assert io.spacing_from_affine(result.affine) == pytest.approx(PAPER_SPACING)
    assert io.orientation_of(result.affine) == "RAS"
    assert result.label.dtype == np.uint8 and result.label.shape == result.image.shape
    # Nearest-neighbour labels: no new class ids appear.
    assert set(np.unique(result.label)) <= set(np.unique(label))
    femur = np.argwhere(result.label == 28).mean(axis=0)
    femur_native = np.argwhere(label == 28).mean(axis=0)
    world = (result.affine @ [*femur, 1])[:3]
    world_native = (affine @ [*femur_native, 1])[:3]
    np.testing.assert_allclose(world, world_native, atol=1.5)


def test_round_trip_is_exact_when_the_spacing_is_unchanged(phantom):
    hu, affine, label = phantom
    result = pp.preprocess_volume(
        hu, affine, pp.PreprocessSettings(spacing_mm=PHANTOM_SPACING), label
    )
    assert result.transform["crop"]["shape"] == list(result.label.shape)  # nothing resampled
    np.testing.assert_array_equal(pp.to_native(result.label, result.transform), label)


@pytest.mark.parametrize("spacing", [PAPER_SPACING, (2.2, 2.6, 3.7)])
def test_round_trip_after_resampling_agrees_in_nearly_every_voxel(phantom, spacing):
    hu, affine, label = phantom
    result = pp.preprocess_volume(hu, affine, pp.PreprocessSettings(spacing_mm=spacing), label)
    back = pp.to_native(result.label, result.transform)
    assert back.shape == label.shape and back.dtype == np.uint8
    for c in np.unique(label)[1:]:
        assert dice(back, label, c) >= 0.98, f"class {c}"


def _stored_lps(hu, affine, label):
    """The same scan stored LPS: x and y voxel axes flipped."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = hu.shape[0] - 1, hu.shape[1] - 1
    return hu[::-1, ::-1].copy(), affine @ flip, label[::-1, ::-1].copy()


def _stored_yxz(hu, affine, label):
    """The same scan stored with the first two voxel axes swapped (j before i)."""
    swap = np.eye(4)[[1, 0, 2, 3]]
    return hu.transpose(1, 0, 2).copy(), affine @ swap, label.transpose(1, 0, 2).copy()


@pytest.mark.parametrize("store", [_stored_lps, _stored_yxz], ids=["flipped", "permuted"])
def test_round_trip_is_exact_on_a_non_canonical_ingested_grid(phantom, store):
    # The pipeline reorients to RAS; to_native must undo it along with the crop.
    hu, affine, label = store(*phantom)
    settings = pp.PreprocessSettings(spacing_mm=PHANTOM_SPACING)
    result = pp.preprocess_volume(hu, affine, settings, label)
    assert io.orientation_of(result.affine) == "RAS"
    np.testing.assert_array_equal(pp.to_native(result.label, result.transform), label)


def test_label_preprocessed_later_matches_the_joint_pipeline(phantom):
    hu, affine, label = phantom
    settings = pp.PreprocessSettings(spacing_mm=PAPER_SPACING)
    joint = pp.preprocess_volume(hu, affine, settings, label)
    image_only = pp.preprocess_volume(hu, affine, settings)
    transform = json.loads(json.dumps(image_only.transform))  # as read back from transform.json
    np.testing.assert_array_equal(pp.preprocess_label(label, transform), joint.label)
    np.testing.assert_array_equal(image_only.image, joint.image)  # deterministic


def test_to_native_takes_a_channel_axis_and_refuses_a_wrong_shape(phantom):
    hu, affine, label = phantom
    result = pp.preprocess_volume(
        hu, affine, pp.PreprocessSettings(spacing_mm=PHANTOM_SPACING), label
    )
    np.testing.assert_array_equal(pp.to_native(result.label[None], result.transform), label)
    with pytest.raises(ValueError, match="preprocessed shape"):
        pp.to_native(result.label[1:], result.transform)
    shape, native_affine = pp.native_grid(result.transform)
    assert shape == label.shape
    np.testing.assert_allclose(native_affine, affine)


def test_transform_record_is_plain_json(phantom):
    hu, affine, _ = phantom
    transform = pp.preprocess_volume(hu, affine, pp.PreprocessSettings()).transform
    again = json.loads(json.dumps(transform))
    assert again == transform
    assert set(transform) >= {"ingested", "crop", "preprocessed", "settings"}


def test_settings_are_read_from_the_config_section():
    settings = pp.PreprocessSettings.from_config(
        {"hu_window": [-57, 164], "gamma": 2, "spacing_mm": [1.5, 1.5, 2.0], "orientation": "RAS"}
    )
    assert settings.spacing_mm == (1.5, 1.5, 2.0) and settings.hu_window == (-57.0, 164.0)


def test_default_phantom_round_trip_exact_at_its_grid_and_dice_at_paper_spacing():
    from conftest import REPO, load_config

    from thighct import synthetic
    from thighct.labels import read_labels

    cfg = load_config()
    labels = read_labels(REPO / "config" / "labels.tsv")
    scan = synthetic.generate_subject(
        "SYN0001", "F", 155.0, 5.0, 5.4, cfg["synthetic"], cfg["seed"], labels
    )
    assert tuple(cfg["preprocess"]["spacing_mm"]) == tuple(cfg["synthetic"]["spacing_mm"])
    for spacing in (cfg["preprocess"]["spacing_mm"], PAPER_SPACING):
        result = pp.preprocess_volume(
            scan.ct, scan.affine, pp.PreprocessSettings(spacing_mm=spacing), scan.label
        )
        back = pp.to_native(result.label, result.transform)
        if tuple(spacing) == tuple(cfg["synthetic"]["spacing_mm"]):
            np.testing.assert_array_equal(back, scan.label)
        for c in np.unique(scan.label)[1:]:
            assert dice(back, scan.label, c) >= 0.98, (spacing, labels.name_of(int(c)))


@pytest.mark.parametrize("extra", [(), ("tests/config/tiny.yaml",)], ids=["default", "tiny"])
def test_configs_preprocess_the_phantoms_on_their_own_grid(extra):
    from conftest import REPO, load_config

    cfg = load_config(*[REPO / e for e in extra])
    assert cfg["preprocess"]["spacing_mm"] == cfg["synthetic"]["spacing_mm"]
