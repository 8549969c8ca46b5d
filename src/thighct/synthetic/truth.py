"""True volumes of the phantoms: counted on a label map, and designed (without rasterising)."""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd

from ..labels import LabelTable
from .anatomy import LENGTH_PER_HEIGHT
from .design import SubjectDesign, reference_design
from .render import render


def label_volumes(label: np.ndarray, spacing, class_ids) -> dict[int, float]:
    """Volume (mm³) of each class id: voxel count x voxel volume (spacing in mm)."""
    counts = np.bincount(np.asarray(label).ravel(), minlength=max(class_ids) + 1)
    voxel = float(np.prod(spacing))
    return {int(c): float(counts[c]) * voxel for c in class_ids}


@functools.lru_cache(maxsize=8)
def _reference_volumes_cached(cfg_json: str, names: tuple) -> dict:
    cfg = json.loads(cfg_json)
    table = LabelTable(
        pd.DataFrame(
            {
                "id": range(len(names)),
                "name": names,
                "display": names,
                "group": "x",
                "colour": "#000000",
            }
        )
    )
    design = reference_design(cfg)
    _, label, grid = render(design, cfg, table, want_ct=False)
    right = grid.x > 0
    out = {}
    for side, mask in ((+1, right), (-1, ~right)):
        vols = label_volumes(label[mask], grid.spacing, list(range(1, len(names))))
        out[side] = vols
    return out


def reference_volumes(cfg: dict, labels) -> dict[int, dict[int, float]]:
    """Per side (+1 right, -1 left), class id -> volume (mm³) of the reference adult."""
    return _reference_volumes_cached(json.dumps(cfg, sort_keys=True), tuple(labels.names))


def target_volumes(design: SubjectDesign, cfg: dict, labels) -> dict[int, float]:
    """Designed volume (mm³) of each foreground class of a subject, without rasterising it.

    Reference volumes (the reference adult, rasterised once per config) scaled by the
    subject's length along the leg and each side's cross-section area factor; bones by the
    skeleton's scale. The rasterised volumes track these up to voxel and overlap effects.
    """
    ref = reference_volumes(cfg, labels)
    length = design.length_mm / (LENGTH_PER_HEIGHT * float(cfg["reference_height_cm"]))
    out = {}
    for cid in labels.ids[1:]:
        name = labels.name_of(cid)
        total = 0.0
        for sd in design.sides:
            v = ref[sd.side][cid]
            if name in sd.area:
                total += v * sd.area[name] * length
            else:
                total += v * design.bone_scale**2 * length
        out[cid] = total
    return out


def truth_table(subject_id: str, truth: dict, labels):
    """truth.tsv rows of one subject (DataFrame): subject, class_id, name, volume_mm3."""
    return pd.DataFrame(
        [
            {
                "subject": subject_id,
                "class_id": int(c),
                "name": labels.name_of(c),
                "volume_mm3": float(truth[c]),
            }
            for c in sorted(truth)
        ],
        columns=["subject", "class_id", "name", "volume_mm3"],
    )
