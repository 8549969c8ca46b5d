"""Segmentation metrics (Dice, Hausdorff, HD95, ASSD, RAVD), their summaries, ICC and the Fig 5 table.

All label maps are integer arrays indexed ``(x, y, z)`` (nibabel voxel order) on the scan's
native grid; ``spacing_mm`` is the voxel size along those axes in mm. Distances are in mm,
volumes in mm³, RAVD is a signed fraction.

Definitions (also in docs/metrics.md and in every table's header comment):

* boundary of a mask: its voxels with at least one of the 6 face neighbours outside the mask
  (outside the volume counts as outside). This is the edge of MONAI's ``get_mask_edges``
  (``binary_erosion`` with scipy's default cross-shaped structure, XOR the mask) and of MedPy.
* ``dice`` = 2|P∩G| / (|P| + |G|)
* ``hd_mm`` = max of the two directed maximum boundary-to-boundary distances
* ``hd95_mm`` = max of the two directed 95th percentiles (MONAI / DeepMind convention)
* ``hd95_pooled_mm`` = 95th percentile of both directions' distances pooled (MedPy ``hd95``)
* ``assd_mm`` = mean of both directions' distances pooled (MONAI ``symmetric=True``)
* ``ravd`` = (|P| − |G|) / |G|, signed fraction
* a class absent from both masks: NaN everywhere; present in one only: Dice 0, NaN distances
  (a "miss"); RAVD is −1 when only the prediction is empty and NaN when the truth is empty.

Speed and memory come from never touching a one-hot of the whole volume: one confusion matrix
(``np.bincount`` over slabs) gives every overlap and volume; each class is then cropped to the
bounding box of P ∪ G with a margin (``scipy.ndimage.find_objects``, one pass per map), its
boundary found by face-neighbour erosion inside the crop, and exact nearest-boundary distances
in mm found in three steps: 0 for voxels on both boundaries, a search of the lattice offsets
in order of length for nearby ones, and a KD-tree over the boundary voxels' physical
coordinates for the rest.

The per-scan kernel needs only numpy and scipy; :func:`volume_icc` imports pingouin when called.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from .errors import ThighctError
from .grid import grid_difference

# hd95 is defined by this percentile (the metric's name fixes it; not a study parameter).
HD_PERCENTILE = 95.0
# Voxels per slab of the confusion-matrix pass: bounds the temporary int64 index array to
# ~32 MiB whatever the scan size (an implementation limit, it does not change any result).
CONFUSION_CHUNK_VOXELS = 1 << 22
# Lattice offsets tried around each boundary voxel before falling back to the KD-tree: most
# boundary voxels of a fair segmentation lie within a few voxels of the other boundary, where
# a lookup is ~100× cheaper than a tree query. Changes speed only, never a result.
MAX_SHELL_OFFSETS = 256
# pingouin's two-way ANOVA needs at least 5 ratings: 3 subjects for 2 raters.
ICC_MIN_SUBJECTS = 3
# Two points always lie on a line (r = ±1), so VC needs three subjects to mean anything.
VC_MIN_SUBJECTS = 3

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


# ------------------------------------------------------------------------------ the kernel
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


def evaluate_files(
    subjects: Sequence[str],
    pred_paths: Sequence,
    truth_paths: Sequence,
    class_names: Mapping[int, str],
    workers: int = 1,
    grid_tolerance_mm: float = 0.1,
    log=None,
) -> pd.DataFrame:
    """Metrics of every subject's predicted label map against its ground truth, per class.

    ``class_names`` maps the foreground class ids to evaluate to their names. Both maps are
    read with :func:`thighct.io.load_nifti` and must share the native grid (shape and affine
    within ``grid_tolerance_mm``); the spacing (mm) comes from the affine's column lengths.
    Returns one row per (subject, class): subject, class_id, class, the metrics and volumes.
    """
    from .io import load_nifti, spacing_from_affine

    parts = []
    for subject, pred_path, truth_path in zip(subjects, pred_paths, truth_paths, strict=True):
        pred = load_nifti(pred_path, subject=subject)
        truth = load_nifti(truth_path, subject=subject)
        check_same_grid(
            pred.affine,
            truth.affine,
            pred.shape,
            truth.shape,
            grid_tolerance_mm,
            subject=subject,
            pred_path=pred_path,
            truth_path=truth_path,
        )
        for name, vol in (("prediction", pred), ("ground truth", truth)):
            if not np.issubdtype(vol.array.dtype, np.integer):
                raise ThighctError(
                    f"{name} is not an integer label map (dtype {vol.array.dtype})",
                    subject=subject,
                    path=vol.source,
                    fix="store label maps with an integer dtype (uint8)",
                )
        spacing = spacing_from_affine(truth.affine)
        part = segmentation_metrics(pred.array, truth.array, spacing, list(class_names), workers)
        part.insert(0, "subject", subject)
        part.insert(2, "class", [class_names[c] for c in part["class_id"]])
        parts.append(part)
        if log is not None:
            log.info("%s: mean Dice %.3f over %d classes", subject, part["dice"].mean(), len(part))
    columns = ["subject", "class_id", "class", *METRIC_COLUMNS, *VOLUME_COLUMNS]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


# ------------------------------------------------------------------------------- summaries
def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two samples; NaN with fewer than ``VC_MIN_SUBJECTS`` pairs or no variance."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < VC_MIN_SUBJECTS:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    return math.nan if denom == 0 else float((dx * dy).sum() / denom)


def volume_slope(pred: np.ndarray, true: np.ndarray) -> float:
    """Slope of log predicted on log true volume (OLS) over pairs with both volumes > 0.

    1 means volumes in proportion; below 1, larger structures are drawn relatively smaller
    (and smaller ones larger), which pulls any group comparison of volumes toward zero even
    where the volume correlation is high. NaN with fewer than ``VC_MIN_SUBJECTS`` pairs or
    constant true volumes.
    """
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    keep = (pred > 0) & (true > 0)
    if keep.sum() < VC_MIN_SUBJECTS:
        return math.nan
    x, y = np.log(true[keep]), np.log(pred[keep])
    dx = x - x.mean()
    sxx = float((dx * dx).sum())
    return math.nan if sxx == 0 else float((dx * (y - y.mean())).sum() / sxx)


def is_miss(per_subject: pd.DataFrame) -> pd.Series:
    """Rows where the class is present in exactly one of prediction and ground truth."""
    return (per_subject["volume_pred_mm3"] > 0) != (per_subject["volume_true_mm3"] > 0)


def summarise_metrics(per_subject: pd.DataFrame) -> pd.DataFrame:
    """Per class: mean and sd (ddof 1, NaN left out) of each metric, misses and VC.

    ``per_subject`` has one row per (subject, class) as written by the ``metrics`` rule.
    ``n_subjects`` counts subjects where the class is present in P or G; ``misses`` those where
    it is present in only one; ``vc`` is the Pearson r of predicted against true volumes over
    the subjects where the class is present in P or G, ``volume_slope`` the log-log slope of
    predicted on true volume (:func:`volume_slope`).
    """
    rows = []
    for (cid, name), grp in per_subject.groupby(["class_id", "class"], sort=True):
        present = grp[(grp["volume_pred_mm3"] > 0) | (grp["volume_true_mm3"] > 0)]
        row = {"class_id": int(cid), "class": name, "n_subjects": len(present)}
        for m in METRIC_COLUMNS:
            vals = present[m].dropna()
            row[f"{m}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{m}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        row["misses"] = int(is_miss(present).sum())
        row["vc"] = pearson_r(present["volume_pred_mm3"], present["volume_true_mm3"])
        row["volume_slope"] = volume_slope(present["volume_pred_mm3"], present["volume_true_mm3"])
        rows.append(row)
    return pd.DataFrame(rows)


SUMMARY_DEFINITIONS = {
    "<metric>_mean / <metric>_sd": "mean and sample sd (ddof=1) over subjects where the metric is defined (NaN left out)",
    "n_subjects": "subjects where the class is present in the prediction or the ground truth",
    "misses": "subjects where the class is present in only one of prediction and ground truth (dice 0, distances NaN)",
    "vc": f"volume correlation: Pearson r between predicted and true volumes across the n_subjects subjects (NaN below {VC_MIN_SUBJECTS})",
    "volume_slope": f"OLS slope of log predicted on log true volume across the subjects with both > 0 (1: proportional; below 1: larger structures drawn relatively smaller; NaN below {VC_MIN_SUBJECTS})",
}


# ---------------------------------------------------------------------------------- ICC
def volume_icc(
    reference: pd.DataFrame,
    other: pd.DataFrame,
    class_ids: Iterable[int],
    subjects: Iterable[str] | None = None,
) -> pd.DataFrame:
    """ICC(2,1) of volumes (two-way random, absolute agreement, single rater) per class.

    ``reference`` and ``other`` are volume tables with columns subject, class_id, volume_mm3
    (mm³); only subjects present in both (and in ``subjects`` if given) are used. Computed with
    pingouin's ``intraclass_corr`` (row "ICC(A,1)", called "ICC2" before pingouin 0.7) with its
    95% CI at full precision. Classes with fewer than ``ICC_MIN_SUBJECTS`` subjects or no
    variance give NaN.
    """
    import pingouin  # heavy import; the per-scan kernel above does not need it

    rows = []
    for cid in class_ids:
        a = _class_volumes(reference, cid)
        b = _class_volumes(other, cid)
        common = a.index.intersection(b.index)
        if subjects is not None:
            common = common.intersection(pd.Index(list(subjects)))
        common = sorted(common)
        row = {"class_id": int(cid), "n_subjects": len(common)}
        row.update(
            dict.fromkeys(("icc", "ci95_low", "ci95_high", "f", "df1", "df2", "p"), math.nan)
        )
        values = np.concatenate([a.loc[common].to_numpy(float), b.loc[common].to_numpy(float)])
        row["note"] = ""
        if len(common) < ICC_MIN_SUBJECTS:
            row["note"] = f"not estimable: {len(common)} subject(s), need {ICC_MIN_SUBJECTS}"
        elif np.ptp(values) == 0:
            row["note"] = "not estimable: all volumes equal"
        else:
            long = pd.DataFrame(
                {
                    "subject": common * 2,
                    "rater": ["reference"] * len(common) + ["other"] * len(common),
                    "volume": values,
                }
            )
            res = _icc_full_precision(pingouin, long)
            hit = res[res["Type"].isin(["ICC(A,1)", "ICC2"])].iloc[0]
            row.update(
                icc=float(hit["ICC"]),
                ci95_low=float(hit["CI95"][0]),
                ci95_high=float(hit["CI95"][1]),
                f=float(hit["F"]),
                df1=float(hit["df1"]),
                df2=float(hit["df2"]),
                p=float(hit["pval"]),
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _class_volumes(volumes: pd.DataFrame, class_id: int) -> pd.Series:
    # One volume per subject for the class; a duplicated subject is a broken volume table.
    sel = volumes[volumes["class_id"].astype(int) == int(class_id)]
    if sel["subject"].duplicated().any():
        dup = sorted(sel.loc[sel["subject"].duplicated(), "subject"].astype(str))
        raise ThighctError(
            f"volume table has several rows for class {class_id} of subjects {dup}",
            fix="rerun the rule that writes results/volumes/*.tsv",
        )
    return sel.set_index(sel["subject"].astype(str))["volume_mm3"].astype(float)


def icc_table(
    reference: pd.DataFrame,
    others: Mapping[str, tuple[pd.DataFrame, Iterable[str] | None]],
    class_ids: Iterable[int],
    class_names: Mapping[int, str],
) -> pd.DataFrame:
    """:func:`volume_icc` of each table in ``others`` (name -> (volumes, subjects)) vs ``reference``.

    Rows: comparison ("<name> vs rater1"), class_id, class, n_subjects, icc, ci95_low,
    ci95_high, f, df1, df2, p.
    """
    class_ids = [int(c) for c in class_ids]
    parts = []
    for name, (volumes, subjects) in others.items():
        part = volume_icc(reference, volumes, class_ids, subjects)
        part.insert(0, "comparison", f"{name} vs rater1")
        part.insert(2, "class", [class_names[c] for c in part["class_id"]])
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _icc_full_precision(pingouin, long: pd.DataFrame) -> pd.DataFrame:
    # pingouin rounds CI95 to 2 decimals by default; lift that for the call only.
    key = "round.column.CI95"
    saved = pingouin.options.get(key)
    pingouin.options[key] = None
    try:
        import warnings

        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return pingouin.intraclass_corr(
                data=long, targets="subject", raters="rater", ratings="volume", nan_policy="omit"
            )
    finally:
        pingouin.options[key] = saved


ICC_DEFINITIONS = {
    "icc": "ICC(2,1), Shrout & Fleiss: two-way random effects, absolute agreement, single measurement (pingouin ICC(A,1)) of volumes in mm³",
    "ci95_low / ci95_high": "95% confidence interval of the ICC (pingouin, F-distribution based)",
    "f, df1, df2, p": "F test of ICC > 0 (pingouin)",
    "comparison": "<model> vs rater1: model volumes against the first rater on the evaluation subjects; rater2 vs rater1: the two raters on the doubly annotated subjects",
    "n_subjects": f"subjects with a volume in both tables (ICC needs >= {ICC_MIN_SUBJECTS} and some variance, else NaN)",
    "note": "why the ICC is NaN, if it is",
}


# ------------------------------------------------------------------- model comparison, Fig 5
def per_subject_mean(per_subject: pd.DataFrame, metric: str, class_ids: Iterable[int]) -> pd.Series:
    """Each subject's mean of ``metric`` over ``class_ids`` (NaN left out), indexed by subject."""
    sel = per_subject[per_subject["class_id"].isin([int(c) for c in class_ids])]
    return sel.groupby("subject")[metric].mean()


