"""Quality flags of label maps without labels to score against: which scans to look at first.

In apply mode on an unlabelled cohort there is no ground truth, so a failed segmentation can
only be told from a good one by what the label map, the CT and the rest of the cohort say. Each
flag is one small check, computed per scan and structure, with its value and the configured
threshold it crossed (config ``qc:``):

* ``missing``: a structure of the label table is absent from the label map (volume 0 mm³).
* ``fov_cut``: the structure lies on the first or last axial slice with an area there of at
  least ``fov_cut_ratio`` times its median axial area (over the slices it is on), so the field
  of view cuts through its body, not a tapering end, and its volume is a lower bound. The
  median, not the largest area: a femur cut at mid-shaft shows its usual shaft area there,
  a small fraction of its head's. Structures that run beyond a hip-to-knee scan by anatomy
  (``fov_cut_expected``) are not flagged.
* ``volume_outlier``: robust z-score of log volume, ``(ln v - median) / (1.4826 MAD)``, against
  the same structure in every other scan of the same sex and source, beyond ``volume_z``;
  computed only where a sex has at least ``volume_min_subjects`` scans with the structure.
* ``asymmetry``: ``|L - R| / (L + R)`` of the structure's volumes left and right of the body
  midline (the volume table's split), above ``asymmetry``; 1 when one side is absent.
* ``unlabelled_muscle``: share of the body's voxels in the muscle HU window (``muscle_hu``) that
  carry no label, above ``unlabelled_muscle``: a muscle the model left out shows up here.
* ``metal``: volume (mm³) of the body's voxels at or above ``metal_hu``, above
  ``metal_min_volume_mm3``: an implant whose streaks make every nearby label doubtful.
* ``model_disagreement``: Dice between two sources' label maps (two models) for the structure,
  below ``model_dice``; structures absent from both maps are not scored.

Work is split in two, as the data allows. :func:`scan_measures` reads one scan's CT and its
label maps (one per source) and returns the per-scan measures (long table,
:data:`MEASURE_COLUMNS`); :func:`quality_flags` adds the volume tables and the subjects' sex and
applies every threshold, returning one row per flag (:data:`COLUMNS`); no row means nothing was
flagged. The body is :func:`thighct.body.body_region` with the ``preprocess`` section's body
settings, as the post-processing and the volumes use it.

Arrays are indexed ``(x, y, z)`` (nibabel voxel order, RAS+ world), ``z`` axial, HU in
Hounsfield units. Imports no torch or MONAI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from .errors import ThighctError
from .labels import LabelTable

COLUMNS = ["subject", "source", "structure", "flag", "value", "threshold", "detail"]
MEASURE_COLUMNS = ["subject", "source", "structure", "measure", "value"]
# The flags, in the order a reader meets them in the table and the figure: a structure that is
# not there first, then what cuts or spoils the scan, then the softer signs.
FLAGS = (
    "missing",
    "fov_cut",
    "metal",
    "unlabelled_muscle",
    "asymmetry",
    "volume_outlier",
    "model_disagreement",
)
# Measures of the whole scan (not one structure) go under this structure name; the metal
# measure, which needs no label map, under this source.
SCAN = "scan"
IMAGE_SOURCE = "image"
# What each flag means, written above the table (results/qc/flags.tsv).
DEFINITIONS = {
    "missing": "structure absent from the label map (volume 0 mm3)",
    "fov_cut": "area on the first or last axial slice / median axial area >= threshold",
    "metal": "volume (mm3) of body voxels at or above qc.metal_hu > threshold",
    "unlabelled_muscle": "share of body voxels in qc.muscle_hu without a label > threshold",
    "asymmetry": "|L - R| / (L + R) of the volumes either side of the body midline > threshold",
    "volume_outlier": "robust z of ln volume against the same sex and source, |z| > threshold",
    "model_disagreement": "Dice between two models' label maps < threshold",
}
# The normal distribution's SD is 1.4826 MAD: the factor makes the robust z a z-score.
MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class QCSettings:
    """The ``qc:`` section of the config (see workflow/schemas/config.schema.yaml) and the body
    mask's settings (the ``preprocess`` section's body_* keys)."""

    fov_cut_ratio: float = 0.5
    fov_cut_expected: tuple[str, ...] = ()
    volume_z: float = 5.0
    volume_min_subjects: int = 20
    asymmetry: float = 0.3
    muscle_hu: tuple[float, float] = (-29.0, 150.0)
    unlabelled_muscle: float = 0.35
    metal_hu: float = 2500.0
    metal_min_volume_mm3: float = 500.0
    model_dice: float = 0.7
    body_threshold_hu: float = -500.0
    body_opening_mm: float = 4.0
    body_min_component_fraction: float = 0.1
    body_coarse_mm: float = 4.0

    @classmethod
    def from_config(cls, section: Mapping, body: Mapping | None = None) -> QCSettings:
        known = asdict(cls())
        keys = {k: v for k, v in {**(body or {}), **section}.items() if k in known}
        if "fov_cut_expected" in keys:
            keys["fov_cut_expected"] = tuple(str(v) for v in keys["fov_cut_expected"])
        if "muscle_hu" in keys:
            keys["muscle_hu"] = tuple(float(v) for v in keys["muscle_hu"])
        return cls(**keys)


def _flag(subject, source, structure, flag, value, threshold, detail) -> dict:
    return {
        "subject": str(subject),
        "source": str(source),
        "structure": str(structure),
        "flag": flag,
        "value": float(value),
        "threshold": float(threshold),
        "detail": detail,
    }


def _measure(subject, source, structure, measure, value) -> dict:
    return {
        "subject": str(subject),
        "source": str(source),
        "structure": str(structure),
        "measure": measure,
        "value": float(value),
    }


# ----------------------------------------------------------------------------- per scan
def edge_area_ratios(label: np.ndarray, n_classes: int) -> dict[int, float]:
    """Per class on the first or last axial slice: its area there over its median axial area.

    The median is over the slices the class is on; the larger of the two ends counts. Classes
    on neither end are left out.
    """
    label = np.asarray(label)
    nz = label.shape[2]
    areas = np.stack([np.bincount(label[:, :, k].ravel(), minlength=n_classes) for k in range(nz)])
    at_edge = np.maximum(areas[0], areas[-1])
    out = {}
    for c in np.flatnonzero(at_edge):
        if c != 0:
            column = areas[:, c]
            out[int(c)] = float(at_edge[c] / np.median(column[column > 0]))
    return out


def muscle_window(hu: np.ndarray, body: np.ndarray, muscle_hu: Sequence[float]) -> np.ndarray:
    """Body voxels whose HU lie in the muscle window (inclusive)."""
    lo, hi = (float(v) for v in muscle_hu)
    hu = np.asarray(hu)
    return body & (hu >= lo) & (hu <= hi)


def unlabelled_muscle_fraction(
    label: np.ndarray, hu: np.ndarray, body: np.ndarray, muscle_hu: Sequence[float]
) -> float:
    """Share of the body's voxels in the muscle HU window that carry no label (0..1)."""
    window = muscle_window(hu, body, muscle_hu)
    n = int(window.sum())
    return float((window & (np.asarray(label) == 0)).sum() / n) if n else 0.0


