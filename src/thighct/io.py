"""Reading and writing image files: NIfTI volumes and DICOM series.

This is the one module of the library that touches image files. Every array it returns or
takes is in nibabel's voxel order ``(x, y, z) = (i, j, k)`` and every affine maps voxel indices
to RAS+ world coordinates in mm (the NIfTI convention), whatever the file stored.

Writes are atomic: the file is written to a temporary name in the same folder and moved into
place with ``os.replace``, so an interrupted job never leaves a half-written output behind.

DICOM series are read with pydicom; its pixel-data plugins (pylibjpeg-openjpeg, pylibjpeg-libjpeg,
pylibjpeg-rle, pyjpegls) decode JPEG 2000, JPEG lossless, JPEG-LS and RLE. Only the attributes
needed to rebuild the geometry and the Hounsfield units are read from the headers; no
patient-identifying attribute (name, ids, dates, institution) is ever copied into a result.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import ThighctError
from .io_tables import atomic_path  # noqa: F401  (io.atomic_path: the one atomic writer)

NIFTI_SUFFIXES = (".nii.gz", ".nii")

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


# ----------------------------------------------------------------------------------- volumes
@dataclass
class Volume:
    """A 3-D image or label map with its geometry.

    ``array`` is indexed ``(x, y, z)`` (nibabel voxel order); ``affine`` is the 4x4 matrix from
    voxel index to RAS+ world position in mm. Unpacks as ``array, affine = volume``.
    """

    array: np.ndarray
    affine: np.ndarray
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator:
        yield self.array
        yield self.affine

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size along i, j, k in mm."""
        return spacing_from_affine(self.affine)

    @property
    def orientation(self) -> str:
        """Axis codes of the voxel axes, e.g. ``"RAS"`` or ``"LPS"``."""
        return orientation_of(self.affine)


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along the i, j, k voxel axes: the lengths of the affine's columns."""
    affine = np.asarray(affine, dtype=float)
    return tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))


def orientation_of(affine: np.ndarray) -> str:
    """The closest anatomical axis codes of the voxel axes (``"RAS"`` for canonical)."""
    return "".join(nib.aff2axcodes(np.asarray(affine, dtype=float)))


