"""The per-scan kernel: every metric of every class from two label maps on the same grid.

Holds the checks of the two maps, the confusion matrix, the bounding boxes, the boundary of a
mask, the exact nearest-boundary distances, the metrics made from them, and the definitions of
the metrics that every per-subject table's header carries (see :mod:`thighct.metrics`).

Speed and memory come from never touching a one-hot of the whole volume: one confusion matrix
(``np.bincount`` over slabs) gives every overlap and volume; each class is then cropped to the
bounding box of P ∪ G with a margin (``scipy.ndimage.find_objects``, one pass per map), its
boundary found by face-neighbour erosion inside the crop, and exact nearest-boundary distances
in mm found in three steps: 0 for voxels on both boundaries, a search of the lattice offsets
in order of length for nearby ones, and a KD-tree over the boundary voxels' physical
coordinates for the rest. Needs only numpy and scipy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

# hd95 is defined by this percentile (the metric's name fixes it; not a study parameter).
HD_PERCENTILE = 95.0
# Voxels per slab of the confusion-matrix pass: bounds the temporary int64 index array to
# ~32 MiB whatever the scan size (an implementation limit, it does not change any result).
CONFUSION_CHUNK_VOXELS = 1 << 22
# Lattice offsets tried around each boundary voxel before falling back to the KD-tree: most
# boundary voxels of a fair segmentation lie within a few voxels of the other boundary, where
# a lookup is ~100× cheaper than a tree query. Changes speed only, never a result.
MAX_SHELL_OFFSETS = 256

METRIC_COLUMNS = ("dice", "assd_mm", "hd_mm", "hd95_mm", "ravd", "hd95_pooled_mm")
VOLUME_COLUMNS = ("volume_pred_mm3", "volume_true_mm3")

DEFINITIONS = {
    "boundary": "voxels of a mask with a face neighbour (6-neighbourhood) outside it; outside the volume counts as outside",
    "dice": "2|P∩G| / (|P| + |G|) over voxels; P = prediction, G = ground truth",
    "assd_mm": "mean of all boundary-to-nearest-boundary distances pooled from both directions (P→G and G→P), mm (MONAI symmetric=True)",
    "hd_mm": "Hausdorff distance: max of the two directed maximum boundary-to-boundary distances, mm",
    "hd95_mm": "max of the two directed 95th percentiles of boundary distances, mm (MONAI / DeepMind convention)",
    "ravd": "(|P| - |G|) / |G|, signed fraction (multiply by 100 for %)",
    "hd95_pooled_mm": "95th percentile of the boundary distances pooled from both directions, mm (MedPy hd95)",
    "volume_pred_mm3": "predicted volume |P| × voxel volume, mm³",
    "volume_true_mm3": "ground-truth volume |G| × voxel volume, mm³",
    "empty": "class absent from P and G: NaN everywhere (left out of means); present in only one: dice 0, NaN distances, counted as a miss; ravd -1 if P is empty, NaN if G is empty",
    "percentiles": "linear interpolation between order statistics (numpy.percentile default, torch.quantile)",
}


def check_label_maps(
    pred: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float]
) -> np.ndarray:
    """Check two label maps for comparison; return the spacing as a float64 array (mm)."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {truth.shape}")
    for name, arr in (("prediction", pred), ("ground truth", truth)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise ValueError(f"{name} label map must be integer, got {arr.dtype}")
        if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and arr.min() < 0:
            raise ValueError(f"{name} label map has negative labels")
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if spacing.shape != (pred.ndim,) or not np.all(spacing > 0):
        raise ValueError(f"spacing {spacing_mm} must be {pred.ndim} positive values in mm")
    return spacing


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, n_labels: int) -> np.ndarray:
    """Voxel counts ``C[g, p]`` of ground-truth label g against predicted label p.

    Counted slab by slab along the array's slowest axis, so the temporary index array stays
    small (``CONFUSION_CHUNK_VOXELS``) for any scan size. Labels must be < ``n_labels``.
    """
    # Follow the memory order (nibabel returns Fortran-ordered arrays) so each slab is contiguous.
    order = "F" if pred.flags.f_contiguous and truth.flags.f_contiguous and pred.ndim > 1 else "C"
    axis = pred.ndim - 1 if order == "F" else 0
    per_plane = max(1, pred.size // max(1, pred.shape[axis]))
    slab = max(1, CONFUSION_CHUNK_VOXELS // per_plane)
    counts = np.zeros(n_labels * n_labels, dtype=np.int64)
    for start in range(0, pred.shape[axis], slab):
        sl = tuple(
            slice(start, start + slab) if i == axis else slice(None) for i in range(pred.ndim)
        )
        g = truth[sl].ravel(order=order).astype(np.intp)
        g *= n_labels
        g += pred[sl].ravel(order=order).astype(np.intp, copy=False)
        counts += np.bincount(g, minlength=n_labels * n_labels)
    return counts.reshape(n_labels, n_labels)


def label_boxes(labels: np.ndarray, n_labels: int) -> list[tuple[slice, ...] | None]:
    """Bounding box (a tuple of slices) of every label value 0..n_labels-1; None where absent."""
    if labels.dtype == np.bool_:
        labels = labels.view(np.uint8)  # find_objects takes integers only
    boxes = ndimage.find_objects(labels, max_label=n_labels - 1) if n_labels > 1 else []
    return [None, *boxes]  # find_objects starts at label 1


def union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    """The smallest box holding both boxes (None when both are None)."""
    if a is None:
        return b
    if b is None:
        return a
    return tuple(
        slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )


def box_with_margin(
    box: tuple[slice, ...], margin: Sequence[int], shape: Sequence[int]
) -> tuple[tuple[slice, ...], list[tuple[int, int]]]:
    """``box`` grown by ``margin`` voxels per axis, clipped to ``shape``, and the padding
    (before, after) per axis that the clipping left missing."""
    grown, pad = [], []
    for sl, m, n in zip(box, margin, shape, strict=True):
        lo, hi = sl.start - int(m), sl.stop + int(m)
        grown.append(slice(max(lo, 0), min(hi, n)))
        pad.append((max(0, -lo), max(0, hi - n)))
    return tuple(grown), pad


def _padded(mask: np.ndarray, pad: list[tuple[int, int]]) -> np.ndarray:
    return np.pad(mask, pad) if any(a or b for a, b in pad) else mask


def boundary(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (outside the array counts as outside).

    Equal to ``mask ^ scipy.ndimage.binary_erosion(mask)`` (cross-shaped structure, border 0),
    MONAI's and MedPy's edge, computed with in-place slab ANDs that avoid temporaries.
    """
    inner = mask.copy()
    nd = mask.ndim
    for axis in range(nd):

        def sl(start, stop, axis=axis):
            return tuple(slice(start, stop) if i == axis else slice(None) for i in range(nd))

        inner[sl(1, None)] &= mask[sl(None, -1)]
        inner[sl(None, -1)] &= mask[sl(1, None)]
        inner[sl(0, 1)] = False
        inner[sl(-1, None)] = False
    np.logical_xor(mask, inner, out=inner)
    return inner


@dataclass(frozen=True)
class Shells:
    """Lattice offsets around a voxel, ordered by physical length and grouped by equal length.

    ``offsets`` (n, 3) voxel steps, ``lengths`` (n,) mm, ``starts`` the index where each group of
    equal length begins (plus n at the end), ``reach`` the voxel margin per axis they need and
    ``radius_mm`` the radius up to which they hold every lattice offset.
    """

    offsets: np.ndarray
    lengths: np.ndarray
    starts: np.ndarray
    reach: np.ndarray
    radius_mm: float


def lattice_shells(spacing: np.ndarray, max_offsets: int) -> Shells:
    """All non-zero lattice offsets within the largest radius (mm) that holds ≤ ``max_offsets``.

    The radius is the length of a lattice offset itself, so every offset up to it is included:
    a target found at a group's length is then the exact nearest one.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    # Reach enough for max_offsets in the densest direction, then keep the complete ball.
    reach = np.maximum(1, np.ceil((max_offsets ** (1 / 3)) * spacing.min() / spacing)).astype(int)
    grids = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    lengths = np.sqrt(((offsets * spacing) ** 2).sum(axis=1))
    order = np.argsort(lengths, kind="stable")
    offsets, lengths = offsets[order][1:], lengths[order][1:]  # drop the zero offset
    # The box only holds complete balls up to its smallest half-width.
    complete = lengths <= (reach * spacing).min() + 1e-9
    offsets, lengths = offsets[complete][:max_offsets], lengths[complete][:max_offsets]
    # Cut at a change of length so no group of equal length is split.
    if len(lengths) and len(lengths) == max_offsets:
        keep = lengths < lengths[-1]
        offsets, lengths = offsets[keep], lengths[keep]
    _, starts = np.unique(lengths, return_index=True)
    radius = float(lengths[-1]) if len(lengths) else 0.0
    reach = np.abs(offsets).max(axis=0) if len(offsets) else np.zeros(len(spacing), int)
    return Shells(offsets, lengths, np.append(starts, len(lengths)), reach, radius)


def directed_distances(
    source: np.ndarray,
    target: np.ndarray,
    spacing: np.ndarray,
    shells: Shells | None = None,
    workers: int = 1,
) -> np.ndarray:
    """Distance (mm) from every ``source`` boundary voxel to the nearest ``target`` boundary voxel.

    ``source`` and ``target`` are boundary masks on the same grid; when ``shells`` is given the
    grid must keep ``shells.reach`` empty voxels on every side (so offsets never wrap). Exact
    Euclidean distances in three steps: voxels on both boundaries have distance 0; the rest
    look for a target voxel among the lattice offsets in order of length (the first hit is the
    nearest); whatever is not found within ``shells.radius_mm`` is queried in a KD-tree over
    the target voxel centres scaled by ``spacing``. The order of the returned distances is
    not that of the voxels.
    """
    src = np.flatnonzero(source)
    tgt_flat = target.ravel()
    shared = tgt_flat[src]
    n_shared = int(np.count_nonzero(shared))
    todo = src[~shared]
    found = [np.zeros(n_shared)]
    if shells is not None and todo.size:
        strides = np.array([int(np.prod(target.shape[a + 1 :])) for a in range(target.ndim)])
        flat_offsets = shells.offsets @ strides
        for k in range(len(shells.starts) - 1):
            group = flat_offsets[shells.starts[k] : shells.starts[k + 1]]
            hit = tgt_flat[todo + group[0]]
            for off in group[1:]:
                hit |= tgt_flat[todo + off]
            n_hit = int(np.count_nonzero(hit))
            if n_hit:
                found.append(np.full(n_hit, shells.lengths[shells.starts[k]]))
                todo = todo[~hit]
                if not todo.size:
                    break
    if todo.size:
        points = np.stack(np.unravel_index(np.flatnonzero(tgt_flat), target.shape), axis=1)
        tree = cKDTree(points * spacing, balanced_tree=False, compact_nodes=False)
        queries = np.stack(np.unravel_index(todo, target.shape), axis=1) * spacing
        found.append(tree.query(queries, k=1, workers=workers)[0])
    return np.concatenate(found)


def surface_distance_metrics(d_pg: np.ndarray, d_gp: np.ndarray) -> dict[str, float]:
    """HD, HD95 (max of directed), HD95 pooled and ASSD from the two directed distance sets (mm)."""
    pooled = np.concatenate([d_pg, d_gp])
    return {
        "assd_mm": float(pooled.mean()),
        "hd_mm": float(max(d_pg.max(), d_gp.max())),
        "hd95_mm": float(
            max(np.percentile(d_pg, HD_PERCENTILE), np.percentile(d_gp, HD_PERCENTILE))
        ),
        "hd95_pooled_mm": float(np.percentile(pooled, HD_PERCENTILE)),
    }


def overlap_metrics(n_pred: int, n_true: int, n_both: int) -> dict[str, float]:
    """Dice and RAVD from voxel counts (NaN where undefined; see the module docstring)."""
    dice = math.nan if n_pred + n_true == 0 else 2.0 * n_both / (n_pred + n_true)
    ravd = math.nan if n_true == 0 else (n_pred - n_true) / n_true
    return {"dice": dice, "ravd": ravd}


def segmentation_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_mm: Sequence[float],
    class_ids: Iterable[int],
    workers: int = 1,
    max_shell_offsets: int = MAX_SHELL_OFFSETS,
) -> pd.DataFrame:
    """All metrics for every class in ``class_ids``, one row per class.

    ``pred`` and ``truth`` are integer label maps indexed ``(x, y, z)`` on the same grid;
    ``spacing_mm`` the voxel size along those axes (mm); ``workers`` the threads of the
    KD-tree queries. Columns: class_id, dice, assd_mm, hd_mm, hd95_mm, ravd, hd95_pooled_mm,
    volume_pred_mm3, volume_true_mm3.
    """
    spacing = check_label_maps(pred, truth, spacing_mm)
    if pred.flags.f_contiguous and truth.flags.f_contiguous and not pred.flags.c_contiguous:
        # nibabel returns Fortran-ordered arrays; the transposed views are C-ordered (no copy),
        # which the slab and flat-index steps below need for speed. Distances do not change
        # when the axes and the spacing are reversed together.
        pred, truth, spacing = pred.T, truth.T, spacing[::-1].copy()
    class_ids = [int(c) for c in class_ids]
    n_labels = int(max(pred.max(initial=0), truth.max(initial=0), max(class_ids, default=0))) + 1
    counts = confusion_matrix(pred, truth, n_labels)
    n_pred_all = counts.sum(axis=0)
    n_true_all = counts.sum(axis=1)
    boxes_pred = label_boxes(pred, n_labels)
    boxes_true = label_boxes(truth, n_labels)
    voxel_mm3 = float(np.prod(spacing))
    shells = lattice_shells(spacing, max_shell_offsets)

    rows = []
    for c in class_ids:
        n_pred, n_true, n_both = int(n_pred_all[c]), int(n_true_all[c]), int(counts[c, c])
        row = {"class_id": c, **overlap_metrics(n_pred, n_true, n_both)}
        row.update(dict.fromkeys(("assd_mm", "hd_mm", "hd95_mm", "hd95_pooled_mm"), math.nan))
        if n_pred and n_true:
            box, pad = box_with_margin(
                union_box(boxes_pred[c], boxes_true[c]), shells.reach, pred.shape
            )
            edge_p = boundary(_padded(pred[box] == c, pad))
            edge_g = boundary(_padded(truth[box] == c, pad))
            d_pg = directed_distances(edge_p, edge_g, spacing, shells, workers)
            d_gp = directed_distances(edge_g, edge_p, spacing, shells, workers)
            row.update(surface_distance_metrics(d_pg, d_gp))
        row["volume_pred_mm3"] = n_pred * voxel_mm3
        row["volume_true_mm3"] = n_true * voxel_mm3
        rows.append(row)
    columns = ["class_id", *METRIC_COLUMNS, *VOLUME_COLUMNS]
    return pd.DataFrame(rows, columns=columns)