def metal_mask(hu: np.ndarray, body: np.ndarray, metal_hu: float) -> np.ndarray:
    """Body voxels at or above ``metal_hu`` (HU)."""
    return body & (np.asarray(hu) >= float(metal_hu))


def structure_dice(a: np.ndarray, b: np.ndarray, n_classes: int) -> dict[int, float]:
    """Dice of every foreground class between two label maps; classes absent from both left out."""
    from .metrics import confusion_matrix

    c = confusion_matrix(np.asarray(a), np.asarray(b), n_classes).astype(float)
    both = np.diag(c)
    total = c.sum(axis=0) + c.sum(axis=1)
    return {int(k): float(2 * both[k] / total[k]) for k in range(1, n_classes) if total[k] > 0}


def scan_measures(
    subject: str,
    hu: np.ndarray,
    affine: np.ndarray,
    label_maps: Mapping[str, np.ndarray],
    labels: LabelTable,
    settings: QCSettings,
) -> pd.DataFrame:
    """The per-scan measures of one scan (:data:`MEASURE_COLUMNS`).

    ``hu``: the CT (HU); ``label_maps``: source (a model) -> class ids, all on the grid of
    ``affine``. Measures: ``fov_edge_area_ratio`` per structure on an end slice,
    ``unlabelled_muscle_fraction`` per source, ``metal_volume_mm3`` (source ``image``) and the
    ``dice`` of every pair of sources (source ``"a vs b"``) per structure.
    """
    from .body import body_region
    from .volumes import voxel_volume_mm3

    hu = np.asarray(hu)
    for source, label in label_maps.items():
        if np.shape(label) != hu.shape:
            raise ThighctError(
                f"the {source} label map has shape {np.shape(label)}, the image {hu.shape}",
                subject=subject,
                fix="rerun the rule that wrote the label map for this subject",
            )
    body = body_region(hu, affine, settings)
    voxel_mm3 = voxel_volume_mm3(affine)
    rows = [
        _measure(
            subject,
            IMAGE_SOURCE,
            SCAN,
            "metal_volume_mm3",
            metal_mask(hu, body, settings.metal_hu).sum() * voxel_mm3,
        )
    ]
    for source, label in label_maps.items():
        for cid, ratio in edge_area_ratios(label, labels.n_classes).items():
            rows.append(
                _measure(subject, source, labels.name_of(cid), "fov_edge_area_ratio", ratio)
            )
        rows.append(
            _measure(
                subject,
                source,
                SCAN,
                "unlabelled_muscle_fraction",
                unlabelled_muscle_fraction(label, hu, body, settings.muscle_hu),
            )
        )
    for a, b in combinations(label_maps, 2):
        dice = structure_dice(label_maps[a], label_maps[b], labels.n_classes)
        for cid, value in dice.items():
            rows.append(_measure(subject, f"{a} vs {b}", labels.name_of(cid), "dice", value))
    return pd.DataFrame(rows, columns=MEASURE_COLUMNS)


