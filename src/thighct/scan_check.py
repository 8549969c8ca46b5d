"""The light check of every scan before any job: file headers only, every problem at once.

Ingestion (:mod:`thighct.ingest`) reads every voxel and has the last word; this check reads
only what the headers say (NIfTI: the header and the length of the stored data; DICOM: the
series in the folder and their slice geometry, no pixel decoded), so the workflow checks a
cohort of thousands of scans while it is read and a bad scan stops ``snakemake -n``, not an
ingest job. The checks are ingestion's own (3-D shape, label grid equal to the image grid,
integer labels, one DICOM series with even slice spacing), so a scan that passes here fails
ingestion only for what needs its voxels (Hounsfield range, label ids).

What a file's header says is memoised in a JSON cache keyed on the file's path, size and
modification time (a DICOM folder: every file's), so re-reading an unchanged cohort costs
little more than a ``stat`` per file. The cache is dropped whenever the code that fills it
changes (its fingerprint is stored with it).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import io
from .errors import ScanErrors, ThighctError
from .ingest import IngestSettings, check_integer_labels, check_same_grid, three_d_shape

#: Cohort table column -> role of the file it names.
COLUMNS = {"image": "image", "label": "label", "label_rater2": "label"}
WHAT = {"image": "image", "label": "label map"}


@dataclass(frozen=True)
class CheckSummary:
    """How many distinct files the check covered and how many it had to read (not cached)."""

    files: int
    read: int


def read_facts(path: str, role: str, settings: IngestSettings) -> dict:
    """What the check needs of one file, from its header, as JSON-ready values.

    Returns ``{"shape": [x, y, z], "affine": 4x4}`` (the canonical RAS+ grid ingestion will
    produce) or ``{"problem": ..., "file": ..., "fix": ...}``. A label map stored as floating
    point (or with an intensity scaling) is read in full: only its values tell an integer map
    from a probability map.
    """
    try:
        if Path(path).is_dir():
            dicom = settings if role == "image" else IngestSettings()
            geometry = io.dicom_geometry(
                path,
                series_uid=dicom.series_uid or None,
                description_regex=dicom.series_description or None,
                spacing_tolerance=dicom.slice_spacing_tolerance,
            )
            shape, affine = geometry.shape, geometry.affine
        else:
            io.check_nifti_name(path)
            grid, dtype, scaled = io.nifti_header(path)
            shape, affine = grid.shape, grid.affine
            if role == "label" and (np.issubdtype(dtype, np.floating) or scaled):
                check_integer_labels(io.load_nifti(path).array, subject=None, path=path)
        shape = three_d_shape(shape, subject=None, path=path, what=WHAT[role])
        shape, affine = io.canonical_grid(shape, affine)
        return {"shape": [int(n) for n in shape], "affine": np.asarray(affine).tolist()}
    except ThighctError as exc:
        return {"problem": exc.message, "file": exc.path or str(path), "fix": exc.fix}


def signature(path: str) -> str | None:
    """Size and modification time of a file, or a digest of those of every file in a folder.

    None when the path does not exist (nothing to memoise).
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return f"{st.st_size}:{st.st_mtime_ns}"
    digest = hashlib.sha1()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            try:
                fst = os.stat(full)
            except OSError:
                continue
            rel = os.path.relpath(full, path)
            digest.update(f"{rel}\0{fst.st_size}\0{fst.st_mtime_ns}\n".encode())
    return "dir:" + digest.hexdigest()


def _cache_key(path: str, role: str, settings: IngestSettings, sig: str) -> str:
    series = ""
    if sig.startswith("dir:") and role == "image":
        series = (
            f"{settings.series_uid}|{settings.series_description}|"
            f"{settings.slice_spacing_tolerance!r}"
        )
    return "\t".join((role, os.path.abspath(path), sig, series))


def code_version() -> str:
    """Fingerprint of the code that fills the cache (this module and what it imports)."""
    from .fingerprint import code_fingerprint

    return code_fingerprint("scan_check")


def _load_cache(path: Path | None, version: str) -> dict:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != version:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def _save_cache(path: Path, version: str, entries: Mapping[str, dict]) -> None:
    from .io_tables import write_text

    write_text(json.dumps({"version": version, "entries": entries}), path)


