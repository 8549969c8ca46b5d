"""Ingestion: each check stops a bad scan with the subject, file and fix, leaving no output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from thighct import ingest, io
from thighct.errors import ThighctError
from thighct.labels import read_labels

LABELS = read_labels(Path(__file__).resolve().parents[1] / "config" / "labels.tsv")
SETTINGS = ingest.IngestSettings()
SHAPE = (24, 20, 10)


def affine_lps(spacing=(1.5, 1.5, 3.0), origin=(60.0, 40.0, -200.0)) -> np.ndarray:
    """An LPS-stored grid (as a DICOM-derived NIfTI might be): x and y axes flipped."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = origin
    return affine


def phantom_hu(shape=SHAPE) -> np.ndarray:
    x, y = np.mgrid[: shape[0], : shape[1]]
    body = ((x - shape[0] / 2) / (shape[0] / 3)) ** 2 + ((y - shape[1] / 2) / (shape[1] / 3)) ** 2 < 1
    hu = np.full(shape, -1000, dtype=np.int16)
    hu[body] = 50
    hu[shape[0] // 2, shape[1] // 2, :] = 900  # femur
    return hu


def phantom_label(shape=SHAPE) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    label[8:12, 6:14, :] = 11  # gluteus_maximus
    label[12:16, 6:14, :] = 1  # sartorius
    label[shape[0] // 2, shape[1] // 2, :] = 28  # femur
    return label


@pytest.fixture
def scan(tmp_path):
    """An ingested-ready scan: image and label NIfTI files on the same LPS grid."""
    affine = affine_lps()
    io.save_nifti(tmp_path / "ct.nii.gz", phantom_hu(), affine, np.int16)
    io.save_nifti(tmp_path / "seg.nii.gz", phantom_label(), affine, np.uint8)
    return tmp_path


def run(scan_dir, image="ct.nii.gz", label="seg.nii.gz", settings=SETTINGS):
    out = scan_dir / "out"
    ingest.ingest_subject(scan_dir / image, out / "image.nii.gz", out / "info.json", settings, subject="S010")
    if label is not None:
        ingest.ingest_subject_label(
            scan_dir / label,
            out / "image.nii.gz",
            out / "label.nii.gz",
            out / "label_info.json",
            LABELS,
            settings,
            subject="S010",
        )
    return out


def assert_clear_error(err, *fragments):
    text = str(err.value)
    assert "S010" in text and "fix:" in text
    for fragment in fragments:
        assert fragment in text


# ----------------------------------------------------------------------------- good input
def test_ingested_image_is_int16_hu_in_canonical_ras_with_every_voxel_in_place(scan):
    out = run(scan)
    image = io.load_nifti(out / "image.nii.gz")
    label = io.load_nifti(out / "label.nii.gz")
    assert image.array.dtype == np.int16 and label.array.dtype == np.uint8
    assert image.orientation == "RAS" and label.orientation == "RAS"
    np.testing.assert_array_equal(label.affine, image.affine)
    source = io.load_nifti(scan / "ct.nii.gz")
    # The femur voxel keeps its world position through the reorientation.
    src_ijk = (SHAPE[0] // 2, SHAPE[1] // 2, 3)
    world = source.affine @ [*src_ijk, 1]
    ijk = np.rint(np.linalg.solve(image.affine, world)[:3]).astype(int)
    assert image.array[tuple(ijk)] == 900 and label.array[tuple(ijk)] == 28
    info = io.load_json(out / "info.json")
    assert info["source_orientation"] == "LPS" and info["orientation"] == "RAS"
    assert info["spacing_mm"] == [1.5, 1.5, 3.0] and info["hu_min"] == -1000 and info["hu_max"] == 900
    label_info = io.load_json(out / "label_info.json")
    assert set(label_info["voxels"]) == {"sartorius", "gluteus_maximus", "femur"}
    assert label_info["touches_border"]["femur"] == ["inferior", "superior"]


def test_real_ct_like_int32_with_metal_is_accepted(tmp_path):
    hu = phantom_hu().astype(np.int32)
    hu[3, 3, 0] = 3382  # metal implant streak, as in the TotalSegmentator example
    hu[0, 0, 0] = -1207
    io.save_nifti(tmp_path / "ct.nii.gz", hu, affine_lps(), np.int32)
    out = run(tmp_path, label=None)
    info = io.load_json(out / "info.json")
    assert (info["hu_min"], info["hu_max"], info["source_dtype"]) == (-1207, 3382, "int32")


def test_trailing_singleton_axis_is_accepted(scan):
    io.save_nifti(scan / "ct4.nii.gz", phantom_hu()[..., None], affine_lps(), np.int16)
    out = run(scan, image="ct4.nii.gz", label=None)
    assert io.load_nifti(out / "image.nii.gz").shape == SHAPE


def test_label_grid_within_tolerance_takes_the_image_affine(scan):
    shifted = affine_lps()
    shifted[0, 3] += 0.01  # header rounding, below the 0.1 mm tolerance
    io.save_nifti(scan / "seg.nii.gz", phantom_label(), shifted, np.uint8)
    out = run(scan)
    np.testing.assert_array_equal(
        io.load_nifti(out / "label.nii.gz").affine, io.load_nifti(out / "image.nii.gz").affine
    )


# ------------------------------------------------------------------------------ bad input
def test_four_d_image_is_refused_and_nothing_is_written(scan):
    io.save_nifti(scan / "ct4.nii.gz", np.stack([phantom_hu()] * 2, axis=-1), affine_lps(), np.int16)
    with pytest.raises(ThighctError) as err:
        run(scan, image="ct4.nii.gz")
    assert_clear_error(err, "4 dimensions", "ct4.nii.gz")
    assert not (scan / "out").exists() or not any((scan / "out").iterdir())


def test_truncated_image_is_refused_and_nothing_is_written(scan):
    data = (scan / "ct.nii.gz").read_bytes()
    (scan / "ct.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ThighctError) as err:
        run(scan)
    assert_clear_error(err, "truncated", "ct.nii.gz")
    assert not (scan / "out").exists() or not any((scan / "out").iterdir())


def test_nan_in_the_image_is_refused(scan):
    hu = phantom_hu().astype(np.float32)
    hu[1, 2, 3] = np.nan
    io.save_nifti(scan / "ct.nii.gz", hu, affine_lps(), np.float32)
    with pytest.raises(ThighctError) as err:
        run(scan)
    assert_clear_error(err, "NaN")


def test_values_not_rescaled_to_hu_are_refused(scan):
    raw = (phantom_hu().astype(np.int32) + 1024).astype(np.uint16)  # stored values, no intercept
    io.save_nifti(scan / "ct.nii.gz", raw, affine_lps(), np.uint16)
    with pytest.raises(ThighctError) as err:
        run(scan)
    assert_clear_error(err, "not Hounsfield units", "RescaleIntercept")


def test_normalised_image_is_refused(scan):
    io.save_nifti(scan / "ct.nii.gz", (phantom_hu() + 1000) / 1900.0, affine_lps(), np.float32)
    with pytest.raises(ThighctError) as err:
        run(scan)
    assert_clear_error(err, "not Hounsfield units")


def test_values_beyond_the_plausible_hu_range_are_refused(scan):
    hu = phantom_hu().astype(np.int32)
    hu[0, 0, 0] = -32768  # unflagged padding
    io.save_nifti(scan / "ct.nii.gz", hu, affine_lps(), np.int32)
    with pytest.raises(ThighctError) as err:
        run(scan)
    assert_clear_error(err, "plausible HU range", "ingest.hu_range")


def test_label_with_shifted_affine_is_refused_and_no_label_is_written(scan):
    shifted = affine_lps()
    shifted[2, 3] += 1.5  # half a slice
    io.save_nifti(scan / "seg.nii.gz", phantom_label(), shifted, np.uint8)
    with pytest.raises(ThighctError) as err:
        run(scan)
    assert_clear_error(err, "1.500 mm", "seg.nii.gz", "grid_tolerance_mm")
    assert not (scan / "out" / "label.nii.gz").exists()
    assert not (scan / "out" / "label_info.json").exists()


def test_label_of_another_shape_is_refused(scan):
    io.save_nifti(scan / "seg.nii.gz", phantom_label()[:, :, :-1], affine_lps(), np.uint8)
    with pytest.raises(ThighctError) as err:
        run(scan)
    assert_clear_error(err, "shape")


def test_unmapped_label_id_is_refused_with_the_ways_to_map_it(scan):
    label = phantom_label()
    label[0, 0, 0] = 45
    io.save_nifti(scan / "seg.nii.gz", label, affine_lps(), np.uint8)
    with pytest.raises(ThighctError) as err:
        run(scan)
    assert_clear_error(err, "[45]", "ingest.label_map", "ingest.drop_labels")


def test_dropped_label_ids_become_background(scan):
    label = phantom_label()
    label[0, 0, 0] = 45
    io.save_nifti(scan / "seg.nii.gz", label, affine_lps(), np.uint8)
    out = run(scan, settings=ingest.IngestSettings(drop_labels=(45,)))
    assert set(np.unique(io.load_nifti(out / "label.nii.gz").array)) == {0, 1, 11, 28}


def test_totalsegmentator_ids_are_mapped_and_foreign_ids_never_pass_as_ours(scan):
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[2:5, 2:5, :] = 88  # femur_left
    label[6:9, 2:5, :] = 94  # gluteus_maximus_left
    label[10:12, 2:5, :] = 1  # TotalSegmentator's spleen, not our sartorius
    io.save_nifti(scan / "seg.nii.gz", label, affine_lps(), np.uint8)
    mapping = {88: "femur", 94: "gluteus_maximus"}
    with pytest.raises(ThighctError) as err:
        run(scan, settings=ingest.IngestSettings(label_map=mapping))
    assert_clear_error(err, "[1]", "not named in ingest.label_map")
    out = run(scan, settings=ingest.IngestSettings(label_map=mapping, drop_unmapped=True))
    ingested = io.load_nifti(out / "label.nii.gz").array
    assert set(np.unique(ingested)) == {0, LABELS.id_of("femur"), LABELS.id_of("gluteus_maximus")}
    assert io.load_json(out / "label_info.json")["dropped_ids"] == [1]


def test_label_map_to_an_unknown_class_is_refused(scan):
    settings = ingest.IngestSettings(label_map={88: "thighbone"})
    with pytest.raises(ThighctError) as err:
        run(scan, settings=settings)
    assert_clear_error(err, "thighbone")


def test_fractional_label_values_are_refused(scan):
    io.save_nifti(scan / "seg.nii.gz", phantom_label() * 0.5, affine_lps(), np.float32)
    with pytest.raises(ThighctError) as err:
        run(scan)
    assert_clear_error(err, "non-integer")


def test_settings_are_read_from_the_config_section():
    section = {
        "hu_range": [-2000, 4000],
        "air_max_hu": -600,
        "grid_tolerance_mm": 0.2,
        "label_map": {"88": "femur"},
        "drop_labels": [5],
        "drop_unmapped": True,
        "dicom": {"series_description": "^AX", "series_uid": "", "slice_spacing_tolerance": 0.05},
    }
    settings = ingest.IngestSettings.from_config(section)
    assert settings.hu_range == (-2000.0, 4000.0) and settings.label_map == {88: "femur"}
    assert settings.series_description == "^AX" and settings.slice_spacing_tolerance == 0.05
    assert ingest.IngestSettings.from_config({}) == ingest.IngestSettings()
