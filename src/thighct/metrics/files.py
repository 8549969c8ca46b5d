"""Metrics of label-map files: read each subject's prediction and ground truth, check that
they share the native grid and are integer label maps, and run the kernel on them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import ThighctError
from ..grid import grid_difference
from .kernel import METRIC_COLUMNS, VOLUME_COLUMNS, segmentation_metrics


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
    from ..io import load_nifti, spacing_from_affine

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
