"""Reading and writing NIfTI files (``.nii``, ``.nii.gz``), and their headers alone.

A missing, empty, foreign or truncated file, or one without a valid affine, raises
``ThighctError`` naming the subject and the file. Writes are atomic and store integer data
unscaled, so labels and HU come back exactly.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import ThighctError
from ..io_tables import atomic_path
from .volume import Grid, Volume, to_canonical

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


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


def _check_affine(affine: np.ndarray, path, subject) -> None:
    """Raise if a NIfTI header gives no usable voxel-to-mm mapping."""
    if not np.all(np.isfinite(affine)):
        raise ThighctError(
            "the NIfTI header has no valid affine (qform/sform)",
            subject=subject,
            path=path,
            fix="rewrite the file with a valid orientation, e.g. with dcm2niix from the DICOM",
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
    _check_affine(affine, path, subject)
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
    _check_affine(affine, path, subject)
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
            # A corrupt deflate stream: the bytes decoded before it are all the file holds,
            # so the count so far is the answer (and falls short of a whole image).
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


def check_nifti_name(path: str | Path, *, subject: str | None = None) -> None:
    """Refuse an existing file whose name is not .nii or .nii.gz (e.g. a CSV or a PNG)."""
    if Path(path).exists() and not is_nifti(path):
        raise ThighctError(
            "unknown image format (expected .nii, .nii.gz or a DICOM folder)",
            subject=subject,
            path=path,
            fix="convert the scan to NIfTI (e.g. dcm2niix) or give its DICOM folder",
        )
