"""Reading DICOM series: grouping a folder's slices into series, choosing one, checking its
geometry from the headers, and decoding it to Hounsfield units.

DICOM series are read with pydicom; its pixel-data plugins (pylibjpeg-openjpeg, pylibjpeg-libjpeg,
pylibjpeg-rle, pyjpegls) decode JPEG 2000, JPEG lossless, JPEG-LS and RLE. Only the attributes
needed to rebuild the geometry and the Hounsfield units are read from the headers; no
patient-identifying attribute (name, ids, dates, institution) is ever copied into a result.
Slices of different series, repeated acquisitions and series with missing slices are refused,
never merged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ThighctError
from .volume import Volume

# DICOM attributes read when grouping and sorting slices. pydicom reads headers lazily; listing
# the tags keeps identifying elements out of memory as well as out of every output.
_DICOM_TAGS = (
    "SOPClassUID",
    "Modality",
    "SeriesInstanceUID",
    "SeriesDescription",
    "SeriesNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "RescaleSlope",
    "RescaleIntercept",
    "InstanceNumber",
    "AcquisitionNumber",
)


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series in a folder: what is needed to choose it, nothing identifying.

    ``parts`` lists the distinct series (number, description, matrix) found under this one
    SeriesInstanceUID; more than one means several series share the UID and are refused.
    """

    uid: str
    description: str
    number: int | None
    modality: str
    files: tuple[Path, ...]
    parts: tuple[str, ...] = ()
    headers: tuple = field(default=(), compare=False, repr=False)

    @property
    def n_files(self) -> int:
        return len(self.files)

    def describe(self) -> str:
        number = "" if self.number is None else f"#{self.number} "
        uid = self.uid or "(none)"
        return f"{number}'{self.description}' ({self.modality}, {self.n_files} files, SeriesInstanceUID {uid})"


@dataclass(frozen=True)
class DicomGeometry:
    """The chosen series' slices sorted along the slice normal and the grid they make.

    ``shape`` is ``(columns, rows, slices)`` = ``(x, y, z)``; ``affine`` maps voxels to RAS+ mm.
    """

    series: DicomSeries
    files: tuple[Path, ...]
    shape: tuple[int, int, int]
    affine: np.ndarray
    rows: int
    columns: int


def _read_header(path: Path):
    """The header of a DICOM file (no pixels) and how many pixel-data bytes the file lacks.

    Returns ``(dataset, missing)``, or ``None`` when the file is not DICOM. ``missing`` counts
    the bytes between the file's end and the end its uncompressed pixel data element announces
    (0 when complete or when the pixel data is encapsulated, i.e. compressed).
    """
    import pydicom

    try:
        with open(path, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=list(_DICOM_TAGS))
            missing = _missing_pixel_bytes(fh, ds)
    except Exception:  # noqa: BLE001 - anything pydicom cannot parse is "not DICOM" here
        return None
    return ds, missing


def _missing_pixel_bytes(fh, ds) -> int:
    """Bytes missing from an uncompressed little-endian Pixel Data element that starts at ``fh``."""
    start = fh.tell()
    head = fh.read(12)
    if len(head) < 8 or head[:4] != b"\xe0\x7f\x10\x00":  # (7FE0,0010) Pixel Data
        return 0
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_compressed or not syntax.is_little_endian:
        return 0
    if syntax.is_implicit_VR:
        size, offset = int.from_bytes(head[4:8], "little"), 8
    else:
        size, offset = int.from_bytes(head[8:12], "little"), 12
    if size == 0xFFFFFFFF:
        return 0
    fh.seek(0, 2)
    return max(0, start + offset + size - fh.tell())


def _part_key(ds) -> tuple:
    number = ds.get("SeriesNumber")
    return (
        None if number in (None, "") else int(number),
        str(ds.get("SeriesDescription", "")),
        int(ds.get("Rows", 0) or 0),
        int(ds.get("Columns", 0) or 0),
    )