def compare_models(
    summaries: Mapping[str, pd.DataFrame],
    per_subject: Mapping[str, pd.DataFrame],
    class_ids: Iterable[int],
    proposed: str | None,
    baseline: str | None,
) -> pd.DataFrame:
    """Mean ± sd of Dice and ASSD per model, and a paired Wilcoxon test of per-subject mean Dice.

    Means and sds are taken over the per-class means of ``class_ids`` (the paper's "average of
    individual muscle classes"). The test pairs the subjects both models were evaluated on;
    its columns are filled on the ``proposed`` row. With fewer than 2 pairs, or all
    differences 0, the p-value is NaN and ``test_note`` says why.
    """
    from scipy.stats import wilcoxon

    class_ids = [int(c) for c in class_ids]
    rows = []
    for model, summary in summaries.items():
        sel = summary[summary["class_id"].isin(class_ids)]
        rows.append(
            {
                "model": model,
                "n_subjects": int(per_subject[model]["subject"].nunique()),
                "n_classes": len(sel),
                "dice_mean": float(sel["dice_mean"].mean()),
                "dice_sd": float(sel["dice_mean"].std(ddof=1)),
                "assd_mm_mean": float(sel["assd_mm_mean"].mean()),
                "assd_mm_sd": float(sel["assd_mm_mean"].std(ddof=1)),
                "test_vs": "",
                "n_pairs": math.nan,
                "dice_diff_median": math.nan,
                "wilcoxon_w": math.nan,
                "wilcoxon_p": math.nan,
                "test_note": "",
            }
        )
    table = pd.DataFrame(rows)
    if proposed in summaries and baseline in summaries and proposed != baseline:
        a = per_subject_mean(per_subject[proposed], "dice", class_ids)
        b = per_subject_mean(per_subject[baseline], "dice", class_ids)
        pairs = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
        diff = (pairs["a"] - pairs["b"]).to_numpy()
        test = {
            "test_vs": baseline,
            "n_pairs": len(pairs),
            "dice_diff_median": float(np.median(diff)) if len(diff) else math.nan,
        }
        if len(diff) < 2:
            test["test_note"] = f"not tested: {len(diff)} paired subject(s), need at least 2"
        elif not np.any(diff):
            test["test_note"] = "not tested: all paired differences are 0"
        else:
            res = wilcoxon(pairs["a"], pairs["b"], alternative="two-sided")
            test.update(wilcoxon_w=float(res.statistic), wilcoxon_p=float(res.pvalue))
            # The exact two-sided p cannot go below 2 / 2**n: with n < 6 it never reaches 0.05.
            min_p = 2.0 / 2 ** int(np.count_nonzero(diff))
            test["test_note"] = f"smallest attainable p = {min_p:.3g}" if min_p > 0.05 else ""
        idx = table.index[table["model"] == proposed][0]
        for k, v in test.items():
            table.at[idx, k] = v
    return table


