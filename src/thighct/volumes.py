"""Per-structure volumes and muscle quality of one scan: volume (mm³) by side, mean HU, IMAT share.

One row per class and per group (``labels.groups()``), long format, columns
:data:`COLUMNS`:

* ``volume_mm3``: voxel count x voxel volume (mm³, ``|det|`` of the affine's 3x3 part);
  background (id 0) has no row.
* ``volume_left_mm3`` / ``volume_right_mm3``: the part on the subject's left / right of the body
  midline. In RAS+ world coordinates the subject's right is **+x**; a voxel centre with world
  x at or beyond the midline counts as right.
* ``mean_hu``: mean Hounsfield units of the structure's voxels.
* ``imat_fraction``: share of the structure's voxels inside the intramuscular adipose tissue
  band (HU, default -190..-30, both ends included); muscles only, empty (NaN) for bone.
* ``fov_cut``: the structure touches the first or last axial slice, so the field of view cuts
  it and its volume is a lower bound.

Group rows (``class_id`` -1, ``class_name`` = ``group`` = the group's name) are the sums of
their members: volumes add, ``mean_hu`` and ``imat_fraction`` are voxel-weighted over all
member voxels, ``fov_cut`` is true when any member is cut. A structure absent from the label
map has volume 0 and empty ``mean_hu`` / ``imat_fraction``.

The midline
-----------
Per axial slice, the midline is the world x of the body's centroid: the body is the mask of
:func:`thighct.body.body_mask` (voxels above a HU threshold, opened to detach the table
and clothing, small components dropped), computed on the same coarse grid the pre-processing
uses. The centroid of the whole cross-section sits between the legs below the pelvis and on
the symphysis above it; the table, which could pull it sideways, is removed by the opening.
Slice centroids are smoothed along z with a running median (``midline_smooth_mm``), so a
single odd slice (an arm, a cable) does not move it; slices without body take the nearest
slice's value. The image decides the midline, not the labels, so every source (each model, each
rater) of a scan is split at the same place. On TotalSegmentator's example CT (a metal hip on
the left) this split reproduces its left/right femur, glutei and iliopsoas voxel for voxel
(tests/test_volumes.py). A grossly asymmetric body (one leg much thicker) moves the centroid
towards the thicker side; the gap between the thighs is usually wide enough to absorb that.

Arrays are indexed ``(x, y, z)`` (nibabel voxel order, RAS+ world) and ``z`` (the third voxel
axis) is axial, as on every ingested scan. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from .grid import grid_difference
from .labels import LabelTable
from .volume_tables import COLUMNS, GROUP_ID

# Voxels handled per step (memory of the index arrays, not a result-changing choice).
_SLAB_VOXELS = 1 << 24


@dataclass(frozen=True)
class VolumeSettings:
    """The ``volumes:`` section of the config (see workflow/schemas/config.schema.yaml).

    imat_hu: [low, high] HU band of intramuscular adipose tissue (inclusive). Usual -190..-30.
    midline_smooth_mm: length (mm) of the running median that smooths the midline along z.
    body_threshold_hu, body_opening_mm, body_min_component_fraction, body_coarse_mm: the body
        mask for the midline (as in the ``preprocess:`` section).
    """

    imat_hu: tuple[float, float] = (-190.0, -30.0)
    midline_smooth_mm: float = 30.0
    body_threshold_hu: float = -500.0
    body_opening_mm: float = 4.0
    body_min_component_fraction: float = 0.1
    body_coarse_mm: float = 4.0

    @classmethod
    def from_config(cls, section: Mapping) -> VolumeSettings:
        known = asdict(cls())
        keys = {k: section[k] for k in known if k in section}
        if "imat_hu" in keys:
            keys["imat_hu"] = tuple(float(v) for v in keys["imat_hu"])
        return cls(**keys)


# ----------------------------------------------------------------------------- geometry
def voxel_volume_mm3(affine: np.ndarray) -> float:
    """Volume of one voxel (mm³): the absolute determinant of the affine's 3x3 part."""
    return float(abs(np.linalg.det(np.asarray(affine, float)[:3, :3])))


