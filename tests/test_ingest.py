"""Ingestion: each check stops a bad scan with the subject, file and fix, leaving no output."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from thighct import ingest, io
from thighct.errors import ThighctError
from thighct.labels import read_labels
from thighct.preprocess import to_native

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
    body = ((x - shape[0] / 2) / (shape[0] / 3)) ** 2 + (
        (y - shape[1] / 2) / (shape[1] / 3)
    ) ** 2 < 1
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
    ingest.ingest_subject(
        scan_dir / image, out / "image.nii.gz", out / "info.json", settings, subject="S010"
    )
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
    assert (
        info["spacing_mm"] == [1.5, 1.5, 3.0] and info["hu_min"] == -1000 and info["hu_max"] == 900
    )
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
    io.save_nifti(
        scan / "ct4.nii.gz", np.stack([phantom_hu()] * 2, axis=-1), affine_lps(), np.int16
    )
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


# ------------------------------------------------------------------------------ workflow
COHORT_HEADER = (
    "subject_id\tsex\tage\theight_cm\tweight_kg\tsmi\tstable_condition\tct_contraindication\t"
    "missing_hip_to_knee\tprotocol_variation\tamputation\tfemur_shaft_fracture\t"
    "subtrochanteric_fracture\tdeformity\tmetal_artefact\tother_image_factor\timage\tlabel\tlabel_rater2"
)
PASSING = "true\tfalse\tfalse\tfalse\tfalse\tfalse\tfalse\tfalse\tfalse\tfalse"


def user_cohort(tmp_path, rows, extra: str = "") -> Path:
    """A cohort table of the user's scans and a config that points at it (one MONAI job)."""
    lines = [COHORT_HEADER]
    for subject, sex, image, label in rows:
        lines.append(f"{subject}\t{sex}\t78\t160\t60\t6.0\t{PASSING}\t{image}\t{label}\t")
    (tmp_path / "cohort.tsv").write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "user.yaml"
    cfg.write_text(
        f"chunks: 1\ncohort:\n  table: {tmp_path / 'cohort.tsv'}\nsplit:\n  n_val: 1\n{extra}"
    )
    return cfg


@pytest.mark.workflow
def test_workflow_ingests_dicom_and_nifti_and_preprocesses_them(tmp_path):
    from conftest import run_snakemake
    from test_io import PATIENT_ID, PATIENT_NAME, write_dicom_series

    write_dicom_series(tmp_path / "P1_dicom", n_slices=10, rows=48, cols=44)
    dicom = io.load_dicom_series(tmp_path / "P1_dicom")
    seg = np.zeros(dicom.shape, dtype=np.uint8)
    seg[10:30, 12:36, 2:8] = 3
    io.save_nifti(tmp_path / "P1_seg.nii.gz", seg, dicom.affine, np.uint8)
    io.save_nifti(tmp_path / "P2_ct.nii.gz", phantom_hu(), affine_lps(), np.int16)
    io.save_nifti(tmp_path / "P2_seg.nii.gz", phantom_label(), affine_lps(), np.uint8)
    cfg = user_cohort(
        tmp_path,
        [
            ("P1", "F", tmp_path / "P1_dicom", tmp_path / "P1_seg.nii.gz"),
            ("P2", "M", tmp_path / "P2_ct.nii.gz", tmp_path / "P2_seg.nii.gz"),
            ("P3", "M", tmp_path / "P2_ct.nii.gz", ""),
        ],
        extra="preprocess:\n  spacing_mm: [1.5, 1.5, 3.0]\n",  # P2's own grid
    )
    work = tmp_path / "work"
    targets = [f"results/preprocessed/{s}/label.nii.gz" for s in ("P1", "P2")]
    targets += ["results/preprocessed/P3/transform.json", "results/figures/fig3_preprocessing.png"]
    run_snakemake(work, "--cores", "2", *targets, configfiles=[cfg])

    assert not (work / "results/preprocessed/P3/label.nii.gz").exists()
    image = io.load_nifti(work / "results/ingested/P1/image.nii.gz")
    assert image.orientation == "RAS" and image.array.dtype == np.int16
    info = io.load_json(work / "results/ingested/P1/info.json")
    assert info["format"] == "dicom" and info["spacing_mm"] == [0.7, 0.8, 2.5]
    transform = io.load_json(work / "results/preprocessed/P2/transform.json")
    pre_label = io.load_nifti(work / "results/preprocessed/P2/label.nii.gz").array
    ingested_label = io.load_nifti(work / "results/ingested/P2/label.nii.gz").array

    assert transform["subject"] == "P2"
    np.testing.assert_array_equal(to_native(pre_label, transform), ingested_label)
    for path in work.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
            for secret in (PATIENT_NAME.split("^")[0], PATIENT_ID):
                assert secret.encode() not in data, f"{secret} leaked into {path}"


