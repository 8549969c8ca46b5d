"""A scan as the cohort table gives it: a NIfTI file or a DICOM folder."""

from __future__ import annotations

from pathlib import Path

from .dicom import load_dicom_series
from .nifti import check_nifti_name, load_nifti
from .volume import Volume


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