def body_midline_x(hu: np.ndarray, affine: np.ndarray, settings: VolumeSettings) -> np.ndarray:
    """Body midline per axial slice: world x (mm, RAS+) of the body centroid, smoothed along z.

    Returns one value per slice ``k``. A scan without any body voxel gets the x of its centre.
    """
    from .body import body_mask
    from .io import spacing_from_affine

    hu = np.asarray(hu)
    affine = np.asarray(affine, float)
    mask, step = body_mask(
        hu,
        affine,
        settings.body_threshold_hu,
        settings.body_opening_mm,
        settings.body_min_component_fraction,
        settings.body_coarse_mm,
    )
    nz = hu.shape[2]
    centre = (np.asarray(hu.shape, float) - 1) / 2
    if not mask.any():
        return np.full(nz, float((affine @ np.array([*centre, 1.0]))[0]))
    # Coarse voxel (a, b, c) is full-resolution voxel (a, b, c) * step.
    ci = np.arange(mask.shape[0]) * step[0]
    cj = np.arange(mask.shape[1]) * step[1]
    ck = np.arange(mask.shape[2]) * step[2]
    per_slice = mask.sum(axis=(0, 1))
    sum_i = np.einsum("abc,a->c", mask, ci.astype(float))
    sum_j = np.einsum("abc,b->c", mask, cj.astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_i, mean_j = sum_i / per_slice, sum_j / per_slice
    x_coarse = affine[0, 0] * mean_i + affine[0, 1] * mean_j + affine[0, 2] * ck + affine[0, 3]
    have = per_slice > 0
    if not have.all():
        # Empty slices take the nearest non-empty slice's centroid.
        nearest = ndimage.distance_transform_edt(~have, return_distances=False, return_indices=True)
        x_coarse = x_coarse[nearest[0]]
    dz = spacing_from_affine(affine)[2] * step[2]
    width = max(int(round(settings.midline_smooth_mm / dz)), 1)
    if width > 1:
        x_coarse = ndimage.median_filter(x_coarse, size=width, mode="nearest")
    # Coarse slice c is full-resolution slice c * step; take the nearest.
    k_full = np.minimum(np.rint(np.arange(nz) / step[2]).astype(int), len(x_coarse) - 1)
    return x_coarse[k_full]


def check_same_grid(
    label: np.ndarray,
    label_affine: np.ndarray,
    image: np.ndarray,
    image_affine: np.ndarray,
    *,
    subject: str | None = None,
    path=None,
    tolerance_mm: float = 1e-3,
) -> None:
    """Raise unless the label map lies on the image's grid (:mod:`thighct.grid`)."""
    from .errors import ThighctError

    difference = grid_difference(
        np.shape(label), label_affine, np.shape(image), image_affine, tolerance_mm
    )
    if difference:
        raise ThighctError(
            f"the label map is not on the grid of the ingested image ({difference}, label "
            "against image); volumes and HU would not match voxel for voxel",
            subject=subject,
            path=path,
            fix="rerun the rule that wrote the label map (predict or ingest_label) for this subject",
        )


# ----------------------------------------------------------------------------- counting
@dataclass
class ClassSums:
    """Per class id (index): voxel counts (all, right), HU sum and IMAT-band counts."""

    count: np.ndarray
    count_right: np.ndarray
    hu_sum: np.ndarray
    imat: np.ndarray


def class_sums(
    label: np.ndarray,
    hu: np.ndarray,
    affine: np.ndarray,
    midline_x: np.ndarray,
    n_classes: int,
    imat_hu: Sequence[float],
) -> ClassSums:
    """Per foreground class: voxel count (all, right side), HU sum, count in the IMAT band.

    Background (id 0) is not counted. Works slab by slab along z on the labelled voxels only,
    so memory stays small and time follows the labelled volume, whatever the scan size.
    """
    label = np.asarray(label)
    hu = np.asarray(hu)
    if label.shape != hu.shape:
        raise ValueError(f"label shape {label.shape} differs from image shape {hu.shape}")
    if label.size and int(label.max()) >= n_classes:
        raise ValueError(
            f"label id {int(label.max())} is not in the label table (0..{n_classes - 1})"
        )
    lo, hi = (float(v) for v in imat_hu)
    a = np.asarray(affine, float)
    sums = ClassSums(*(np.zeros(n_classes) for _ in range(4)))
    nx, ny, nz = label.shape
    slab = max(1, _SLAB_VOXELS // max(nx * ny, 1))
    for k0 in range(0, nz, slab):
        k1 = min(k0 + slab, nz)
        # Fortran order: nibabel's arrays are Fortran-ordered, so these are views, not copies.
        flat = label[:, :, k0:k1].ravel(order="F")
        idx = np.flatnonzero(flat)
        if idx.size == 0:
            continue
        lab = flat[idx].astype(np.intp)
        h = hu[:, :, k0:k1].ravel(order="F")[idx].astype(np.float64)
        i = idx % nx
        j = (idx // nx) % ny
        k = k0 + idx // (nx * ny)
        x = a[0, 0] * i + a[0, 1] * j + a[0, 2] * k + a[0, 3]
        right = x >= midline_x[k]
        sums.count += np.bincount(lab, minlength=n_classes)
        sums.count_right += np.bincount(lab[right], minlength=n_classes)
        sums.hu_sum += np.bincount(lab, weights=h, minlength=n_classes)
        sums.imat += np.bincount(lab[(h >= lo) & (h <= hi)], minlength=n_classes)
    return sums


def fov_cut_ids(label: np.ndarray) -> set[int]:
    """Class ids present on the first or the last axial slice (cut by the field of view)."""
    label = np.asarray(label)
    edge = np.concatenate([np.unique(label[:, :, 0]), np.unique(label[:, :, -1])])
    return {int(v) for v in edge}


# ----------------------------------------------------------------------------- table
def _row(
    subject, class_id, name, group, count, count_right, hu_sum, imat, voxel_mm3, cut, is_muscle
):
    return {
        "subject": subject,
        "class_id": class_id,
        "class_name": name,
        "group": group,
        "volume_mm3": count * voxel_mm3,
        "volume_left_mm3": (count - count_right) * voxel_mm3,
        "volume_right_mm3": count_right * voxel_mm3,
        "mean_hu": hu_sum / count if count else np.nan,
        "imat_fraction": imat / count if count and is_muscle else np.nan,
        "fov_cut": bool(cut),
    }


def subject_volumes(
    subject: str,
    label: np.ndarray,
    hu: np.ndarray,
    affine: np.ndarray,
    labels: LabelTable,
    settings: VolumeSettings,
) -> pd.DataFrame:
    """The volume table (:data:`COLUMNS`) of one scan: a row per foreground class, then per group.

    ``label``: class ids (``labels`` ids) and ``hu``: Hounsfield units, both indexed ``(x, y, z)``
    on the grid of ``affine`` (voxel -> RAS+ mm).
    """
    midline = body_midline_x(hu, affine, settings)
    sums = class_sums(label, hu, affine, midline, labels.n_classes, settings.imat_hu)
    voxel_mm3 = voxel_volume_mm3(affine)
    cut = fov_cut_ids(label)
    muscle_ids = {int(i) for i in labels.muscles["id"]}
    groups = labels.id_to_group
    rows = []
    for cid in labels.ids:
        if cid == 0:
            continue
        rows.append(
            _row(
                subject,
                cid,
                labels.name_of(cid),
                groups[cid],
                sums.count[cid],
                sums.count_right[cid],
                sums.hu_sum[cid],
                sums.imat[cid],
                voxel_mm3,
                cid in cut,
                cid in muscle_ids,
            )
        )
    for group, members in labels.groups(include_bone=True).items():
        m = np.asarray(members)
        rows.append(
            _row(
                subject,
                GROUP_ID,
                group,
                group,
                sums.count[m].sum(),
                sums.count_right[m].sum(),
                sums.hu_sum[m].sum(),
                sums.imat[m].sum(),
                voxel_mm3,
                bool(cut & set(members)),
                all(i in muscle_ids for i in members),
            )
        )
    return pd.DataFrame(rows, columns=COLUMNS)