@pytest.mark.workflow
def test_dry_run_lists_every_bad_scan_before_any_job_without_traceback(tmp_path):
    from conftest import run_snakemake
    from pydicom.uid import generate_uid
    from test_io import write_dicom_series

    io.save_nifti(tmp_path / "ct.nii.gz", phantom_hu(), affine_lps(), np.int16)
    io.save_nifti(tmp_path / "seg.nii.gz", phantom_label(), affine_lps(), np.uint8)
    data = (tmp_path / "ct.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) - 40])
    io.save_nifti(
        tmp_path / "ct4d.nii.gz", np.stack([phantom_hu()] * 2, axis=-1), affine_lps(), np.int16
    )
    io.save_nifti(tmp_path / "short.nii.gz", phantom_label()[:, :, :-1], affine_lps(), np.uint8)
    uid = generate_uid()
    write_dicom_series(tmp_path / "mixed", n_slices=6, spacing=2.0, series_uid=uid, prefix="A")
    write_dicom_series(
        tmp_path / "mixed",
        n_slices=6,
        spacing=2.0,
        series_uid=uid,
        series_number=4,
        origin=(-100.0, -80.0, -299.0),
        prefix="B",
    )
    cfg = user_cohort(
        tmp_path,
        [
            ("P1", "F", tmp_path / "ct.nii.gz", tmp_path / "seg.nii.gz"),
            ("P2", "M", tmp_path / "cut.nii.gz", ""),
            ("P3", "F", tmp_path / "ct4d.nii.gz", ""),
            ("P4", "M", tmp_path / "ct.nii.gz", tmp_path / "short.nii.gz"),
            ("P5", "F", tmp_path / "mixed", ""),
        ],
    )
    work = tmp_path / "work"
    proc = run_snakemake(work, "-n", configfiles=[cfg], check=False)
    assert proc.returncode != 0
    text = proc.stderr
    assert "4 scan(s) cannot be ingested" in text, text[-3000:]
    for subject, name, what in (
        ("P2", "cut.nii.gz", "truncated"),
        ("P3", "ct4d.nii.gz", "4 dimensions"),
        ("P4", "short.nii.gz", "grid differs"),
        ("P5", "mixed", "2 different series share"),
    ):
        assert f"[subject {subject}, file {tmp_path / name}]" in text and what in text
    assert "subject P1" not in text
    assert text.count("fix:") == 5 and "other_image_factor to true" in text
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (work / "results").exists() and not (work / "logs").exists()


PLANTED = ("DOE", "JANE", "MRN12345678", "19400101", "SECRET HOSPITAL", "DR WHO")


@pytest.mark.workflow
def test_no_patient_identifier_reaches_results_and_a_job_error_shows_no_traceback(tmp_path):
    """Names in folder and file names and in every DICOM identifier tag; one scan not in HU
    (found only by ingestion, in its own job) fails with its message, the others go through."""
    from conftest import run_snakemake
    from test_io import write_dicom_series

    person = tmp_path / "DOE_JANE_MRN12345678"
    tags = {
        "PatientName": "DOE^JANE",
        "PatientID": "MRN12345678",
        "OtherPatientIDs": "MRN12345678",
        "PatientBirthDate": "19400101",
        "PatientAddress": "1 DOE STREET",
        "InstitutionName": "SECRET HOSPITAL",
        "InstitutionAddress": "SECRET HOSPITAL ROAD",
        "ReferringPhysicianName": "DR WHO",
        "PerformingPhysicianName": "DR WHO",
        "OperatorsName": "DOE^JANE",
        "AccessionNumber": "MRN12345678",
        "StudyID": "MRN12345678",
        "StudyDescription": "DOE JANE THIGH",
        "StationName": "SECRET HOSPITAL",
    }
    write_dicom_series(
        person / "DOE_JANE_CT",
        n_slices=6,
        patient_name="DOE^JANE",
        description="DOE JANE MRN12345678",
        tags=tags,
    )
    dicom = io.load_dicom_series(person / "DOE_JANE_CT")
    seg = np.zeros(dicom.shape, dtype=np.uint8)
    seg[10:30, 12:30, 1:5] = 3
    io.save_nifti(person / "DOE_JANE_MRN12345678_seg.nii.gz", seg, dicom.affine, np.uint8)
    io.save_nifti(person / "DOE_JANE_2.nii.gz", phantom_hu(), affine_lps(), np.int16)
    io.save_nifti(person / "DOE_JANE_2_seg.nii.gz", phantom_label(), affine_lps(), np.uint8)
    raw = (phantom_hu().astype(np.int32) + 1024).astype(np.uint16)  # stored values, not HU
    io.save_nifti(tmp_path / "raw.nii.gz", raw, affine_lps(), np.uint16)
    cfg = user_cohort(
        tmp_path,
        [
            ("P1", "F", person / "DOE_JANE_CT", person / "DOE_JANE_MRN12345678_seg.nii.gz"),
            ("P2", "M", person / "DOE_JANE_2.nii.gz", person / "DOE_JANE_2_seg.nii.gz"),
            ("P3", "M", tmp_path / "raw.nii.gz", ""),
        ],
    )
    cfg.write_text(cfg.read_text().replace("chunks: 1", "chunks: 0"))  # a job per subject
    work = tmp_path / "work"
    targets = [f"results/ingested/{s}/image.nii.gz" for s in ("P1", "P2", "P3")]
    targets += ["results/ingested/P1/label.nii.gz", "results/cohort/included.tsv"]
    proc = run_snakemake(
        work, "--cores", "1", "--keep-going", *targets, configfiles=[cfg], check=False
    )
    assert proc.returncode != 0
    log = (work / "logs/ingest/P3.log").read_text()
    assert "[subject P3, file" in log and "not Hounsfield units" in log and "fix:" in log
    assert "Traceback" not in log and "Traceback" not in proc.stderr
    assert not (work / "results/ingested/P3/image.nii.gz").exists()
    for subject in ("P1", "P2"):
        assert (work / f"results/ingested/{subject}/image.nii.gz").exists()
    included = (work / "results/cohort/included.tsv").read_text()
    assert "has_label" in included and "P1" in included

    files = [p for p in (work / "results").rglob("*") if p.is_file()]
    assert len(files) >= 8
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        for secret in PLANTED:
            assert secret.encode() not in data.upper(), f"{secret} in {path}"
