"""Atomic writing of tables and text (a failed job never leaves half a file)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd


def write_text(text: str, path: str | Path) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
