"""JSON side files (e.g. what ingest records about a scan), written atomically.

numpy scalars and arrays are written as plain numbers and lists.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io_tables import atomic_path


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