# ----------------------------------------------------------------------------- flags
def _classes(volumes: pd.DataFrame) -> pd.DataFrame:
    """The class rows of a volume table (groups left out: their members are flagged)."""
    return volumes[volumes["class_id"] > 0]


def _cm3(mm3: float) -> str:
    return f"{mm3 / 1000:.1f} cm³"


def missing_flags(volumes: pd.DataFrame, source: str) -> list[dict]:
    """A structure of the label table with volume 0 in a scan's label map."""
    absent = _classes(volumes)
    absent = absent[absent["volume_mm3"] <= 0]
    return [
        _flag(r.subject, source, r.class_name, "missing", 0.0, 0.0, "absent from the label map")
        for r in absent.itertuples()
    ]


def asymmetry_index(left_mm3: np.ndarray, right_mm3: np.ndarray) -> np.ndarray:
    """``|L - R| / (L + R)``: 0 for equal sides, 1 when one side is absent (NaN when both are)."""
    left = np.asarray(left_mm3, float)
    right = np.asarray(right_mm3, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(left - right) / (left + right)


def asymmetry_flags(volumes: pd.DataFrame, source: str, threshold: float) -> list[dict]:
    """Left and right volumes of a structure unequal beyond ``threshold`` (asymmetry index)."""
    present = _classes(volumes)
    present = present[present["volume_mm3"] > 0]
    index = asymmetry_index(present["volume_left_mm3"], present["volume_right_mm3"])
    out = []
    for r, value in zip(present.itertuples(), index, strict=True):
        if value > threshold:
            detail = f"left {_cm3(r.volume_left_mm3)}, right {_cm3(r.volume_right_mm3)}"
            out.append(
                _flag(r.subject, source, r.class_name, "asymmetry", value, threshold, detail)
            )
    return out


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(x - median) / (1.4826 MAD)`` of each value; NaN everywhere when the MAD is 0."""
    x = np.asarray(values, float)
    median = np.median(x)
    mad = np.median(np.abs(x - median))
    if mad == 0:
        return np.full(x.shape, np.nan)
    return (x - median) / (MAD_TO_SD * mad)


def volume_outlier_flags(
    volumes: pd.DataFrame,
    source: str,
    sex_of: Mapping[str, str],
    threshold: float,
    min_subjects: int,
) -> list[dict]:
    """Log volumes far from the cohort's: robust z per sex and structure beyond ``threshold``.

    Absent structures are left out (flagged as missing); a sex and structure with fewer than
    ``min_subjects`` scans, or with a MAD of 0, is not scored.
    """
    present = _classes(volumes)
    present = present[present["volume_mm3"] > 0].copy()
    unknown = sorted(set(present["subject"]) - set(sex_of))
    if unknown:
        raise ThighctError(
            f"no sex for subjects {unknown[:5]} of the {source} volumes; the volume check "
            "compares each scan with the others of its sex",
            fix="give every subject a sex (F or M) in the cohort table",
        )
    present["sex"] = present["subject"].map(sex_of)
    out = []
    for (sex, name), group in present.groupby(["sex", "class_name"], sort=True):
        if len(group) < min_subjects:
            continue
        z = robust_z(np.log(group["volume_mm3"].to_numpy()))
        median = float(np.exp(np.median(np.log(group["volume_mm3"]))))
        for r, value in zip(group.itertuples(), z, strict=True):
            if np.isfinite(value) and abs(value) > threshold:
                detail = (
                    f"{_cm3(r.volume_mm3)} against a median of {_cm3(median)} "
                    f"({len(group)} scans, sex {sex})"
                )
                out.append(
                    _flag(r.subject, source, name, "volume_outlier", value, threshold, detail)
                )
    return out


def fov_cut_flags(measures: pd.DataFrame, ratio: float, expected: Sequence[str]) -> list[dict]:
    """Structures cut through their body by the first or last slice (see the module docstring)."""
    m = measures[(measures["measure"] == "fov_edge_area_ratio") & (measures["value"] >= ratio)]
    m = m[~m["structure"].isin(list(expected))]
    return [
        _flag(
            r.subject,
            r.source,
            r.structure,
            "fov_cut",
            r.value,
            ratio,
            f"its area on an end slice is {r.value:.2f} times its median axial area",
        )
        for r in m.itertuples()
    ]


def unlabelled_muscle_flags(measures: pd.DataFrame, threshold: float) -> list[dict]:
    """Scans with a large share of muscle-density body voxels left unlabelled."""
    m = measures[
        (measures["measure"] == "unlabelled_muscle_fraction") & (measures["value"] > threshold)
    ]
    return [
        _flag(
            r.subject,
            r.source,
            r.structure,
            "unlabelled_muscle",
            r.value,
            threshold,
            f"{r.value:.0%} of the body's muscle-density voxels carry no label",
        )
        for r in m.itertuples()
    ]


def metal_flags(measures: pd.DataFrame, threshold_mm3: float, metal_hu: float) -> list[dict]:
    """Scans with metal (body voxels at or above ``metal_hu``) beyond ``threshold_mm3``."""
    m = measures[(measures["measure"] == "metal_volume_mm3") & (measures["value"] > threshold_mm3)]
    return [
        _flag(
            r.subject,
            r.source,
            r.structure,
            "metal",
            r.value,
            threshold_mm3,
            f"{_cm3(r.value)} of the body at or above {metal_hu:g} HU",
        )
        for r in m.itertuples()
    ]


def disagreement_flags(measures: pd.DataFrame, threshold: float) -> list[dict]:
    """Structures on which two models' label maps agree less than Dice ``threshold``."""
    m = measures[(measures["measure"] == "dice") & (measures["value"] < threshold)]
    return [
        _flag(
            r.subject,
            r.source,
            r.structure,
            "model_disagreement",
            r.value,
            threshold,
            "Dice {:.2f} between the label maps of {} and {}".format(
                r.value, *r.source.split(" vs ")
            ),
        )
        for r in m.itertuples()
    ]


def quality_flags(
    volumes: Mapping[str, pd.DataFrame],
    measures: pd.DataFrame,
    sex_of: Mapping[str, str],
    settings: QCSettings,
) -> pd.DataFrame:
    """Every flag of every scan (:data:`COLUMNS`), sorted by subject, source, flag, structure.

    ``volumes``: source -> its volume table (:mod:`thighct.volume_tables`); ``measures``: the
    stacked :func:`scan_measures` tables; ``sex_of``: subject -> ``F`` / ``M``.
    """
    s = settings
    rows = []
    for source, table in volumes.items():
        rows += missing_flags(table, source)
        rows += asymmetry_flags(table, source, s.asymmetry)
        rows += volume_outlier_flags(table, source, sex_of, s.volume_z, s.volume_min_subjects)
    rows += fov_cut_flags(measures, s.fov_cut_ratio, s.fov_cut_expected)
    rows += unlabelled_muscle_flags(measures, s.unlabelled_muscle)
    rows += metal_flags(measures, s.metal_min_volume_mm3, s.metal_hu)
    rows += disagreement_flags(measures, s.model_dice)
    flags = pd.DataFrame(rows, columns=COLUMNS)
    if flags.empty:
        return flags
    order = {f: i for i, f in enumerate(FLAGS)}
    flags = flags.assign(_rank=flags["flag"].map(order))
    flags = flags.sort_values(["subject", "source", "_rank", "structure"], kind="stable")
    return flags.drop(columns="_rank").reset_index(drop=True)


def flagged_scans(flags: pd.DataFrame, max_scans: int) -> list[tuple[str, str]]:
    """(subject, source) of the flagged scans to show first: most flags first, then by the
    earliest flag in :data:`FLAGS` order, then by subject; at most ``max_scans``."""
    if flags.empty:
        return []
    order = {f: i for i, f in enumerate(FLAGS)}
    per_scan = flags.assign(_rank=flags["flag"].map(order)).groupby(["subject", "source"])
    summary = pd.DataFrame({"n": per_scan.size(), "rank": per_scan["_rank"].min()}).reset_index()
    summary = summary.sort_values(
        ["n", "rank", "subject", "source"], ascending=[False, True, True, True]
    )
    return list(zip(summary["subject"], summary["source"], strict=True))[: int(max_scans)]


# ----------------------------------------------------------------------------- figure support
def flag_region(
    flag: Mapping,
    hu: np.ndarray,
    affine: np.ndarray,
    label_maps: Mapping[str, np.ndarray],
    labels: LabelTable,
    settings: QCSettings,
) -> np.ndarray:
    """The voxels a flag is about (boolean, ``hu``'s shape), to choose and mark figure slices.

    A structure's flag: its voxels in the flag's source (both sources' disagreeing voxels for
    ``model_disagreement``; for ``missing``, the structure in any other source, else nothing).
    ``metal``: the metal voxels; ``unlabelled_muscle``: the unlabelled muscle-density voxels.
    """
    from .body import body_region

    kind, source, structure = flag["flag"], flag["source"], flag["structure"]
    if kind in ("metal", "unlabelled_muscle"):
        body = body_region(hu, affine, settings)
        if kind == "metal":
            return metal_mask(hu, body, settings.metal_hu)
        return muscle_window(hu, body, settings.muscle_hu) & (label_maps[source] == 0)
    cid = labels.id_of(structure)
    if kind == "model_disagreement":
        a, b = source.split(" vs ")
        return (label_maps[a] == cid) != (label_maps[b] == cid)
    if kind == "missing":
        others = [m for name, m in label_maps.items() if name != source]
        return np.any([m == cid for m in others], axis=0) if others else np.zeros(hu.shape, bool)
    return label_maps[source] == cid


def focus_slices(region: np.ndarray, label: np.ndarray) -> tuple[int, int]:
    """Axial slice ``k`` and coronal slice ``j`` holding most of ``region``; where it is empty,
    the middle of the label map's labelled voxels (of the volume when it has none)."""
    region = np.asarray(region, bool)
    where = region if region.any() else np.asarray(label) > 0
    if not where.any():
        return region.shape[2] // 2, region.shape[1] // 2
    k = int(np.argmax(where.sum(axis=(0, 1))))
    j = int(np.argmax(where.sum(axis=(0, 2))))
    return k, j


def shown_label(source: str, label_maps: Mapping[str, np.ndarray]) -> str:
    """The label map a flag of ``source`` is drawn over: the source's own, the first of a pair
    of models, or (for the CT's own flags) the first model's."""
    if source in label_maps:
        return source
    first = source.split(" vs ")[0]
    return first if first in label_maps else next(iter(label_maps))


# ----------------------------------------------------------------------------- files
def write_measures(table: pd.DataFrame, path) -> None:
    """Write one scan's measures (:data:`MEASURE_COLUMNS`) as TSV, atomically."""
    from .io_tables import write_tsv

    write_tsv(table[MEASURE_COLUMNS], path, float_format="%.10g")


def read_measures(paths: Sequence) -> pd.DataFrame:
    """Stack measure tables written by :func:`write_measures`."""
    tables = [
        pd.read_csv(p, sep="\t", dtype={"subject": str, "source": str, "structure": str})
        for p in paths
    ]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=MEASURE_COLUMNS)


def write_flags(flags: pd.DataFrame, path) -> None:
    """Write the flag table as TSV with the flags' definitions above it, atomically."""
    from .io_tables import write_tsv

    head = "Quality flags: one row per flag; no row means nothing was flagged.\n" + "\n".join(
        f"{name}: {text}" for name, text in DEFINITIONS.items()
    )
    write_tsv(flags[COLUMNS], path, header_comment=head, float_format="%.6g")


def read_flags(path) -> pd.DataFrame:
    """Read a flag table written by :func:`write_flags`."""
    return pd.read_csv(
        path, sep="\t", comment="#", dtype={"subject": str, "source": str, "structure": str}
    )
