"""Ingestion: a user's scan and labels -> checked, canonical volumes the workflow can trust.

A scan (NIfTI file or DICOM folder) becomes an int16 Hounsfield-unit volume in canonical RAS+
voxel order; a label map becomes a uint8 map of project class ids on exactly the image's grid.
Every check raises ``ThighctError`` naming the subject, the file and the fix, before anything is
written, so a bad scan is caught here rather than a GPU day later.

Arrays are indexed ``(x, y, z)`` (nibabel voxel order), affines map voxels to RAS+ mm.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import io
from .errors import ThighctError
from .grid import grid_difference
from .labels import LabelTable

log = logging.getLogger(__name__)

INT16 = np.iinfo(np.int16)


@dataclass(frozen=True)
class IngestSettings:
    """The ``ingest:`` section of the config (see workflow/schemas/config.schema.yaml).

    hu_range: lowest and highest plausible value (HU); anything outside is not Hounsfield units.
    air_max_hu: the darkest voxel of a CT is air, so the minimum must lie at or below this (HU);
        a higher minimum means the stored values were not rescaled to HU.
    grid_tolerance_mm: largest distance (mm) between matching corners of the image and label
        grids that still counts as the same grid (header rounding).
    label_map: source label id -> project class name (or id), e.g. TotalSegmentator ids.
    drop_labels: source label ids set to background.
    drop_unmapped: set every source id that label_map does not name to background.
    series_uid, series_description: how to pick one DICOM series from a folder with several.
    slice_spacing_tolerance: largest relative deviation of a DICOM slice gap from the median.
    """

    hu_range: tuple[float, float] = (-3100.0, 31000.0)
    air_max_hu: float = -500.0
    grid_tolerance_mm: float = 0.1
    label_map: Mapping[int, str | int] = field(default_factory=dict)
    drop_labels: Sequence[int] = ()
    drop_unmapped: bool = False
    series_uid: str = ""
    series_description: str = ""
    slice_spacing_tolerance: float = 0.01

    @classmethod
    def from_config(cls, section: Mapping) -> IngestSettings:
        """Build from the config's ``ingest:`` mapping (missing keys take the defaults)."""
        dicom = dict(section.get("dicom", {}) or {})
        default = cls()
        return cls(
            hu_range=tuple(float(v) for v in section.get("hu_range", default.hu_range)),
            air_max_hu=float(section.get("air_max_hu", default.air_max_hu)),
            grid_tolerance_mm=float(section.get("grid_tolerance_mm", default.grid_tolerance_mm)),
            label_map={int(k): v for k, v in (section.get("label_map") or {}).items()},
            drop_labels=tuple(int(v) for v in section.get("drop_labels") or ()),
            drop_unmapped=bool(section.get("drop_unmapped", False)),
            series_uid=str(dicom.get("series_uid", "") or ""),
            series_description=str(dicom.get("series_description", "") or ""),
            slice_spacing_tolerance=float(
                dicom.get("slice_spacing_tolerance", default.slice_spacing_tolerance)
            ),
        )


# ----------------------------------------------------------------------------------- image
def read_scan(path: str | Path, settings: IngestSettings, subject: str | None = None) -> io.Volume:
    """Read a scan (NIfTI file or DICOM folder) as stored, with the configured series choice."""
    return io.load_image(
        path,
        subject=subject,
        series_uid=settings.series_uid or None,
        description_regex=settings.series_description or None,
        spacing_tolerance=settings.slice_spacing_tolerance,
    )


