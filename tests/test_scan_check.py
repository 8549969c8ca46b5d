"""The header check: every bad scan of a cohort found from its headers, all in one message."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid
from test_ingest import SHAPE, affine_lps, phantom_hu, phantom_label
from test_io import write_dicom_series

from thighct import io, scan_check
from thighct.errors import ScanErrors, ThighctError
from thighct.ingest import IngestSettings
from thighct.runlog import logged

SETTINGS = IngestSettings()
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
CRITERIA = [
    {"name": "age_over_50", "kind": "inclusion", "column": "age", "op": ">", "value": 50},
    {
        "name": "other_image_factor",
        "kind": "exclusion",
        "column": "other_image_factor",
        "op": "==",
        "value": False,
        "description": "Other image processing factors",
    },
]


def nifti(path, array=None, affine=None, dtype=np.int16):
    array = phantom_hu() if array is None else array
    io.save_nifti(path, array, affine_lps() if affine is None else affine, dtype)
    return str(path)


def row(subject, image, label="", label_rater2=""):
    return {
        "subject_id": subject,
        "image": str(image),
        "label": str(label),
        "label_rater2": label_rater2,
    }


def problems_of(rows, **kwargs) -> ScanErrors:
    with pytest.raises(ScanErrors) as err:
        scan_check.check_scans(rows, SETTINGS, criteria=CRITERIA, workers=1, **kwargs)
    return err.value


def one_problem(rows) -> str:
    """The one problem the check reports, which must name its subject, its file and a fix."""
    errors = problems_of(rows)
    assert len(errors.problems) == 1, str(errors)
    problem = errors.problems[0]
    assert problem.subject == rows[-1]["subject_id"] and problem.fix and problem.path
    assert "Traceback" not in str(errors)
    return str(problem)


@pytest.fixture
def good(tmp_path):
    """A good subject: image and label NIfTI on one grid."""
    image = nifti(tmp_path / "good_ct.nii.gz")
    label = nifti(tmp_path / "good_seg.nii.gz", phantom_label(), dtype=np.uint8)
    return row("G1", image, label)


# ----------------------------------------------------------------------------- good input
def test_good_nifti_and_dicom_scans_pass(tmp_path, good):
    write_dicom_series(tmp_path / "dicom")
    float_but_integer = nifti(
        tmp_path / "seg_f.nii.gz", phantom_label().astype(np.float32), dtype=np.float32
    )
    rows = [good, row("D1", tmp_path / "dicom"), row("F1", good["image"], float_but_integer)]
    summary = scan_check.check_scans(rows, SETTINGS, workers=2)
    assert summary == scan_check.CheckSummary(files=4, read=4)


def test_canonical_grid_from_a_header_is_the_grid_to_canonical_gives():
    array = np.zeros((5, 6, 7, 1))
    affine = np.array([[0, 0, -2.0, 10], [-1.5, 0, 0, 20], [0, 3.0, 0, -5], [0, 0, 0, 1]])
    out, out_affine = io.to_canonical(array, affine)
    shape, grid_affine = io.canonical_grid(array.shape, affine)
    assert shape == out.shape
    np.testing.assert_allclose(grid_affine, out_affine)


# ------------------------------------------------------------------------------ bad input
def test_four_d_image(tmp_path, good):
    bad = nifti(tmp_path / "ct4d.nii.gz", np.stack([phantom_hu()] * 2, axis=-1))
    text = one_problem([good, row("B1", bad)])
    assert "4 dimensions" in text and "ct4d.nii.gz" in text and "3-D" in text


def test_float_label_map_with_fractional_values(tmp_path, good):
    seg = nifti(tmp_path / "prob.nii.gz", phantom_label() * 0.5, dtype=np.float32)
    text = one_problem([good, row("B1", good["image"], seg)])
    assert "non-integer" in text and "prob.nii.gz" in text and "nearest neighbour" in text


def test_empty_nifti(tmp_path, good):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    text = one_problem([good, row("B1", tmp_path / "empty.nii.gz")])
    assert "empty (0 bytes)" in text and "empty.nii.gz" in text


@pytest.mark.parametrize("name", ["cut.nii.gz", "cut.nii"])
def test_truncated_nifti_with_an_intact_header(tmp_path, good, name):
    rng = np.random.default_rng(0)
    full = nifti(tmp_path / f"full_{name}", rng.integers(-1000, 1000, SHAPE))
    data = open(full, "rb").read()
    # Well past the header: nibabel reads the header fine, the voxels are cut short.
    (tmp_path / name).write_bytes(data[: int(len(data) * 0.8)])
    assert io.nifti_header(tmp_path / f"full_{name}")[0].shape == SHAPE
    text = one_problem([good, row("B1", tmp_path / name)])
    assert "truncated" in text and name in text


def test_gzip_of_several_members_is_not_mistaken_for_truncation(tmp_path, good):
    import gzip

    raw = gzip.decompress(open(good["image"], "rb").read())
    half = len(raw) // 2
    (tmp_path / "multi.nii.gz").write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    scan_check.check_scans([row("M1", tmp_path / "multi.nii.gz")], SETTINGS, workers=1)


def test_label_of_another_shape(tmp_path, good):
    seg = nifti(tmp_path / "seg_short.nii.gz", phantom_label()[:, :, :-1], dtype=np.uint8)
    text = one_problem([good, row("B1", good["image"], seg)])
    assert "grid differs" in text and "shape" in text and "seg_short.nii.gz" in text


def test_label_shifted_by_half_a_slice(tmp_path, good):
    shifted = affine_lps()
    shifted[2, 3] += 1.5
    seg = nifti(tmp_path / "seg_shift.nii.gz", phantom_label(), shifted, np.uint8)
    text = one_problem([good, row("B1", good["image"], seg)])
    assert "1.500 mm" in text and "grid_tolerance_mm" in text


def test_a_csv_given_as_the_image(tmp_path, good):
    (tmp_path / "scan.csv").write_text("a,b\n1,2\n")
    text = one_problem([good, row("B1", tmp_path / "scan.csv")])
    assert "unknown image format" in text and "scan.csv" in text


def test_two_series_sharing_a_uid_second_shifted_by_1_mm_are_not_merged(tmp_path, good):
    """Two 2 mm series, the second 1 mm further: once they became one 1 mm volume silently."""
    uid = generate_uid()
    folder = tmp_path / "mixed"
    write_dicom_series(folder, n_slices=20, spacing=2.0, series_uid=uid, prefix="A")
    write_dicom_series(
        folder,
        n_slices=20,
        spacing=2.0,
        series_uid=uid,
        series_number=4,
        origin=(-100.0, -80.0, -299.0),
        prefix="B",
    )
    text = one_problem([good, row("B1", folder)])
    assert "2 different series share SeriesInstanceUID" in text
    assert "SeriesNumber 3" in text and "SeriesNumber 4" in text and "own" in text
    with pytest.raises(ThighctError, match="different series share"):
        io.load_dicom_series(folder)


def test_series_without_uids_are_grouped_and_not_merged_when_they_differ(tmp_path, good):
    write_dicom_series(tmp_path / "one", series_uid="")
    assert io.load_dicom_series(tmp_path / "one").shape == (36, 40, 6)
    folder = tmp_path / "two"
    write_dicom_series(folder, series_uid="", description="AX 2.5", prefix="A")
    write_dicom_series(folder, series_uid="", description="AX 2.5 BONE", prefix="B")
    text = one_problem([good, row("B1", folder)])
    assert "SeriesInstanceUID (none" in text and "AX 2.5 BONE" in text


def test_overlapping_acquisitions_of_one_series_are_refused(tmp_path, good):
    uid = generate_uid()
    folder = tmp_path / "acq"
    write_dicom_series(
        folder, n_slices=10, spacing=2.0, series_uid=uid, acquisition_number=1, prefix="A"
    )
    write_dicom_series(
        folder,
        n_slices=10,
        spacing=2.0,
        series_uid=uid,
        acquisition_number=2,
        origin=(-100.0, -80.0, -299.0),
        prefix="B",
    )
    text = one_problem([good, row("B1", folder)])
    assert "acquisitions 1 and 2" in text and "overlapping" in text


def test_consecutive_acquisitions_of_one_series_make_one_volume(tmp_path):
    """A step-and-shoot scan: acquisitions cover consecutive ranges, one volume."""
    uid = generate_uid()
    folder = tmp_path / "steps"
    write_dicom_series(folder, n_slices=4, series_uid=uid, acquisition_number=1, prefix="A")
    write_dicom_series(
        folder,
        n_slices=4,
        series_uid=uid,
        acquisition_number=2,
        origin=(-100.0, -80.0, -290.0),
        prefix="B",
    )
    scan_check.check_scans([row("S1", folder)], SETTINGS, workers=1)
    assert io.load_dicom_series(folder).shape == (36, 40, 8)


def test_truncated_dicom_slice(tmp_path, good):
    folder = tmp_path / "dcm"
    write_dicom_series(folder, n_slices=4)
    victim = folder / "IM0002.dcm"
    victim.write_bytes(victim.read_bytes()[:-200])
    text = one_problem([good, row("B1", folder)])
    assert "lacks 200 bytes" in text and "IM0002.dcm" in text


def test_every_bad_scan_is_reported_at_once_with_the_way_to_exclude_it(tmp_path, good):
    nifti(tmp_path / "ct.nii.gz")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    four_d = nifti(tmp_path / "ct4d.nii.gz", np.stack([phantom_hu()] * 2, axis=-1))
    seg = nifti(tmp_path / "seg_short.nii.gz", phantom_label()[:, :, :-1], dtype=np.uint8)
    rows = [
        good,
        row("B1", tmp_path / "empty.nii.gz"),
        row("B2", four_d, seg),
        row("B3", tmp_path / "ct.nii.gz", label_rater2=seg),
    ]
    errors = problems_of(rows, table=tmp_path / "cohort.tsv")
    found = [(p.subject, os.path.basename(p.path)) for p in errors.problems]
    assert found == [
        ("B1", "empty.nii.gz"),
        ("B2", "ct4d.nii.gz"),
        ("B3", "seg_short.nii.gz"),
    ]
    text = str(errors)
    assert text.startswith("[file ") and "3 scan(s) cannot be ingested" in text
    assert "other_image_factor to true" in text and "Fig 1" in text


# ---------------------------------------------------------------------------------- cache
def test_an_unchanged_cohort_is_checked_from_the_cache(tmp_path, good):
    cache = tmp_path / ".snakemake" / "scan_headers.json"
    write_dicom_series(tmp_path / "dicom")
    rows = [good, row("D1", tmp_path / "dicom")]
    first = scan_check.check_scans(rows, SETTINGS, cache_path=cache, workers=1)
    again = scan_check.check_scans(rows, SETTINGS, cache_path=cache, workers=1)
    assert (first.read, again.read) == (3, 0)
    # A rewritten file is read again, and its new problem found.
    data = open(good["image"], "rb").read()
    open(good["image"], "wb").write(data[: len(data) // 2])
    with pytest.raises(ScanErrors, match="truncated"):
        scan_check.check_scans(rows, SETTINGS, cache_path=cache, workers=1)
    # A second series added to the DICOM folder is seen too.
    write_dicom_series(tmp_path / "dicom", n_slices=3, prefix="X", description="SCOUT")
    with pytest.raises(ScanErrors, match="2 series match"):
        scan_check.check_scans(
            [row("D1", tmp_path / "dicom")], SETTINGS, cache_path=cache, workers=1
        )


def test_a_problem_found_once_is_reported_again_from_the_cache(tmp_path, good):
    cache = tmp_path / "cache.json"
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    rows = [good, row("B1", tmp_path / "empty.nii.gz")]
    for _ in range(2):
        with pytest.raises(ScanErrors, match="empty"):
            scan_check.check_scans(rows, SETTINGS, cache_path=cache, workers=1)


# ------------------------------------------------------------------ errors inside a job
def test_an_input_error_in_a_job_is_logged_without_traceback_and_exits_1(tmp_path):
    log = tmp_path / "job.log"
    with pytest.raises(SystemExit) as stop:
        with logged(log):
            raise ThighctError("bad scan", subject="S1", path="x.nii.gz", fix="export it again")
    assert stop.value.code == 1
    text = log.read_text()
    assert "[subject S1, file x.nii.gz] bad scan" in text and "fix: export it again" in text
    assert "Traceback" not in text
    logging.getLogger().handlers.clear()


def test_an_unexpected_error_in_a_job_keeps_its_traceback(tmp_path):
    script = (
        "from thighct.runlog import logged\n"
        f"with logged({str(tmp_path / 'job.log')!r}):\n"
        "    {}['missing']\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "KeyError" in proc.stderr
    script = (
        "from thighct.errors import ThighctError\nfrom thighct.runlog import logged\n"
        f"with logged({str(tmp_path / 'job2.log')!r}):\n"
        "    raise ThighctError('bad scan', subject='S1', fix='export it again')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "[subject S1] bad scan" in proc.stderr and "fix: export it again" in proc.stderr
