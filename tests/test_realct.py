"""A real CT (TotalSegmentator's example, ../shared/data/real-ct) through ingest and preprocess.

Real HU (int32, -1207..3382), a metal hip implant on the left, structures cut by the lowest
slice, and TotalSegmentator v1 label ids mapped onto ours. Runs where the files exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from thighct import ingest, io
from thighct import preprocess as pp
from thighct.labels import read_labels

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real-ct"
CT = REAL / "example_ct.nii.gz"
SEG = REAL / "example_seg_v1.nii.gz"

pytestmark = [
    pytest.mark.realct,
    pytest.mark.skipif(not (CT.exists() and SEG.exists()), reason=f"no real CT at {REAL}"),
]

# TotalSegmentator v1 ids -> project classes (left and right are one class here).
TOTALSEG_V1 = {
    88: "femur",
    89: "femur",
    90: "iliac",
    91: "iliac",
    94: "gluteus_maximus",
    95: "gluteus_maximus",
    96: "gluteus_medius",
    97: "gluteus_medius",
    98: "gluteus_minimus",
    99: "gluteus_minimus",
    102: "iliopsoas",
    103: "iliopsoas",
}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    out = tmp_path_factory.mktemp("realct")
    labels = read_labels(REPO / "config" / "labels.tsv")
    settings = ingest.IngestSettings(label_map=TOTALSEG_V1, drop_unmapped=True)
    info = ingest.ingest_subject(
        CT, out / "image.nii.gz", out / "info.json", settings, subject="realct"
    )
    label_info = ingest.ingest_subject_label(
        SEG,
        out / "image.nii.gz",
        out / "label.nii.gz",
        out / "label_info.json",
        labels,
        settings,
        subject="realct",
    )
    image = io.load_nifti(out / "image.nii.gz")
    label = io.load_nifti(out / "label.nii.gz")
    return image, label, info, label_info, labels


def test_real_hu_with_metal_are_kept_not_rejected(ingested):
    image, _, info, _, _ = ingested
    assert info["source_dtype"] == "int32"
    assert (info["hu_min"], info["hu_max"]) == (-1207, 3382)
    assert image.array.dtype == np.int16 and int(image.array.max()) == 3382


def test_orientation_is_ras_and_the_implant_is_on_the_patients_left(ingested):
    image, _, info, _, _ = ingested
    assert info["orientation"] == "RAS" and info["spacing_mm"] == [3.0, 3.0, 3.0]
    metal = np.argwhere(image.array > 2000)
    x_world = (image.affine @ np.c_[metal, np.ones(len(metal))].T)[0]
    centre_x = (image.affine @ [image.shape[0] / 2, 0, 0, 1])[0]
    # RAS+: x grows towards the patient's right, so the left implant sits below the centre.
    assert np.median(x_world) < centre_x
    # ... and low in the scan (near the hip joint), not in the abdomen.
    assert np.median(metal[:, 2]) < image.shape[2] * 0.25


def test_totalsegmentator_ids_become_our_classes_and_the_rest_background(ingested):
    _, label, _, label_info, labels = ingested
    present = {labels.name_of(int(c)) for c in np.unique(label.array) if c}
    assert present == set(TOTALSEG_V1.values())
    assert 92 in label_info["dropped_ids"]  # sacrum is not one of our classes


def test_structures_cut_by_the_lowest_slice_are_reported(ingested):
    _, _, _, label_info, _ = ingested
    for name in ("femur", "iliac", "gluteus_maximus"):
        assert "inferior" in label_info["touches_border"][name]


def test_preprocessing_and_the_way_back(ingested):
    image, label, _, _, _ = ingested
    same = pp.preprocess_volume(
        image.array, image.affine, pp.PreprocessSettings(spacing_mm=(3.0, 3.0, 3.0)), label.array
    )
    np.testing.assert_array_equal(pp.to_native(same.label, same.transform), label.array)
    paper = pp.preprocess_volume(image.array, image.affine, pp.PreprocessSettings(), label.array)
    assert io.spacing_from_affine(paper.affine) == pytest.approx((1.5, 1.5, 2.0))
    back = pp.to_native(paper.label, paper.transform)
    for c in np.unique(label.array)[1:]:
        a, b = back == c, label.array == c
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.98
    # Crop to the body: every labelled voxel survives it.
    start, end = same.transform["crop"]["start"], same.transform["crop"]["end"]
    idx = np.argwhere(label.array > 0)
    assert np.all(idx.min(axis=0) >= start) and np.all(idx.max(axis=0) < end)