COMPARISON_DEFINITIONS = {
    "dice_mean / dice_sd": "mean and sd (ddof=1) across the muscle classes of each class's mean Dice over subjects",
    "assd_mm_mean / assd_mm_sd": "the same for ASSD (mm)",
    "test_vs, n_pairs, dice_diff_median, wilcoxon_w, wilcoxon_p": "paired two-sided Wilcoxon signed-rank test of the per-subject mean muscle Dice, this model vs test_vs, over subjects evaluated with both; median of the paired differences",
    "test_note": "why no test was run, or the smallest p the exact test can reach with n_pairs",
}


# Row names of the Fig 5 table and panel titles of its figure; decimals of the Markdown copy.
METRIC_LABELS = {
    "dice": "Dice",
    "assd_mm": "ASSD (mm)",
    "hd_mm": "HD (mm)",
    "hd95_mm": "HD95 (mm)",
    "hd95_pooled_mm": "HD95 pooled (mm)",
    "ravd": "RAVD",
    "vc": "VC",
}
MARKDOWN_DECIMALS = {"HD (mm)": 2, "HD95 (mm)": 2, "HD95 pooled (mm)": 2}

FIG5_DEFINITIONS = {
    "layout": "rows: metric × model (a block of metrics per model, as in the paper's Fig 5); columns: the muscles in label-table order",
    "values": "mean over the evaluated subjects where the class is present in prediction or ground truth (NaN left out); VC is one value per muscle",
    **{k: DEFINITIONS[k] for k in ("dice", "assd_mm", "hd_mm", "hd95_mm", "ravd")},
    "vc": SUMMARY_DEFINITIONS["vc"],
}


