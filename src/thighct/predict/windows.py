"""Window placement: MONAI's windows for a ROI and overlap, and what they imply.

Sizes and corners are in voxels, axes in the image's ``(x, y, z)`` order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def scan_interval(image_size: Sequence[int], roi: Sequence[int], overlap: float) -> tuple[int, ...]:
    """Step between window starts per axis (voxels): ``int(roi * (1 - overlap))``, as MONAI."""
    steps = []
    for size, r in zip(image_size, roi, strict=True):
        steps.append(int(r) if r == size else max(int(r * (1.0 - overlap)), 1))
    return tuple(steps)


def axis_starts(size: int, roi: int, step: int) -> list[int]:
    """Window starts along one axis (voxels): every ``step``, the last one flush with the end.

    The same positions as MONAI's ``dense_patch_slices`` for an axis at least ``roi`` long.
    """
    n = 1
    while (n - 1) * step + roi < size:
        n += 1
    return [i * step - max(i * step + roi - size, 0) for i in range(n)]


def window_starts(
    image_size: Sequence[int], roi: Sequence[int], overlap: float
) -> list[tuple[int, ...]]:
    """All window corners (voxels), first axis outermost: MONAI's windows in MONAI's order."""
    steps = scan_interval(image_size, roi, overlap)
    per_axis = [axis_starts(s, r, t) for s, r, t in zip(image_size, roi, steps, strict=True)]
    grids = np.meshgrid(*per_axis, indexing="ij")
    return [
        tuple(int(v) for v in corner) for corner in zip(*(g.ravel() for g in grids), strict=True)
    ]


def roi_padding(image_size: Sequence[int], roi: Sequence[int]) -> list[tuple[int, int]]:
    """(before, after) zero padding per axis that brings an axis shorter than the ROI up to it.

    Half (rounded down) goes before, as MONAI pads.
    """
    pads = []
    for size, r in zip(image_size, roi, strict=True):
        diff = max(int(r) - int(size), 0)
        pads.append((diff // 2, diff - diff // 2))
    return pads


def choose_slab_axis(image_size: Sequence[int], roi: Sequence[int]) -> int:
    """The axis to stream along: the one that makes the ROI-deep accumulator smallest.

    The accumulator holds ``roi[a] * prod(size[b], b != a)`` voxels, smallest where
    ``size[a] / roi[a]`` is largest.
    """
    ratios = [int(s) / int(r) for s, r in zip(image_size, roi, strict=True)]
    return int(np.argmax(ratios))


def importance_map(
    roi: Sequence[int], mode: str, sigma_scale: float, device: torch.device
) -> torch.Tensor | None:
    """Per-voxel window weight (roi-shaped, float32), MONAI's; ``None`` for constant weights."""
    if mode == "constant":
        return None
    from monai.data.utils import compute_importance_map

    return compute_importance_map(
        tuple(int(r) for r in roi),
        mode=mode,
        sigma_scale=sigma_scale,
        device=device,
        dtype=torch.float32,
    )


def max_cover(image_size: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """The most windows that overlap one voxel of an image of ``image_size`` (already padded
    to at least the ROI): per axis, the most window spans over one coordinate, multiplied."""
    steps = scan_interval(image_size, roi, overlap)
    cover = 1
    for size, r, step in zip(image_size, roi, steps, strict=True):
        counts = np.zeros(int(size), dtype=np.int64)
        for start in axis_starts(int(size), int(r), int(step)):
            counts[start : start + int(r)] += 1
        cover *= int(counts.max())
    return cover


def count_windows(image_size: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of windows sliding-window inference runs over an image of ``image_size``."""
    pads = roi_padding(image_size, roi)
    size = [s + a + b for s, (a, b) in zip(image_size, pads, strict=True)]
    steps = scan_interval(size, roi, overlap)
    return math.prod(len(axis_starts(s, r, t)) for s, r, t in zip(size, roi, steps, strict=True))
