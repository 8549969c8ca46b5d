"""Clean-up of a predicted label map on the scan's own grid: background outside the body
(the body mask that pre-processing and the volumes use: :func:`thighct.body.body_region`)
and, per class, small stray pieces dropped."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from ..body import body_region


@dataclass(frozen=True)
class PostprocessSettings:
    """``infer.postprocess`` (see workflow/schemas/config.schema.yaml).

    body_only: labels outside the body (air, the table) become background.
    min_component_fraction: per class, connected pieces smaller than this fraction of the
        class's largest piece become background; 0 keeps every piece.
    """

    body_only: bool = True
    min_component_fraction: float = 0.0

    @classmethod
    def from_config(cls, section: Mapping | None) -> PostprocessSettings:
        section = section or {}
        known = asdict(cls())
        settings = cls(**{k: section[k] for k in known if k in section})
        if not 0.0 <= float(settings.min_component_fraction) <= 1.0:
            raise ValueError(
                "infer.postprocess.min_component_fraction must be in [0, 1], "
                f"got {settings.min_component_fraction}"
            )
        return settings


def drop_small_pieces(labels: np.ndarray, fraction: float) -> dict[int, int]:
    """Per class, set pieces (26-connected) under ``fraction`` of its largest piece to 0.

    Works in place on ``labels``; returns ``{class id: voxels dropped}`` for the classes
    that lost any.
    """
    from scipy import ndimage

    dropped: dict[int, int] = {}
    if fraction <= 0:
        return dropped
    structure = np.ones((3, 3, 3), bool)
    for cid, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        view = labels[box]
        pieces, n = ndimage.label(view == cid, structure=structure)
        if n < 2:
            continue
        sizes = np.bincount(pieces.ravel())[1:]
        small = np.flatnonzero(sizes < fraction * sizes.max()) + 1
        if small.size:
            view[np.isin(pieces, small)] = 0
            dropped[cid] = int(sizes[small - 1].sum())
    return dropped


def postprocess_labels(
    labels: np.ndarray,
    hu: np.ndarray,
    affine: np.ndarray,
    body,
    settings: PostprocessSettings,
) -> dict[str, int]:
    """Clean a predicted label map on the scan's grid in place (see :class:`PostprocessSettings`).

    Returns voxel counts: ``outside_body`` (labels cleared outside the body) and
    ``small_pieces`` (labels cleared in small pieces).
    """
    if labels.shape != np.shape(hu):
        raise ValueError(f"labels {labels.shape} and image {np.shape(hu)} differ in shape")
    counts = {"outside_body": 0, "small_pieces": 0}
    if settings.body_only:
        outside = ~body_region(hu, affine, body) & (labels > 0)
        counts["outside_body"] = int(outside.sum())
        labels[outside] = 0
    counts["small_pieces"] = sum(
        drop_small_pieces(labels, float(settings.min_component_fraction)).values()
    )
    return counts