def exclusion_hint(criteria: Sequence[Mapping]) -> str | None:
    """How to leave a subject out instead of fixing its scan: the last true/false exclusion
    criterion of config ``criteria`` (the paper's: other image processing factors)."""
    for crit in reversed(list(criteria)):
        value = crit.get("value")
        if crit.get("kind") == "exclusion" and isinstance(value, bool) and crit.get("op") == "==":
            reason = crit.get("description", crit.get("name"))
            return (
                "correct or replace each file above; or leave a subject out: set "
                f"{crit['column']} to {str(not value).lower()} in its row of the cohort table "
                f"(it is then counted in Fig 1 under '{reason}')"
            )
    return None


def check_scans(
    rows: Iterable[Mapping],
    settings: IngestSettings,
    *,
    criteria: Sequence[Mapping] = (),
    cache_path: str | Path | None = None,
    workers: int | None = None,
    table: str | Path | None = None,
) -> CheckSummary:
    """Check every scan and label map of the cohort ``rows`` from their headers.

    ``rows`` are cohort table rows (``subject_id``, ``image``, ``label``, ``label_rater2``;
    empty paths are skipped). Every problem found, in any row, is raised together as one
    :class:`ScanErrors` naming subject, file, what is wrong and the fix; the table's path
    and the way to exclude a subject (see :func:`exclusion_hint`) close the message.
    ``workers`` threads read headers in parallel (a run setting: the result is the same).
    ``cache_path`` memoises each file's header facts (see the module); None reads every time.
    """
    rows = list(rows)
    wanted: dict[tuple[str, str], None] = {}
    for row in rows:
        for column, role in COLUMNS.items():
            path = str(row.get(column, "") or "")
            if path:
                wanted[(path, role)] = None

    version = code_version()
    cache_path = Path(cache_path) if cache_path is not None else None
    cache = _load_cache(cache_path, version)
    keys: dict[tuple[str, str], str | None] = {}
    facts: dict[tuple[str, str], dict] = {}
    to_read = []
    for item in wanted:
        sig = signature(item[0])
        key = None if sig is None else _cache_key(item[0], item[1], settings, sig)
        keys[item] = key
        if key is not None and key in cache:
            facts[item] = cache[key]
        else:
            to_read.append(item)
    n_workers = max(1, int(workers or min(8, os.cpu_count() or 1)))
    if n_workers > 1 and len(to_read) > 1:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            results = pool.map(lambda it: read_facts(it[0], it[1], settings), to_read)
            facts.update(zip(to_read, results, strict=True))
    else:
        facts.update((it, read_facts(it[0], it[1], settings)) for it in to_read)
    if cache_path is not None and (to_read or len(cache) != len(wanted)):
        _save_cache(cache_path, version, {k: facts[it] for it, k in keys.items() if k is not None})

    problems = []
    for row in rows:
        problems += subject_problems(row, facts, settings)
    if problems:
        raise ScanErrors(
            problems,
            what="scan(s) cannot be ingested (found in the file headers, before any job)",
            fix=exclusion_hint(criteria) or "correct or replace each file above",
            path=table,
        )
    return CheckSummary(files=len(wanted), read=len(to_read))


def subject_problems(
    row: Mapping, facts: Mapping[tuple[str, str], dict], settings: IngestSettings
) -> list[ThighctError]:
    """Every problem of one subject's files: each file's own, then each label map's grid
    against the image's (ingestion's same-grid rule, on the headers' canonical grids)."""
    subject = str(row["subject_id"])
    out = []
    grids = {}
    for column, role in COLUMNS.items():
        path = str(row.get(column, "") or "")
        if not path:
            continue
        fact = facts[(path, role)]
        if "problem" in fact:
            out.append(
                ThighctError(fact["problem"], subject=subject, path=fact["file"], fix=fact["fix"])
            )
        else:
            grids[column] = io.Grid(tuple(fact["shape"]), np.asarray(fact["affine"]), path)
    image = grids.get("image")
    for column in ("label", "label_rater2"):
        if image is not None and column in grids:
            try:
                check_same_grid(image, grids[column], settings.grid_tolerance_mm, subject=subject)
            except ThighctError as exc:
                out.append(exc)
    return out
