"""Reading and writing image files: NIfTI volumes and DICOM series.

This is the one package of the library that touches image files. Every array it returns or
takes is in nibabel's voxel order ``(x, y, z) = (i, j, k)`` and every affine maps voxel indices
to RAS+ world coordinates in mm (the NIfTI convention), whatever the file stored.

Writes are atomic: the file is written to a temporary name in the same folder and moved into
place with ``os.replace``, so an interrupted job never leaves a half-written output behind.

Submodules: ``volume`` (:class:`Volume`, :class:`Grid`, spacing, orientation, RAS+ reordering),
``nifti`` (NIfTI files and headers), ``dicom`` (DICOM series: choice, geometry, decoding),
``scan`` (:func:`load_image`: a NIfTI file or a DICOM folder) and ``jsonfile`` (JSON side files).
"""

from ..io_tables import atomic_path
from .dicom import (
    DicomGeometry,
    DicomSeries,
    choose_series,
    dicom_geometry,
    list_dicom_series,
    load_dicom_series,
)
from .jsonfile import load_json, save_json
from .nifti import (
    NIFTI_SUFFIXES,
    check_nifti_name,
    is_nifti,
    load_nifti,
    nifti_grid,
    nifti_header,
    save_nifti,
)
from .scan import load_image
from .volume import Grid, Volume, canonical_grid, orientation_of, spacing_from_affine, to_canonical

__all__ = [
    "NIFTI_SUFFIXES",
    "DicomGeometry",
    "DicomSeries",
    "Grid",
    "Volume",
    "atomic_path",
    "canonical_grid",
    "check_nifti_name",
    "choose_series",
    "dicom_geometry",
    "is_nifti",
    "list_dicom_series",
    "load_dicom_series",
    "load_image",
    "load_json",
    "load_nifti",
    "nifti_grid",
    "nifti_header",
    "orientation_of",
    "save_json",
    "save_nifti",
    "spacing_from_affine",
    "to_canonical",
]