def three_d_shape(shape, *, subject: str | None, path, what: str) -> tuple[int, int, int]:
    """The 3-D shape of a volume; trailing singleton axes (x, y, z, 1) are dropped.

    Anything else (4-D data, a slice, an axis of one voxel) raises ``ThighctError``. The header
    check (:mod:`thighct.scan_check`) and ingestion share this one definition.
    """
    shape = tuple(int(n) for n in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise ThighctError(
            f"the {what} has {len(shape)} dimensions (shape {shape}); a 3-D volume is needed",
            subject=subject,
            path=path,
            fix=f"give a single 3-D {what} (split 4-D / multi-phase series and choose one phase)",
        )
    if min(shape) < 2:
        raise ThighctError(
            f"the {what} has shape {shape}; every axis needs at least 2 voxels",
            subject=subject,
            path=path,
            fix=f"give the whole 3-D {what}",
        )
    return shape


def check_3d(volume: io.Volume, *, subject: str | None, what: str) -> np.ndarray:
    """The array as 3-D (see :func:`three_d_shape`)."""
    shape = three_d_shape(volume.array.shape, subject=subject, path=volume.source, what=what)
    return volume.array.reshape(shape)


def check_hu(array: np.ndarray, settings: IngestSettings, *, subject: str | None, path) -> None:
    """Refuse NaN/inf and values that cannot be Hounsfield units (e.g. not rescaled)."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        n_bad = int((~np.isfinite(array)).sum())
        raise ThighctError(
            f"the image holds {n_bad} NaN or infinite voxel(s)",
            subject=subject,
            path=path,
            fix="export the scan again; a CT has a finite HU value in every voxel",
        )
    lo, hi = float(array.min()), float(array.max())
    hu_lo, hu_hi = settings.hu_range
    if lo < hu_lo or hi > hu_hi:
        raise ThighctError(
            f"intensities {lo:g}..{hi:g} leave the plausible HU range {hu_lo:g}..{hu_hi:g}",
            subject=subject,
            path=path,
            fix="give the scan in Hounsfield units (apply RescaleSlope/Intercept); if the scanner's "
            "padding value lies outside, widen ingest.hu_range",
        )
    if lo > settings.air_max_hu:
        raise ThighctError(
            f"the darkest voxel is {lo:g}, but air around the body is about -1000 HU "
            f"(ingest.air_max_hu = {settings.air_max_hu:g}); the values are not Hounsfield units "
            "(not rescaled, windowed or normalised)",
            subject=subject,
            path=path,
            fix="give the scan in Hounsfield units: the original reconstruction with "
            "RescaleSlope/RescaleIntercept applied (dcm2niix does this)",
        )


def ingest_image(
    path: str | Path, settings: IngestSettings, subject: str | None = None
) -> tuple[io.Volume, dict]:
    """Read, check and canonicalise a scan.

    Returns the volume (int16 HU, canonical RAS+, indexed ``(x, y, z)``) and a summary dict
    for info.json: format, shape, spacing (mm), orientation, HU range. Neither the source path
    nor any DICOM patient attribute or free text is included.
    """
    raw = read_scan(path, settings, subject)
    array = check_3d(raw, subject=subject, what="image")
    check_hu(array, settings, subject=subject, path=raw.source)
    if np.issubdtype(array.dtype, np.floating):
        array = np.rint(array)
    hu = array.astype(np.int16)
    hu, affine = io.to_canonical(hu, raw.affine)
    volume = io.Volume(array=hu, affine=affine, source=raw.source)
    # No path: a folder or file name may carry the patient's name or record number.
    info = {
        "subject": subject,
        "format": "dicom" if Path(path).is_dir() else "nifti",
        "source_dtype": str(raw.array.dtype),
        "source_shape": list(array.shape),
        "source_orientation": raw.orientation,
        "shape": list(volume.shape),
        "spacing_mm": [round(s, 6) for s in volume.spacing],
        "orientation": volume.orientation,
        "affine": np.round(affine, 6).tolist(),
        "hu_min": int(hu.min()),
        "hu_max": int(hu.max()),
        "hu_percentiles": {
            str(q): float(v)
            for q, v in zip((1, 50, 99), np.percentile(hu, (1, 50, 99)), strict=True)
        },
    }
    if raw.meta:
        info["dicom"] = dict(raw.meta)
    return volume, info


# ----------------------------------------------------------------------------------- labels
def check_same_grid(
    image: io.Volume | io.Grid,
    label: io.Volume | io.Grid,
    tolerance_mm: float,
    *,
    subject: str | None,
) -> None:
    """Refuse a label map whose voxel grid differs from the image's (shape, or affine).

    Volumes or bare grids (:class:`thighct.io.Grid`, from headers) both do.
    """
    fix = (
        "export the label map on the scan's grid (same size, spacing, origin and orientation), "
        "e.g. resample it to the image in 3D Slicer or ITK-SNAP"
    )
    difference = grid_difference(image.shape, image.affine, label.shape, label.affine, tolerance_mm)
    if difference:
        raise ThighctError(
            f"the label map's grid differs from the image's: {difference} "
            "(label against image; tolerance: ingest.grid_tolerance_mm)",
            subject=subject,
            path=label.source,
            fix=fix,
        )


def label_lookup(
    source_ids: np.ndarray,
    labels: LabelTable,
    settings: IngestSettings,
    *,
    subject: str | None,
    path,
) -> dict[int, int]:
    """Source id -> project id for every id present, or ``ThighctError`` listing the unknown ones.

    Without ``label_map`` source ids must be project ids (labels.tsv). With it, only mapped ids
    (and 0) are kept, so a foreign id that happens to equal a project id is not misread.
    ``drop_labels`` (and, with ``drop_unmapped``, every unmapped id) become background.
    """
    known = set(labels.ids)
    mapping: dict[int, int] = {}
    for src, target in settings.label_map.items():
        if isinstance(target, str) and not target.lstrip("-").isdigit():
            if target not in labels.name_to_id:
                raise ThighctError(
                    f"ingest.label_map maps {src} to '{target}', which is not a class in labels.tsv",
                    subject=subject,
                    path=path,
                    fix=f"use one of the class names: {', '.join(labels.names)}",
                )
            mapping[int(src)] = labels.id_of(target)
        else:
            if int(target) not in known:
                raise ThighctError(
                    f"ingest.label_map maps {src} to id {target}, which is not in labels.tsv",
                    subject=subject,
                    path=path,
                    fix="map to a class name or id of labels.tsv",
                )
            mapping[int(src)] = int(target)
    dropped = set(int(v) for v in settings.drop_labels)
    out: dict[int, int] = {}
    unknown = []
    for value in (int(v) for v in source_ids):
        if value in dropped or value == 0:
            out[value] = 0
        elif value in mapping:
            out[value] = mapping[value]
        elif not mapping and value in known:
            out[value] = value
        elif settings.drop_unmapped:
            out[value] = 0
        else:
            unknown.append(value)
    if unknown:
        rule = "not named in ingest.label_map" if mapping else "not class ids of labels.tsv"
        raise ThighctError(
            f"label values {unknown} are {rule}",
            subject=subject,
            path=path,
            fix="map them with ingest.label_map (source id: class name), list them in "
            "ingest.drop_labels, or set ingest.drop_unmapped: true",
        )
    return out


def check_integer_labels(array: np.ndarray, *, subject: str | None, path) -> np.ndarray:
    """The label array as int64; refuses fractional, NaN or negative values (not a label map)."""
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all() or not np.array_equal(array, np.round(array)):
            raise ThighctError(
                "the label map holds non-integer values (a probability map or an interpolated label?)",
                subject=subject,
                path=path,
                fix="give the integer label map, resampled (if at all) with nearest neighbour",
            )
    values = array.astype(np.int64)
    if values.min() < 0:
        raise ThighctError(
            f"the label map holds negative values (min {int(values.min())})",
            subject=subject,
            path=path,
            fix="give a label map of non-negative class ids",
        )
    return values


def border_contacts(label: np.ndarray, labels: LabelTable) -> dict[str, list[str]]:
    """Class name -> faces of the volume it touches (structures cut by the field of view).

    Faces are named by their RAS+ direction (``left``/``right``, ``posterior``/``anterior``,
    ``inferior``/``superior``) for a canonical volume.
    """
    faces = {
        "left": (0, 0),
        "right": (0, -1),
        "posterior": (1, 0),
        "anterior": (1, -1),
        "inferior": (2, 0),
        "superior": (2, -1),
    }
    out: dict[str, list[str]] = {}
    for face, (axis, index) in faces.items():
        for cid in np.unique(np.take(label, index, axis=axis)):
            if cid != 0:
                out.setdefault(labels.name_of(int(cid)), []).append(face)
    return out


def ingest_label(
    path: str | Path,
    image: io.Volume,
    labels: LabelTable,
    settings: IngestSettings,
    subject: str | None = None,
) -> tuple[io.Volume, dict]:
    """Read a label map, check it against the ingested (canonical) image and map its ids.

    Returns the label (uint8 project ids on exactly the image's grid and affine) and a summary:
    source ids found, the id mapping applied, voxels per class, classes touching the volume's
    faces (cut by the field of view).
    """
    path = Path(path)
    raw = io.load_image(path, subject=subject)
    array = check_3d(raw, subject=subject, what="label map")
    array = check_integer_labels(array, subject=subject, path=raw.source)
    array, affine = io.to_canonical(array, raw.affine)
    label = io.Volume(array=array, affine=affine, source=raw.source)
    check_same_grid(image, label, settings.grid_tolerance_mm, subject=subject)
    source_ids = np.unique(array)
    lookup = label_lookup(source_ids, labels, settings, subject=subject, path=raw.source)
    table = np.zeros(int(source_ids.max()) + 1, dtype=np.uint8)
    for src, dst in lookup.items():
        table[src] = dst
    mapped = table[array]
    counts = np.bincount(mapped.ravel(), minlength=labels.n_classes)
    voxel_mm3 = float(abs(np.linalg.det(image.affine[:3, :3])))
    info = {
        "subject": subject,
        "source_ids": [int(v) for v in source_ids],
        "mapping": {str(k): int(v) for k, v in sorted(lookup.items()) if v != 0 and k != v},
        "dropped_ids": sorted(int(k) for k, v in lookup.items() if v == 0 and k != 0),
        "voxels": {labels.name_of(c): int(n) for c, n in enumerate(counts) if c and n},
        "volume_mm3": {
            labels.name_of(c): round(float(n) * voxel_mm3, 3)
            for c, n in enumerate(counts)
            if c and n
        },
        "touches_border": border_contacts(mapped, labels),
    }
    # The image's affine is written with the label so both files carry one identical grid.
    return io.Volume(array=mapped, affine=image.affine.copy(), source=raw.source), info


# ----------------------------------------------------------------------------------- writing
def write_image(volume: io.Volume, info: dict, image_path, info_path) -> None:
    """Write the ingested image (int16) and its info.json, each atomically."""
    io.save_nifti(image_path, volume.array, volume.affine, np.int16)
    io.save_json(info_path, info)


def write_label(volume: io.Volume, info: dict, label_path, info_path=None) -> None:
    """Write the ingested label map (uint8) and, if given, its summary json, atomically."""
    io.save_nifti(label_path, volume.array, volume.affine, np.uint8)
    if info_path is not None:
        io.save_json(info_path, info)


def ingest_subject(
    source, image_path, info_path, settings: IngestSettings, subject: str | None = None
) -> dict:
    """Ingest one scan end to end: checks first, then both outputs written (nothing on failure)."""
    volume, info = ingest_image(source, settings, subject=subject)
    write_image(volume, info, image_path, info_path)
    return info


def ingest_subject_label(
    source,
    image_path,
    label_path,
    info_path,
    labels: LabelTable,
    settings: IngestSettings,
    subject: str | None = None,
) -> dict:
    """Ingest one label map against the subject's ingested image (nothing written on failure)."""
    image = io.load_nifti(image_path, subject=subject)
    label, info = ingest_label(source, image, labels, settings, subject=subject)
    write_label(label, info, label_path, info_path)
    return info
