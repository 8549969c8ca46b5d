"""Atomic writing of files, tables and text (a failed job never leaves half a file).

:func:`atomic_path` is the one atomic writer of the package: images (``io``), model files
(``models``) and tables (here) all go through it. This module needs only pandas, so the
statistics of a finished study run without the imaging stack.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    The temporary name keeps the file's suffixes (``.nii.gz``) so writers that choose the format
    from the name still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(text: str, path: str | Path) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_tsv(
    df: pd.DataFrame,
    path: str | Path,
    header_comment: str | None = None,
    float_format: str | None = None,
) -> None:
    """Write a TSV (no index), optionally preceded by ``# `` comment lines."""
    body = df.to_csv(sep="\t", index=False, float_format=float_format, lineterminator="\n")
    head = ""
    if header_comment:
        head = "".join(f"# {line}\n" if line else "#\n" for line in header_comment.splitlines())
    write_text(head + body, path)