def to_canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder and flip voxel axes so they run closest to R, A, S (nibabel's canonical RAS+).

    The world position of every voxel is unchanged (only axis order and direction change), and
    the dtype is kept. Returns ``(array, affine)``.
    """
    # What nib.as_closest_canonical does, on bare arrays (any dtype, e.g. int64 labels).
    array = np.asarray(array)
    affine = np.asarray(affine, dtype=float)
    ornt = nib.orientations.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return array, affine.copy()
    out = nib.orientations.apply_orientation(array, ornt)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, array.shape)
    return np.ascontiguousarray(out), new_affine


def canonical_grid(
    shape: tuple[int, ...], affine: np.ndarray
) -> tuple[tuple[int, ...], np.ndarray]:
    """The shape and affine :func:`to_canonical` gives a volume of this grid, without its voxels."""
    affine = np.asarray(affine, dtype=float)
    ornt = nib.orientations.io_orientation(affine)
    shape = tuple(int(n) for n in shape)
    new_shape = list(shape)
    for axis, (target, _) in enumerate(ornt):  # input axis `axis` becomes axis `target`
        new_shape[int(target)] = shape[axis]
    return tuple(new_shape), affine @ nib.orientations.inv_ornt_aff(ornt, shape)


@dataclass(frozen=True)
class Grid:
    """A voxel grid without its voxels: shape, affine (voxel -> RAS+ mm) and the file it is from."""

    shape: tuple[int, ...]
    affine: np.ndarray
    source: str = ""


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


# -------------------------------------------------------------------------------- atomic write
def save_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def load_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


# ------------------------------------------------------------------------------------- NIfTI
#: What nibabel raises on a missing, truncated or foreign file.
_NIFTI_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    zlib.error,
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
)


def _existing(path: str | Path, subject: str | None) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ThighctError(
            "image file not found",
            subject=subject,
            path=path,
            fix="check the path in the cohort table (image/label columns)",
        )
    return path


def _unreadable(exc: Exception, path: Path, subject: str | None, what: str) -> ThighctError:
    return ThighctError(
        f"cannot read the NIfTI {what} ({type(exc).__name__}: {exc}); it is truncated or not a NIfTI",
        subject=subject,
        path=path,
        fix="copy or export the file again (check its size against the source)",
    )


def load_nifti(
    path: str | Path,
    *,
    canonical: bool = False,
    subject: str | None = None,
) -> Volume:
    """Read a NIfTI file (``.nii`` or ``.nii.gz``) fully into memory.

    The array keeps the dtype stored in the file unless the header sets an intensity scaling
    (then it is float). With ``canonical=True`` the axes are reordered to RAS+ (``to_canonical``).
    A missing, unreadable or truncated file raises ``ThighctError`` naming ``subject`` and path.
    """
    path = _existing(path, subject)
    try:
        img = nib.load(str(path))
        # Reading the data here (not lazily) is what detects a truncated or corrupt file.
        array = np.asanyarray(img.dataobj)
        affine = img.affine.copy()
    except _NIFTI_ERRORS as exc:
        raise _unreadable(exc, path, subject, "file") from exc
    if not np.all(np.isfinite(affine)):
        raise ThighctError(
            "the NIfTI header has no valid affine (qform/sform)",
            subject=subject,
            path=path,
            fix="rewrite the file with a valid orientation, e.g. with dcm2niix from the DICOM",
        )
    if canonical:
        array, affine = to_canonical(array, affine)
    return Volume(array=array, affine=affine, source=str(path))


def nifti_grid(
    path: str | Path, *, subject: str | None = None
) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of a NIfTI file from its header alone (no voxel data is read).

    For checks that need only the grid; :func:`load_nifti` reads (and so verifies) the data.
    """
    path = _existing(path, subject)
    try:
        img = nib.load(str(path))
        return tuple(int(n) for n in img.shape), img.affine.copy()
    except _NIFTI_ERRORS as exc:
        raise _unreadable(exc, path, subject, "header") from exc


def nifti_header(path: str | Path, *, subject: str | None = None) -> tuple[Grid, np.dtype, bool]:
    """A NIfTI file's grid, stored dtype and whether it sets an intensity scaling, from its header.

    No voxel is decoded, yet a file whose voxel data is cut short is refused: the data must end
    where the header says (``.nii``: the file size; ``.nii.gz``: the uncompressed size the gzip
    trailer records, or, if that disagrees, the length of the decompressed stream). An empty,
    foreign or truncated file, or one without a valid affine, raises ``ThighctError``.
    """
    path = _existing(path, subject)
    if path.stat().st_size == 0:
        raise ThighctError(
            "the file is empty (0 bytes)",
            subject=subject,
            path=path,
            fix="copy or export the file again (check its size against the source)",
        )
    try:
        img = nib.load(str(path))
        header = img.header
        shape = tuple(int(n) for n in img.shape)
        dtype = header.get_data_dtype()
        slope, inter = header.get_slope_inter()
        affine = img.affine.copy()
        end = int(header.get_data_offset()) + int(np.prod(shape)) * dtype.itemsize
    except _NIFTI_ERRORS as exc:
        raise _unreadable(exc, path, subject, "header") from exc
    if not np.all(np.isfinite(affine)):
        raise ThighctError(
            "the NIfTI header has no valid affine (qform/sform)",
            subject=subject,
            path=path,
            fix="rewrite the file with a valid orientation, e.g. with dcm2niix from the DICOM",
        )
    stored = _stored_bytes(path, end)
    if stored < end:
        raise ThighctError(
            f"the file holds {stored} of the {end} bytes its header announces; it is truncated",
            subject=subject,
            path=path,
            fix="copy or export the file again (check its size against the source)",
        )
    scaled = (slope is not None and slope not in (0, 1)) or (inter is not None and inter != 0)
    return Grid(shape=shape, affine=affine, source=str(path)), dtype, bool(scaled)


def _stored_bytes(path: Path, wanted: int) -> int:
    """Bytes of (uncompressed) content in ``path``, counted up to ``wanted`` at most.

    A gzip file records its uncompressed size (mod 2**32) in its last 4 bytes: when that
    matches, nothing is decompressed. Otherwise (a cut-off file, or a file of several gzip
    members) the stream is decompressed and counted, stopping at ``wanted`` bytes.
    """
    size = path.stat().st_size
    if not str(path).lower().endswith(".gz"):
        return size
    with open(path, "rb") as fh:
        fh.seek(-4, 2)
        if int.from_bytes(fh.read(4), "little") == wanted % 2**32:
            return wanted
        fh.seek(0)
        count = 0
        inflater = zlib.decompressobj(wbits=31)
        try:
            while count < wanted:
                chunk = fh.read(1 << 20)
                if not chunk:
                    break
                while chunk and count < wanted:
                    count += len(inflater.decompress(chunk))
                    chunk = inflater.unused_data
                    if inflater.eof:  # the next gzip member, if any
                        inflater = zlib.decompressobj(wbits=31)
        except zlib.error:
            pass
    return min(count, wanted)


def save_nifti(
    path: str | Path,
    array: np.ndarray,
    affine: np.ndarray,
    dtype: np.dtype | type | str | None = None,
) -> None:
    """Write ``array`` (indexed ``(x, y, z)``) with ``affine`` (voxel -> RAS+ mm) to NIfTI, atomically.

    With an integer ``dtype`` the values are rounded and stored unscaled (no slope/intercept),
    so integer labels and HU come back exactly; values out of the dtype's range raise
    ``ValueError`` rather than wrap around. Both qform and sform are set (code 1, scanner).
    """
    array = np.asarray(array)
    dtype = np.dtype(dtype) if dtype is not None else array.dtype
    if dtype == np.bool_:
        dtype = np.dtype(np.uint8)
    if np.issubdtype(dtype, np.integer) and array.dtype != dtype:
        if array.size and np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise ValueError(f"cannot store NaN/inf as {dtype}")
        info = np.iinfo(dtype)
        lo, hi = (array.min(), array.max()) if array.size else (0, 0)
        if lo < info.min or hi > info.max:
            raise ValueError(f"values {lo}..{hi} do not fit {dtype}")
        array = np.rint(array) if np.issubdtype(array.dtype, np.floating) else array
    data = np.ascontiguousarray(array.astype(dtype, copy=False))
    affine = np.asarray(affine, dtype=float)
    img = nib.Nifti1Image(data, affine)
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    # Explicit unit scaling stops nibabel from rescaling integer data on write.
    img.header["scl_slope"] = 1.0
    img.header["scl_inter"] = 0.0
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


# ------------------------------------------------------------------------------------- DICOM
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


def load_image(
    path: str | Path,
    *,
    subject: str | None = None,
    series_uid: str | None = None,
    description_regex: str | None = None,
    spacing_tolerance: float = 0.01,
) -> Volume:
    """Read a scan given as a NIfTI file or a DICOM folder (as stored; not reoriented)."""
    path = Path(path)
    if path.is_dir():
        return load_dicom_series(
            path,
            series_uid=series_uid,
            description_regex=description_regex,
            spacing_tolerance=spacing_tolerance,
            subject=subject,
        )
    check_nifti_name(path, subject=subject)
    return load_nifti(path, subject=subject)


def check_nifti_name(path: str | Path, *, subject: str | None = None) -> None:
    """Refuse an existing file whose name is not .nii or .nii.gz (e.g. a CSV or a PNG)."""
    if Path(path).exists() and not is_nifti(path):
        raise ThighctError(
            "unknown image format (expected .nii, .nii.gz or a DICOM folder)",
            subject=subject,
            path=path,
            fix="convert the scan to NIfTI (e.g. dcm2niix) or give its DICOM folder",
        )
