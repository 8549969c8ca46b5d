"""Shared figure style: print-size fonts, colour maps from the label table, atomic saving."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

# Sizes chosen so a figure scaled to a 180 mm wide journal column stays readable (>= 7 pt).
RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 12,
    "savefig.bbox": "tight",
    "font.family": "DejaVu Sans",
    "svg.fonttype": "none",
    "pdf.fonttype": 42,
}


def apply_style() -> None:
    """Set the house rcParams (idempotent)."""
    plt.rcParams.update(RC)


def label_colormap(labels) -> ListedColormap:
    """Colour map indexed by class id, from ``labels.tsv`` (background black)."""
    return ListedColormap(labels.colour_lut(), name="thighct_labels")


def save_figure(
    fig, png_path: str | Path, also: tuple[str, ...] = (), dpi: int = 200
) -> list[Path]:
    """Save ``fig`` as PNG (and the formats in ``also`` beside it), each atomically.

    Returns the written paths. The figure is closed afterwards.
    """
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for ext in ("png", *also):
        target = png_path.with_suffix("." + ext)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix="." + ext)
        os.close(fd)
        try:
            fig.savefig(tmp, dpi=dpi, format=ext, metadata=_metadata(ext))
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        written.append(target)
    plt.close(fig)
    return written


def _metadata(ext: str) -> dict:
    # Fixed metadata keeps the files byte-identical across runs (no creation dates).
    if ext == "png":
        return {"Software": None}
    if ext == "pdf":
        return {"Creator": None, "Producer": None, "CreationDate": None}
    if ext == "svg":
        return {"Date": None, "Creator": None}
    return {}