def list_dicom_series(folder: str | Path, *, subject: str | None = None) -> list[DicomSeries]:
    """Group the DICOM image files of ``folder`` (recursively) by SeriesInstanceUID.

    Files that are not DICOM images (no pixel geometry, e.g. DICOMDIR, reports) are ignored.
    Slices without a SeriesInstanceUID form one group of their own (uid ""). Within a group,
    slices that differ in SeriesNumber, SeriesDescription or matrix size are recorded as
    separate ``parts``: they are different series and never merged.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ThighctError(
            "DICOM folder not found",
            subject=subject,
            path=folder,
            fix="give the folder holding the CT series (one series per folder) in the cohort table",
        )
    groups: dict[str, list] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        read = _read_header(path)
        if read is None or "ImagePositionPatient" not in read[0]:
            continue
        ds = read[0]
        groups.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), []).append((path, read))
    series = []
    for uid, items in groups.items():
        ds = items[0][1][0]
        parts: dict[tuple, int] = {}
        for _, (slice_ds, _) in items:
            key = _part_key(slice_ds)
            parts[key] = parts.get(key, 0) + 1
        number = ds.get("SeriesNumber")
        series.append(
            DicomSeries(
                uid=uid,
                description=str(ds.get("SeriesDescription", "")),
                number=None if number in (None, "") else int(number),
                modality=str(ds.get("Modality", "")),
                files=tuple(p for p, _ in items),
                parts=tuple(
                    f"SeriesNumber {n if n is not None else '(none)'} '{d}' {r}x{c}: {k} files"
                    for (n, d, r, c), k in parts.items()
                ),
                headers=tuple(read for _, read in items),
            )
        )
    return sorted(series, key=lambda s: (s.number is None, s.number or 0, s.uid))


def choose_series(
    series: list[DicomSeries],
    *,
    series_uid: str | None = None,
    description_regex: str | None = None,
    folder: str | Path | None = None,
    subject: str | None = None,
) -> DicomSeries:
    """The one series to read: the only one, or the one matching ``series_uid`` or the regex.

    Several candidates and no rule that picks exactly one raise ``ThighctError`` listing them.
    """
    if not series:
        raise ThighctError(
            "no DICOM image series in the folder",
            subject=subject,
            path=folder,
            fix="point the cohort table at the folder holding the CT slices (.dcm files)",
        )
    candidates = list(series)
    rule = "the folder"
    if series_uid:
        candidates = [s for s in candidates if s.uid == series_uid]
        rule = f"SeriesInstanceUID {series_uid}"
    if description_regex:
        pattern = re.compile(description_regex)
        candidates = [s for s in candidates if pattern.search(s.description)]
        rule = f"series description regex {description_regex!r}"
    if len(candidates) == 1:
        return candidates[0]
    listing = "\n".join(f"    {s.describe()}" for s in series)
    found = "no series matches" if not candidates else f"{len(candidates)} series match"
    raise ThighctError(
        f"{found} {rule}; the folder holds {len(series)} series:\n{listing}",
        subject=subject,
        path=folder,
        fix="keep one series per folder, or set ingest.dicom.series_description (a regex) "
        "or ingest.dicom.series_uid in the config to choose one",
    )


def _slice_normal(orientation: np.ndarray) -> np.ndarray:
    row, col = orientation[:3], orientation[3:]
    return np.cross(row, col)


_SPLIT_FIX = (
    "put each series (and each acquisition) in a folder of its own and give the folder of the "
    "one to use in the cohort table; slices of different series are never merged into one volume"
)


def _check_one_series(chosen: DicomSeries, folder: Path, subject: str | None) -> None:
    """Refuse a chosen series whose slices are in fact several series sharing one UID."""
    if len(chosen.parts) > 1:
        uid = chosen.uid or "(none: the slices lack one)"
        listing = "\n".join(f"    {p}" for p in chosen.parts)
        raise ThighctError(
            f"{len(chosen.parts)} different series share SeriesInstanceUID {uid}:\n{listing}",
            subject=subject,
            path=folder,
            fix=_SPLIT_FIX,
        )


def _check_acquisitions(acquisitions: list, along: np.ndarray, folder, subject) -> None:
    """Refuse acquisitions of one series that overlap along the slice normal.

    Sequential acquisitions (a step-and-shoot scan) cover consecutive ranges and make one
    volume; overlapping ones are repeated or interleaved scans of the same range.
    """
    ranges: dict = {}
    for acq, z in zip(acquisitions, along, strict=True):
        lo, hi = ranges.get(acq, (z, z))
        ranges[acq] = (min(lo, z), max(hi, z))
    if len(ranges) < 2:
        return
    spans = sorted(ranges.items(), key=lambda kv: kv[1])
    for (a, (_, a_hi)), (b, (b_lo, _)) in zip(spans, spans[1:], strict=False):
        if b_lo <= a_hi + 1e-3:
            listing = ", ".join(
                f"AcquisitionNumber {k if k is not None else '(none)'}: {lo:.2f}..{hi:.2f} mm"
                for k, (lo, hi) in spans
            )
            raise ThighctError(
                f"acquisitions {a} and {b} of the series cover overlapping slice positions "
                f"(repeated or interleaved scans of one range): {listing}",
                subject=subject,
                path=folder,
                fix=_SPLIT_FIX,
            )


def dicom_geometry(
    folder: str | Path,
    *,
    series_uid: str | None = None,
    description_regex: str | None = None,
    spacing_tolerance: float = 0.01,
    subject: str | None = None,
) -> DicomGeometry:
    """Choose one series in ``folder`` and check its slice geometry from the headers alone.

    Slices are sorted by their position along the slice normal; they must share one series
    (see :func:`list_dicom_series`), orientation and matrix, not overlap between acquisitions,
    and be evenly spaced within ``spacing_tolerance`` (relative; a missing slice doubles one
    gap and is refused). A slice whose uncompressed pixel data is cut short is refused.
    No pixel is decoded.
    """
    folder = Path(folder)
    chosen = choose_series(
        list_dicom_series(folder, subject=subject),
        series_uid=series_uid,
        description_regex=description_regex,
        folder=folder,
        subject=subject,
    )
    _check_one_series(chosen, folder, subject)
    headers = [
        (p, ds, missing) for p, (ds, missing) in zip(chosen.files, chosen.headers, strict=True)
    ]
    for path, _, missing in headers:
        if missing:
            raise ThighctError(
                f"the slice's pixel data lacks {missing} bytes; the file is truncated",
                subject=subject,
                path=path,
                fix="copy or export the series again (check the file sizes against the source)",
            )
    first = headers[0][1]
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise ThighctError(
            "multi-frame (enhanced) DICOM is not read directly",
            subject=subject,
            path=folder,
            fix="convert the series to NIfTI with dcm2niix and give the .nii.gz in the cohort table",
        )
    orientation = np.asarray([float(v) for v in first.ImageOrientationPatient])
    for path, ds, _ in headers:
        other = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        if not np.allclose(other, orientation, atol=1e-4):
            raise ThighctError(
                "slices of the series have different orientations (a localizer, a tilted "
                "series or two series in one?)",
                subject=subject,
                path=path,
                fix=_SPLIT_FIX,
            )
    normal = _slice_normal(orientation)
    positions = np.asarray([[float(v) for v in ds.ImagePositionPatient] for _, ds, _ in headers])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    headers = [headers[i] for i in order]
    positions, along = positions[order], along[order]

    if len(headers) < 2:
        raise ThighctError(
            "the series has a single slice; a 3-D volume needs several",
            subject=subject,
            path=folder,
            fix="export the whole CT series",
        )
    acquisitions = [ds.get("AcquisitionNumber") for _, ds, _ in headers]
    _check_acquisitions(
        [None if a in (None, "") else int(a) for a in acquisitions], along, folder, subject
    )
    gaps = np.diff(along)
    if np.any(gaps < 1e-3):
        dup = headers[int(np.argmin(gaps)) + 1][0]
        raise ThighctError(
            "two slices share one position (duplicate or overlapping acquisitions in one series)",
            subject=subject,
            path=dup,
            fix="remove the duplicate slices or export a single reconstruction",
        )
    step = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - step) > spacing_tolerance * step)
    if bad.size:
        k = int(bad[0])
        raise ThighctError(
            f"slice spacing is not uniform: gap of {gaps[k]:.3f} mm between slices at "
            f"{along[k]:.2f} and {along[k + 1]:.2f} mm where {step:.3f} mm is usual "
            f"({bad.size} irregular gap(s)); a slice is missing or the series is not contiguous",
            subject=subject,
            path=headers[k + 1][0],
            fix="export the complete series again (no missing slices)",
        )

    rows, cols = int(first.Rows), int(first.Columns)
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    # DICOM: column index i moves along the row direction cosine by the column spacing
    # (PixelSpacing[1]); row index j along the column cosine by the row spacing (PixelSpacing[0]).
    lps = np.eye(4)
    lps[:3, 0] = orientation[:3] * col_spacing
    lps[:3, 1] = orientation[3:] * row_spacing
    lps[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1)
    lps[:3, 3] = positions[0]
    return DicomGeometry(
        series=chosen,
        files=tuple(p for p, _, _ in headers),
        shape=(cols, rows, len(headers)),
        affine=np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps,
        rows=rows,
        columns=cols,
    )


def load_dicom_series(
    folder: str | Path,
    *,
    series_uid: str | None = None,
    description_regex: str | None = None,
    spacing_tolerance: float = 0.01,
    subject: str | None = None,
) -> Volume:
    """Read one DICOM series from ``folder`` as Hounsfield units (float32), indexed ``(x, y, z)``.

    The series and its geometry are checked by :func:`dicom_geometry` first.
    RescaleSlope/RescaleIntercept are applied. The affine is converted from DICOM's LPS to RAS+.
    ``meta`` holds only the series number, modality, transfer syntax and slice count: no
    patient-identifying attribute and no free text (a series description may name a patient).
    """
    import pydicom

    geometry = dicom_geometry(
        folder,
        series_uid=series_uid,
        description_regex=description_regex,
        spacing_tolerance=spacing_tolerance,
        subject=subject,
    )
    rows, cols = geometry.rows, geometry.columns
    slices = []
    syntaxes = set()
    for path in geometry.files:
        try:
            ds = pydicom.dcmread(str(path))
            pixels = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - decoder errors come in many types
            raise ThighctError(
                f"cannot decode the pixel data ({type(exc).__name__}: {exc})",
                subject=subject,
                path=path,
                fix="check the file is complete; for an unusual compression, decompress it "
                "(e.g. gdcmconv --raw) or convert the series with dcm2niix",
            ) from exc
        if pixels.shape != (rows, cols):
            raise ThighctError(
                f"slice has {pixels.shape} pixels where the series has {(rows, cols)}",
                subject=subject,
                path=path,
                fix="export only the axial CT series into the folder",
            )
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        slices.append(pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept))
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID.name))
        del ds

    # pixel_array is (row, column) = (j, i); stack to (i, j, k).
    array = np.stack([s.T for s in slices], axis=-1)
    chosen = geometry.series
    meta = {
        "series_number": chosen.number,
        "modality": chosen.modality,
        "transfer_syntax": sorted(syntaxes),
        "n_slices": len(slices),
    }
    return Volume(array=array, affine=geometry.affine, source=str(folder), meta=meta)
