"""The one definition of "the same voxel grid", used wherever two volumes must match voxel for
voxel: a label map and its image (ingest, volumes), a prediction and the ground truth
(metrics), an ingested scan and the grid its pre-processing recorded (infer).

Two grids are the same when their shapes are equal and the world positions (mm) of their 8
corner voxels lie within a tolerance of each other: a criterion in millimetres, so header
rounding passes and a shifted, flipped or rescaled grid does not, whatever the voxel size.
Needs only numpy (the statistics environment has no imaging stack).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def grid_mismatch_mm(shape: Sequence[int], affine_a: np.ndarray, affine_b: np.ndarray) -> float:
    """Largest distance (mm) between the world positions of the 8 corner voxels of two grids."""
    corners = np.array(
        [
            [i, j, k, 1.0]
            for i in (0, shape[0] - 1)
            for j in (0, shape[1] - 1)
            for k in (0, shape[2] - 1)
        ]
    ).T
    a = (np.asarray(affine_a, float) @ corners)[:3]
    b = (np.asarray(affine_b, float) @ corners)[:3]
    return float(np.sqrt(((a - b) ** 2).sum(axis=0)).max())


def grid_difference(
    shape_a: Sequence[int],
    affine_a: np.ndarray,
    shape_b: Sequence[int],
    affine_b: np.ndarray,
    tolerance_mm: float,
) -> str | None:
    """None when grid a is grid b (see the module), else what differs, in words."""
    shape_a, shape_b = tuple(int(s) for s in shape_a), tuple(int(s) for s in shape_b)
    if shape_a != shape_b:
        return f"shape {list(shape_a)} against {list(shape_b)}"
    gap = grid_mismatch_mm(shape_a, affine_a, affine_b)
    if gap > tolerance_mm:
        origin_a = np.round(np.asarray(affine_a, float)[:3, 3], 3).tolist()
        origin_b = np.round(np.asarray(affine_b, float)[:3, 3], 3).tolist()
        return (
            f"corners {gap:.3f} mm apart (tolerance {tolerance_mm:g} mm); "
            f"origins {origin_a} against {origin_b}"
        )
    return None
