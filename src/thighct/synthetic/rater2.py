"""A second rater's label map, for the inter-rater agreement (ICC) of the annotated subjects."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def second_rater_labels(
    label: np.ndarray, spacing, rng: np.random.Generator, cfg: dict, muscle_ids
) -> np.ndarray:
    """A second rater's label map: boundaries moved by a voxel or two, small swaps.

    ``cfg`` is config ``synthetic.rater2``: ``shift_mm`` (SD of a smooth in-plane
    displacement field, mm; raters draw slice by slice), ``field_mm`` (its correlation
    length, mm), ``swaps`` (count of small regions given to a neighbouring muscle) and
    ``swap_radius_mm``. Works on any array orientation; ``spacing`` is the voxel size (mm)
    along the array axes.
    """
    label = np.asarray(label)
    shape = label.shape
    coarse = [
        max(2, int(math.ceil(n * s / cfg["field_mm"])) + 1)
        for n, s in zip(shape, spacing, strict=True)
    ]
    idx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    coords = []
    for axis in range(3):
        if axis == 2:
            coords.append(idx[2])
            continue
        field = rng.normal(0.0, cfg["shift_mm"] / spacing[axis], size=coarse).astype(np.float32)
        fine = ndimage.zoom(
            field,
            [n / c for n, c in zip(shape, coarse, strict=True)],
            order=1,
            grid_mode=True,
            mode="nearest",
        )
        fine = fine[: shape[0], : shape[1], : shape[2]]
        coords.append(idx[axis] + fine)
    out = ndimage.map_coordinates(label, coords, order=0, mode="nearest").astype(label.dtype)

    muscle = np.isin(out, np.asarray(list(muscle_ids)))
    boundary = np.zeros(shape, bool)
    for axis in (0, 1):
        a = np.take(out, range(0, shape[axis] - 1), axis=axis)
        b = np.take(out, range(1, shape[axis]), axis=axis)
        both = np.take(muscle, range(0, shape[axis] - 1), axis=axis) & np.take(
            muscle, range(1, shape[axis]), axis=axis
        )
        edge = both & (a != b)
        pad = [(0, 0)] * 3
        pad[axis] = (0, 1)
        boundary |= np.pad(edge, pad)
    candidates = np.argwhere(boundary)
    if len(candidates):
        radius = np.asarray([cfg["swap_radius_mm"] / s for s in spacing])
        for c in candidates[
            rng.choice(len(candidates), size=min(cfg["swaps"], len(candidates)), replace=False)
        ]:
            own = out[tuple(c)]
            lo = np.maximum(c - np.ceil(radius).astype(int), 0)
            hi = np.minimum(c + np.ceil(radius).astype(int) + 1, shape)
            box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            sub = out[box]
            neigh = sub[(sub != own) & np.isin(sub, list(muscle_ids))]
            if neigh.size == 0:
                continue
            other = np.bincount(neigh).argmax()
            grids = np.meshgrid(
                *[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij"
            )
            inside = (
                sum(((g - ci) / r) ** 2 for g, ci, r in zip(grids, c, radius, strict=True)) <= 1.0
            )
            sub[inside & (sub == own)] = other
    return out
