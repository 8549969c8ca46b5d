"""The body mask: where the patient is in a CT scan (not air, not the table), one definition.

Used by the pre-processing (the crop to the body), the post-processing of predictions (labels
outside the body cleared) and the volumes (the body midline that splits left from right),
always with the ``preprocess`` section's body_* settings. Needs no torch or MONAI.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .io import spacing_from_affine


def body_mask(
    hu: np.ndarray,
    affine: np.ndarray,
    threshold_hu: float,
    opening_mm: float,
    min_component_fraction: float,
    coarse_mm: float,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The body on a coarse grid: threshold, opening, large 3-D components.

    Returns ``(mask, step)``: the mask on the grid ``hu[::step[0], ::step[1], ::step[2]]``.
    """
    spacing = np.asarray(spacing_from_affine(affine))
    step = tuple(int(max(1, np.floor(coarse_mm / s))) for s in spacing)
    coarse = np.asarray(hu)[:: step[0], :: step[1], :: step[2]] > threshold_hu
    coarse_spacing = spacing * np.asarray(step)
    radius = np.maximum(np.round(opening_mm / coarse_spacing).astype(int), 0)
    if radius.any():
        grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
        ball = sum((g / max(r, 1)) ** 2 for g, r in zip(grid, radius, strict=True)) <= 1.0
        opened = ndimage.binary_opening(coarse, structure=ball)
        # An opening can erase a thin body entirely (a tiny test volume); keep the threshold then.
        if opened.any():
            coarse = opened
    labelled, n = ndimage.label(coarse)
    if n == 0:
        return coarse, step
    sizes = np.bincount(labelled.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_component_fraction * sizes.max()) + 1
    return np.isin(labelled, keep), step


def body_region(hu: np.ndarray, affine: np.ndarray, body) -> np.ndarray:
    """Boolean mask (``hu``'s shape) of the body: :func:`body_mask` on its
    coarse grid, holes filled slice by slice (bowel gas, dark metal streaks stay inside),
    grown by one coarse voxel (the coarse grid and the opening shave the skin), then brought
    to full resolution. ``body`` holds the ``preprocess`` section's body_* settings.
    """
    hu = np.asarray(hu)
    coarse, step = body_mask(
        hu,
        affine,
        body.body_threshold_hu,
        body.body_opening_mm,
        body.body_min_component_fraction,
        body.body_coarse_mm,
    )
    filled = np.stack(
        [ndimage.binary_fill_holes(coarse[:, :, k]) for k in range(coarse.shape[2])], axis=2
    )
    grown = ndimage.binary_dilation(filled, structure=np.ones((3, 3, 3), bool))
    full = grown
    for axis, s in enumerate(step):
        full = np.repeat(full, s, axis=axis)
    return full[tuple(slice(0, n) for n in hu.shape)]
