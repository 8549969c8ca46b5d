"""Volumes and voxel grids: arrays with their affine, spacing, orientation and RAS+ reordering.

Arrays are in nibabel's voxel order ``(x, y, z) = (i, j, k)``; an affine maps voxel indices to
RAS+ world coordinates in mm (the NIfTI convention).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np


@dataclass
class Volume:
    """A 3-D image or label map with its geometry.

    ``array`` is indexed ``(x, y, z)`` (nibabel voxel order); ``affine`` is the 4x4 matrix from
    voxel index to RAS+ world position in mm. Unpacks as ``array, affine = volume``.
    """

    array: np.ndarray
    affine: np.ndarray
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator:
        yield self.array
        yield self.affine

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size along i, j, k in mm."""
        return spacing_from_affine(self.affine)

    @property
    def orientation(self) -> str:
        """Axis codes of the voxel axes, e.g. ``"RAS"`` or ``"LPS"``."""
        return orientation_of(self.affine)


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along the i, j, k voxel axes: the lengths of the affine's columns."""
    affine = np.asarray(affine, dtype=float)
    return tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))


def orientation_of(affine: np.ndarray) -> str:
    """The closest anatomical axis codes of the voxel axes (``"RAS"`` for canonical)."""
    return "".join(nib.aff2axcodes(np.asarray(affine, dtype=float)))


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder and flip voxel axes so they run closest to R, A, S (nibabel's canonical RAS+).

    The world position of every voxel is unchanged (only axis order and direction change), and
    the dtype is kept. Returns ``(array, affine)``.
    """
    # What nib.as_closest_canonical does, on bare arrays (any dtype, e.g. int64 labels).
    array = np.asarray(array)
    affine = np.asarray(affine, dtype=float)
    ornt = nib.orientations.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return array, affine.copy()
    out = nib.orientations.apply_orientation(array, ornt)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)
    return np.ascontiguousarray(out), new_affine


def canonical_grid(
    shape: tuple[int, ...], affine: np.ndarray
) -> tuple[tuple[int, ...], np.ndarray]:
    """The shape and affine :func:`to_canonical` gives a volume of this grid, without its voxels."""
    affine = np.asarray(affine, dtype=float)
    ornt = nib.orientations.io_orientation(affine)
    shape = tuple(int(n) for n in shape)
    new_shape = list(shape)
    for axis, (target, _) in enumerate(ornt):  # input axis `axis` becomes axis `target`
        new_shape[int(target)] = shape[axis]
    return tuple(new_shape), affine @ nib.orientations.inv_ornt_aff(ornt, shape)


@dataclass(frozen=True)
class Grid:
    """A voxel grid without its voxels: shape, affine (voxel -> RAS+ mm) and the file it is from."""

    shape: tuple[int, ...]
    affine: np.ndarray
    source: str = ""
