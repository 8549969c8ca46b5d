"""The segmentation classes: ids, names, groups and colours, read from config/labels.tsv.

Paper facts (the 30 classes, the 5 muscle groups plus bone) live in the table, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import ThighctError

REQUIRED_COLUMNS = ("id", "name", "display", "group", "colour")
MUSCLE_GROUPS = ("anterior", "medial", "posterior", "gluteal", "other")


@dataclass(frozen=True)
class LabelTable:
    """The label table: one row per class, background (id 0) first."""

    table: pd.DataFrame

    @property
    def ids(self) -> list[int]:
        return [int(i) for i in self.table["id"]]

    @property
    def names(self) -> list[str]:
        return list(self.table["name"])

    @property
    def n_classes(self) -> int:
        """Number of classes including background (30 in the paper)."""
        return len(self.table)

    @property
    def foreground(self) -> pd.DataFrame:
        return self.table[self.table["id"] != 0]

    @property
    def muscles(self) -> pd.DataFrame:
        """The muscle classes (groups anterior, medial, posterior, gluteal, other)."""
        return self.table[self.table["group"].isin(MUSCLE_GROUPS)]

    def name_of(self, class_id: int) -> str:
        return self.id_to_name[int(class_id)]

    def id_of(self, name: str) -> int:
        return self.name_to_id[name]

    @property
    def id_to_name(self) -> dict[int, str]:
        return dict(zip(self.table["id"].astype(int), self.table["name"], strict=True))

    @property
    def name_to_id(self) -> dict[str, int]:
        return dict(zip(self.table["name"], self.table["id"].astype(int), strict=True))

    @property
    def id_to_display(self) -> dict[int, str]:
        return dict(zip(self.table["id"].astype(int), self.table["display"], strict=True))

    @property
    def id_to_group(self) -> dict[int, str]:
        return dict(zip(self.table["id"].astype(int), self.table["group"], strict=True))

    def groups(self, include_bone: bool = False) -> dict[str, list[int]]:
        """Group name -> member class ids, in table order (background left out)."""
        out: dict[str, list[int]] = {}
        for _, row in self.foreground.iterrows():
            if row["group"] == "bone" and not include_bone:
                continue
            out.setdefault(row["group"], []).append(int(row["id"]))
        return out

    def rgb(self) -> dict[int, tuple[int, int, int]]:
        """Class id -> (r, g, b) in 0..255."""
        return {
            int(i): tuple(int(c[k : k + 2], 16) for k in (1, 3, 5))
            for i, c in zip(self.table["id"], self.table["colour"], strict=True)
        }

    def colour_lut(self) -> list[str]:
        """Hex colours indexed by class id (ids are contiguous 0..n-1)."""
        return list(self.table.sort_values("id")["colour"])

    def to_dict(self) -> list[dict]:
        """The table as plain records (stored inside model checkpoints)."""
        return [
            {"id": int(r.id), "name": str(r.name_), "group": str(r.group)}
            for r in self.table.rename(columns={"name": "name_"}).itertuples()
        ]


def read_labels(path: str | Path) -> LabelTable:
    """Read and check a label table (TSV with id, name, display, group, colour)."""
    path = Path(path)
    try:
        df = pd.read_csv(
            path, sep="\t", dtype={"id": int, "name": str, "group": str, "colour": str}
        )
    except (OSError, ValueError) as exc:
        raise ThighctError(
            f"cannot read the label table: {exc}",
            path=path,
            fix="give a TSV with columns id, name, display, group, colour",
        ) from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ThighctError(
            f"label table lacks columns {missing}",
            path=path,
            fix="add the columns id, name, display, group, colour",
        )
    df = df.sort_values("id").reset_index(drop=True)
    if list(df["id"]) != list(range(len(df))):
        raise ThighctError(
            "label ids must be contiguous 0..n-1 with 0 = background",
            path=path,
            fix="renumber the classes 0, 1, 2, ...",
        )
    if df["name"].duplicated().any():
        dup = sorted(df.loc[df["name"].duplicated(), "name"])
        raise ThighctError(
            f"duplicate class names {dup}", path=path, fix="give every class a unique name"
        )
    bad_colour = df.loc[~df["colour"].str.fullmatch(r"#[0-9a-fA-F]{6}"), "name"].tolist()
    if bad_colour:
        raise ThighctError(
            f"colours of {bad_colour} are not #rrggbb",
            path=path,
            fix="use hex colours like #e6194b",
        )
    return LabelTable(df)


def slicer_colour_table(labels: LabelTable) -> str:
    """3D Slicer colour table (.ctbl / .txt): ``id name r g b a`` per line."""
    lines = [
        "# 3D Slicer colour table written by thighct",
        f"# Number of colors: {labels.n_classes}",
    ]
    for cid, (r, g, b) in labels.rgb().items():
        alpha = 0 if cid == 0 else 255
        lines.append(f"{cid} {labels.name_of(cid)} {r} {g} {b} {alpha}")
    return "\n".join(lines) + "\n"


def itksnap_label_description(labels: LabelTable) -> str:
    """ITK-SNAP label description file: ``IDX R G B A VIS MESH "LABEL"`` per line."""
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File written by thighct",
        "# Columns: IDX -R- -G- -B- -A-- VIS MSH LABEL",
        "################################################",
    ]
    for cid, (r, g, b) in labels.rgb().items():
        a, vis, msh = (0.0, 0, 0) if cid == 0 else (1.0, 1, 1)
        lines.append(
            f'{cid:5d} {r:5d} {g:5d} {b:5d} {a:8.2f} {vis:2d} {msh:2d}    "{labels.id_to_display[cid]}"'
        )
    return "\n".join(lines) + "\n"
