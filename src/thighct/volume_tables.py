"""The volume table: its columns, and reading, stacking and writing it (numpy and pandas only).

Kept apart from :mod:`thighct.volumes`, which measures label maps (and needs the imaging stack),
so that rules which only stack tables (rule ``volumes``) run in the light ``stats`` env.
One row per subject and structure: muscles and bones by class id, groups with
``class_id = GROUP_ID`` and their members summed.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

COLUMNS = [
    "subject",
    "class_id",
    "class_name",
    "group",
    "volume_mm3",
    "volume_left_mm3",
    "volume_right_mm3",
    "mean_hu",
    "imat_fraction",
    "fov_cut",
]
GROUP_ID = -1


def combine_tables(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Stack per-subject volume tables into one (subjects in the given order)."""
    if not tables:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(list(tables), ignore_index=True)
    return out[COLUMNS]


def read_table(path) -> pd.DataFrame:
    """Read a volume table written by :func:`write_table`."""
    return pd.read_csv(path, sep="\t", dtype={"subject": str})


def write_table(table: pd.DataFrame, path) -> None:
    """Write a volume table as TSV, atomically (10 significant digits; empty = NaN)."""
    from .io_tables import write_tsv

    write_tsv(table[COLUMNS], path, float_format="%.10g")
