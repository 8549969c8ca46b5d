"""Reading and writing image files: NIfTI round trips, truncated files, DICOM series."""

from __future__ import annotations

import gzip
import json
import logging
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from thighct import ingest, io
from thighct.errors import ThighctError

PATIENT_NAME = "Doe^Jane Secretname"
PATIENT_ID = "PID-778899"


# ------------------------------------------------------------------------- DICOM test series
def stored_values(rows: int, cols: int, n_slices: int) -> np.ndarray:
    """Stored pixel values (k, row, col): a body-like disc of ~1064 in air 24, bone-ish centre."""
    r, c = np.mgrid[:rows, :cols]
    disc = ((r - rows / 2) / (rows / 2.5)) ** 2 + ((c - cols / 2) / (cols / 2.5)) ** 2 < 1
    out = np.full((n_slices, rows, cols), 24, dtype=np.int16)
    for k in range(n_slices):
        out[k][disc] = 1064 + 10 * k
        out[k, rows // 2, cols // 2] = 2000 + k
    return out


def write_dicom_series(
    folder,
    n_slices: int = 6,
    rows: int = 40,
    cols: int = 36,
    *,
    spacing: float = 2.5,
    pixel_spacing=(0.8, 0.7),
    origin=(-100.0, -80.0, -300.0),
    syntax=None,
    description: str = "AX THIGH 2.5",
    series_uid: str | None = None,
    slope: float = 1.0,
    intercept: float = -1024.0,
    skip=(),
    patient_name: str = PATIENT_NAME,
    shuffle: bool = True,
    series_number: int = 3,
    acquisition_number: int | None = None,
    prefix: str = "IM",
    tags: dict | None = None,
) -> np.ndarray:
    """Write an axial CT series (one file per slice) and return the expected HU (x, y, z).

    ``series_uid=""`` writes slices without a SeriesInstanceUID; ``tags`` sets further
    attributes (keyword -> value) on every slice.
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid() if series_uid is None else series_uid
    study_uid = generate_uid()
    values = stored_values(rows, cols, n_slices)
    order = list(range(n_slices))
    if shuffle:
        order = order[::2] + order[1::2]  # files not in slice order
    for k in order:
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.PatientName = patient_name
        ds.PatientID = PATIENT_ID
        ds.PatientBirthDate = "19400101"
        ds.InstitutionName = "Secret Hospital"
        ds.StudyInstanceUID = study_uid
        if series_uid:
            ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = description
        ds.SeriesNumber = series_number
        if acquisition_number is not None:
            ds.AcquisitionNumber = acquisition_number
        for keyword, value in (tags or {}).items():
            setattr(ds, keyword, value)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = spacing
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.PixelData = values[k].tobytes()
        if syntax is not None:
            ds.compress(syntax)
        ds.save_as(folder / f"{prefix}{k:04d}.dcm", enforce_file_format=True)
    # (k, row, col) -> (x = col, y = row, z = k)
    return np.transpose(values.astype(np.float64) * slope + intercept, (2, 1, 0))


# ------------------------------------------------------------------------------------ NIfTI
def test_nifti_round_trip_keeps_int16_values_and_affine(tmp_path):
    array = np.arange(-60, 60, dtype=np.int16).reshape(4, 5, 6)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-100.0, 20.0, 300.0]
    io.save_nifti(tmp_path / "a.nii.gz", array, affine, np.int16)
    volume = io.load_nifti(tmp_path / "a.nii.gz")
    assert volume.array.dtype == np.int16
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    assert volume.spacing == pytest.approx((0.8, 0.8, 2.5), abs=1e-6)
    assert volume.orientation == "RAS"
    array2, affine2 = volume  # unpacks like (array, affine)
    assert array2 is volume.array


def test_the_grid_from_the_header_is_the_loaded_volumes_grid(tmp_path):
    affine = np.diag([-0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = [100.0, -20.0, 30.0]
    io.save_nifti(tmp_path / "a.nii.gz", np.zeros((4, 5, 6), np.int16), affine, np.int16)
    shape, grid_affine = io.nifti_grid(tmp_path / "a.nii.gz")
    volume = io.load_nifti(tmp_path / "a.nii.gz")
    assert shape == volume.array.shape == (4, 5, 6)
    np.testing.assert_array_equal(grid_affine, volume.affine)
    with pytest.raises(ThighctError, match="not found") as err:
        io.nifti_grid(tmp_path / "nope.nii.gz", subject="S009")
    assert "S009" in str(err.value)
    (tmp_path / "b.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(ThighctError, match="NIfTI header"):
        io.nifti_grid(tmp_path / "b.nii.gz")


def test_saving_leaves_no_temporary_file_and_refuses_values_out_of_range(tmp_path):
    io.save_nifti(tmp_path / "ok.nii.gz", np.ones((2, 2, 2)), np.eye(4), np.uint8)
    with pytest.raises(ValueError, match="do not fit"):
        io.save_nifti(tmp_path / "bad.nii.gz", np.full((2, 2, 2), 300.0), np.eye(4), np.uint8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.nii.gz"]


def test_truncated_nifti_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "ct.nii.gz"
    io.save_nifti(
        path, np.random.default_rng(0).integers(-1000, 1000, (30, 30, 30)), np.eye(4), np.int16
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ThighctError) as err:
        io.load_nifti(path, subject="S001")
    assert "S001" in str(err.value) and str(path) in str(err.value) and "fix" in str(err.value)


def test_missing_and_non_nifti_files_are_errors(tmp_path):
    with pytest.raises(ThighctError, match="not found"):
        io.load_nifti(tmp_path / "nope.nii.gz")
    (tmp_path / "scan.png").write_bytes(b"not an image")
    with pytest.raises(ThighctError, match="unknown image format"):
        io.load_image(tmp_path / "scan.png")


def test_canonical_reorientation_keeps_every_voxel_in_place():
    rng = np.random.default_rng(1)
    array = rng.integers(0, 100, (5, 6, 7)).astype(np.int16)
    # LPI-ish voxel axes with a permutation: i -> -y, j -> -x, k -> z
    affine = np.array([[0, -2.0, 0, 50], [-1.5, 0, 0, 40], [0, 0, 3.0, -10], [0, 0, 0, 1]])
    canon, canon_affine = io.to_canonical(array, affine)
    assert io.orientation_of(canon_affine) == "RAS"
    assert canon.dtype == np.int16
    world = {
        tuple(np.round(affine @ [i, j, k, 1], 6)[:3]): array[i, j, k]
        for i, j, k in np.ndindex(array.shape)
    }
    for i, j, k in np.ndindex(canon.shape):
        assert world[tuple(np.round(canon_affine @ [i, j, k, 1], 6)[:3])] == canon[i, j, k]


def test_spacing_is_the_length_of_the_affine_columns():
    theta = np.deg2rad(30)
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.7, 0.9, 5.0])
    assert io.spacing_from_affine(affine) == pytest.approx((0.7, 0.9, 5.0))


# ------------------------------------------------------------------------------------ DICOM
def test_dicom_series_is_read_in_hu_sorted_by_position_with_ras_affine(tmp_path):
    expected = write_dicom_series(tmp_path / "ct", slope=2.0, intercept=-2048.0)
    volume = io.load_dicom_series(tmp_path / "ct")
    np.testing.assert_array_equal(volume.array, expected)
    assert volume.spacing == pytest.approx((0.7, 0.8, 2.5))
    # First stored pixel (row 0, col 0) of the lowest slice sits at ImagePositionPatient (LPS).
    np.testing.assert_allclose(volume.affine @ [0, 0, 0, 1], [100.0, 80.0, -300.0, 1.0])
    # Column index moves along +x in LPS (towards the patient's left), -x in RAS.
    np.testing.assert_allclose(volume.affine @ [1, 0, 0, 1], [99.3, 80.0, -300.0, 1.0])
    np.testing.assert_allclose(volume.affine @ [0, 0, 1, 1], [100.0, 80.0, -297.5, 1.0])
    assert volume.meta["n_slices"] == 6


@pytest.mark.parametrize(
    "syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda s: s.name
)
def test_compressed_dicom_is_decoded_losslessly(tmp_path, syntax):
    # 64 x 48 pixels: OpenJPEG needs a few resolution levels' worth of pixels to encode.
    expected = write_dicom_series(tmp_path / "ct", n_slices=3, rows=64, cols=48, syntax=syntax)
    volume = io.load_dicom_series(tmp_path / "ct")
    assert volume.meta["transfer_syntax"] == [syntax.name]
    np.testing.assert_array_equal(volume.array, expected)


def test_dicom_folder_with_a_missing_slice_is_an_error(tmp_path):
    write_dicom_series(tmp_path / "ct", n_slices=8, skip=(4,))
    with pytest.raises(ThighctError, match="slice spacing is not uniform") as err:
        io.load_dicom_series(tmp_path / "ct", subject="S002")
    assert "S002" in str(err.value) and "missing" in str(err.value)


def test_two_series_in_one_folder_are_listed_or_chosen_by_config(tmp_path):
    write_dicom_series(tmp_path / "ct", description="AX THIGH 2.5")
    write_dicom_series(tmp_path / "ct" / "scout", n_slices=3, description="SCOUT LAT")
    with pytest.raises(ThighctError) as err:
        io.load_dicom_series(tmp_path / "ct", subject="S003")
    text = str(err.value)
    assert "2 series" in text and "AX THIGH 2.5" in text and "SCOUT LAT" in text
    assert "series_description" in text  # the fix names the config key
    chosen = io.load_dicom_series(tmp_path / "ct", description_regex="^AX")
    assert chosen.shape == (36, 40, 6)
    uid = next(s.uid for s in io.list_dicom_series(tmp_path / "ct") if s.description == "SCOUT LAT")
    assert io.load_dicom_series(tmp_path / "ct", series_uid=uid).shape == (36, 40, 3)


def test_folder_without_dicom_images_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    with pytest.raises(ThighctError, match="no DICOM image series"):
        io.load_dicom_series(tmp_path / "empty")


def test_patient_name_from_dicom_appears_in_no_output_or_log(tmp_path, caplog):
    write_dicom_series(tmp_path / "dicom", shuffle=False)
    out = tmp_path / "out"
    caplog.set_level(logging.DEBUG)
    info = ingest.ingest_subject(
        tmp_path / "dicom",
        out / "image.nii.gz",
        out / "info.json",
        ingest.IngestSettings(),
        subject="S004",
    )
    logging.getLogger("thighct").info("ingested %s", info)
    texts = {
        "info.json": (out / "info.json").read_text(),
        "image.nii.gz": gzip.decompress((out / "image.nii.gz").read_bytes()).decode("latin-1"),
        "log": caplog.text,
        "returned info": json.dumps(info),
    }
    for secret in ("Doe", "Secretname", PATIENT_ID, "19400101", "Secret Hospital"):
        for where, text in texts.items():
            assert secret not in text, f"{secret!r} leaked into {where}"
    # The series description is free text a technologist may fill with a name: not kept.
    dicom_info = json.loads(texts["info.json"])["dicom"]
    assert dicom_info["series_number"] == 3 and "series_description" not in dicom_info
    assert nib.load(out / "image.nii.gz").get_data_dtype() == np.int16


def test_a_corrupt_slice_is_an_error_naming_it(tmp_path):
    write_dicom_series(tmp_path / "ct", n_slices=4, syntax=RLELossless)
    victim = tmp_path / "ct" / "IM0002.dcm"
    ds = pydicom.dcmread(victim)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    ds.save_as(victim)
    with pytest.raises(ThighctError, match="cannot decode") as err:
        io.load_dicom_series(tmp_path / "ct")
    assert "IM0002.dcm" in str(err.value)


def test_dicom_and_nifti_of_one_scan_ingest_to_the_same_volume(tmp_path):
    expected = write_dicom_series(tmp_path / "dicom")
    from_dicom, _ = ingest.ingest_image(tmp_path / "dicom", ingest.IngestSettings())
    dicom = io.load_dicom_series(tmp_path / "dicom")
    io.save_nifti(tmp_path / "ct.nii.gz", dicom.array, dicom.affine, np.int16)
    from_nifti, _ = ingest.ingest_image(tmp_path / "ct.nii.gz", ingest.IngestSettings())
    np.testing.assert_array_equal(from_dicom.array, from_nifti.array)
    np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-4)
    assert from_dicom.orientation == "RAS"
    assert int(from_dicom.array.max()) == int(expected.max())
    shutil.rmtree(tmp_path / "dicom")
