"""Predicted labels back on the scan's own grid, and the check that the grid is the one
its pre-processing recorded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ThighctError
from ..grid import grid_difference
from ..preprocess import to_native
from .network import Segmenter, predict_labels
from .settings import InferSettings


def check_native_grid(
    transform: Mapping,
    shape: Sequence[int],
    affine: np.ndarray,
    *,
    subject: str | None = None,
    path=None,
    tolerance_mm: float = 1e-3,
) -> None:
    """Raise unless the ingested image has the grid that ``transform`` (transform.json) records.

    A mismatch means transform.json is stale (made from another version of the scan).
    """
    recorded_shape = tuple(int(s) for s in transform["ingested"]["shape"])
    recorded_affine = np.asarray(transform["ingested"]["affine"], float)
    difference = grid_difference(shape, affine, recorded_shape, recorded_affine, tolerance_mm)
    if difference:
        raise ThighctError(
            f"the ingested image is not the scan its transform.json describes ({difference}, "
            "ingested against recorded); the pre-processing is out of date",
            subject=subject,
            path=path,
            fix="rerun the pre-processing (delete results/preprocessed/<subject>/ and rerun)",
        )


def predict_native(
    image: np.ndarray,
    transform: Mapping,
    segmenter: Segmenter,
    roi: Sequence[int],
    settings: InferSettings,
) -> np.ndarray:
    """Labels (uint8 class ids) of a scan on its ingested grid, ``(x, y, z)``.

    ``image`` is the preprocessed image and ``transform`` its transform.json; the labels
    predicted on the preprocessed grid are mapped back by nearest neighbour
    (:func:`thighct.preprocess.to_native`), background outside the body crop.
    """

    labels = predict_labels(image, segmenter, roi, settings)
    return to_native(labels, transform)