def fig5_table(
    summaries: Mapping[str, pd.DataFrame],
    class_ids: Sequence[int],
    class_names: Mapping[int, str],
    metrics: Sequence[str],
    model_names: Mapping[str, str],
    metric_names: Mapping[str, str],
) -> pd.DataFrame:
    """The paper's Fig 5 layout: rows metric × model (model blocks), columns the classes.

    ``metrics`` are summary columns without the ``_mean`` suffix (e.g. ``dice``, ``vc``);
    values are per-class means over subjects (VC is a single value per class).
    """
    rows = []
    for model, summary in summaries.items():
        by_id = summary.set_index("class_id")
        for m in metrics:
            col = m if m in by_id.columns else f"{m}_mean"
            vals = [float(by_id[col].get(int(c), math.nan)) for c in class_ids]
            rows.append([model_names.get(model, model), metric_names.get(m, m), *vals])
    columns = ["model", "metric", *[class_names[int(c)] for c in class_ids]]
    return pd.DataFrame(rows, columns=columns)


def markdown_table(
    table: pd.DataFrame, decimals: Mapping[str, int], default_decimals: int = 3
) -> str:
    """A GitHub-flavoured Markdown table; numbers rounded per the row's ``metric``."""
    head = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" if i < 2 else "---:" for i in range(len(table.columns))) + "|"
    lines = [head, rule]
    for _, row in table.iterrows():
        nd = decimals.get(row["metric"], default_decimals)
        cells = [str(row["model"]), str(row["metric"])]
        # round first so that -0.0004 prints as 0.000, not -0.000
        cells += [
            "–" if pd.isna(v) else f"{round(float(v), nd) + 0.0:.{nd}f}" for v in row.iloc[2:]
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- tables, checks
def table_header(title: str, definitions: Mapping[str, str]) -> str:
    """Header comment lines for a TSV: the title, then one ``name: definition`` per line.

    Pass it to :func:`thighct.io_tables.write_tsv` as ``header_comment``; read the table back
    with ``pd.read_csv(path, sep="\\t", comment="#")``.
    """
    return "\n".join([title, *(f"{k}: {v}" for k, v in definitions.items())])


def check_same_grid(
    pred_affine: np.ndarray,
    truth_affine: np.ndarray,
    pred_shape,
    truth_shape,
    tolerance_mm: float,
    *,
    subject: str,
    pred_path,
    truth_path,
) -> None:
    """Raise ``ThighctError`` unless prediction and ground truth share a grid (:mod:`thighct.grid`)."""
    difference = grid_difference(pred_shape, pred_affine, truth_shape, truth_affine, tolerance_mm)
    if difference:
        raise ThighctError(
            f"the prediction's grid differs from the ground truth's at {truth_path}: "
            f"{difference} (prediction against truth)",
            subject=subject,
            path=pred_path,
            fix="predictions must be resampled back to the scan's native grid (rule predict); "
            "rerun it, or check that the label file belongs to this scan",
        )
