"""Fig 3: the pre-processing on axial slices - raw HU, HU window, gamma, cropped and resampled.

Arrays are indexed ``(x, y, z)`` on RAS+ grids; slices are drawn in world millimetres in the
radiological convention (patient's right on the viewer's left, anterior up), so the raw and
preprocessed panels of a row line up and the crop is visible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.patches import Rectangle

from .style import apply_style, save_figure


@dataclass
class AxialPanel:
    """One axial slice (indexed ``(x, y)``) with the affine of its volume and slice index."""

    data: np.ndarray
    affine: np.ndarray
    k: int

    def extent(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max) of the voxel edges, world mm (axis-aligned grids)."""
        nx, ny = self.data.shape
        corners = (
            self.affine @ np.array([[-0.5, -0.5, self.k, 1.0], [nx - 0.5, ny - 0.5, self.k, 1.0]]).T
        )
        (x0, x1), (y0, y1) = np.sort(corners[0]), np.sort(corners[1])
        return float(x0), float(x1), float(y0), float(y1)

    @property
    def z_mm(self) -> float:
        return float((self.affine @ np.array([0.0, 0.0, self.k, 1.0]))[2])


def axial(volume: np.ndarray, affine: np.ndarray, k: int) -> AxialPanel:
    return AxialPanel(np.asarray(volume[:, :, k]), np.asarray(affine, float), int(k))


def slice_at_z(affine: np.ndarray, n_slices: int, z_mm: float) -> int:
    """Index of the slice of an axis-aligned RAS grid nearest to world height ``z_mm`` (clipped)."""
    k = (z_mm - float(affine[2, 3])) / float(affine[2, 2])
    return int(np.clip(np.round(k), 0, n_slices - 1))


def level_slices(n_slices: int, levels: Mapping[str, float]) -> dict[str, int]:
    """Level name -> slice index, levels given as fractions of the height (0 = lowest slice)."""
    return {name: int(round(frac * (n_slices - 1))) for name, frac in levels.items()}


def _show(ax, panel: AxialPanel, vmin: float, vmax: float):
    x0, x1, y0, y1 = panel.extent()
    img = ax.imshow(
        panel.data.T,
        origin="lower",
        extent=(x0, x1, y0, y1),
        cmap="gray",
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
    return img


def plot_preprocessing(
    rows: Sequence[tuple[str, Sequence[AxialPanel]]],
    columns: Sequence[tuple[str, float, float, str]],
    png_path,
    *,
    crop_box_mm: tuple[float, float, float, float] | None = None,
    title: str = "",
    dpi: int = 200,
    scale_bar_mm: float = 50.0,
) -> None:
    """Grid of axial slices: one row per level, one column per pre-processing step.

    rows: (row label, panels in column order). columns: (title, vmin, vmax, colour bar label).
    crop_box_mm: (x_min, x_max, y_min, y_max) of the body crop, drawn on the first column.
    """
    apply_style()
    n_rows, n_cols = len(rows), len(columns)
    # Panel height follows the body's aspect, so rows sit close together.
    first = np.array([p.extent() for p in rows[0][1]])
    aspect = (first[:, 3].max() - first[:, 2].min()) / (first[:, 1].max() - first[:, 0].min())
    panel_w = 2.6
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(panel_w * n_cols, panel_w * float(np.clip(aspect, 0.4, 1.5)) * n_rows + 1.4),
        squeeze=False,
        layout="constrained",
    )
    # Shared limits per row: the panels line up in world coordinates.
    images = [None] * n_cols
    for r, (row_label, panels) in enumerate(rows):
        extents = np.array([p.extent() for p in panels])
        xlim = (extents[:, 1].max(), extents[:, 0].min())  # radiological: right on the left
        ylim = (extents[:, 2].min(), extents[:, 3].max())
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            _, vmin, vmax, _ = columns[c]
            images[c] = _show(ax, panel, vmin, vmax)
            ax.set_xlim(*xlim)
            ax.set_ylim(*ylim)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("black")
            if c == 0 and crop_box_mm is not None:
                bx0, bx1, by0, by1 = crop_box_mm
                ax.add_patch(
                    Rectangle(
                        (bx0, by0), bx1 - bx0, by1 - by0, fill=False, ec="#ffcc00", lw=1.0, ls="--"
                    )
                )
            if r == 0:
                ax.set_title(columns[c][0])
        axes[r, 0].set_ylabel(f"{row_label}\nz = {panels[0].z_mm:.0f} mm", fontsize=10)
        ax0 = axes[r, 0]
        ax0.text(0.03, 0.5, "R", color="white", transform=ax0.transAxes, va="center", fontsize=9)
        ax0.text(
            0.97,
            0.5,
            "L",
            color="white",
            transform=ax0.transAxes,
            va="center",
            ha="right",
            fontsize=9,
        )
        # Scale bar, bottom right of the first panel (x axis runs right-to-left in mm).
        x_right, y_bottom = xlim[1], ylim[0]
        span_x, span_y = xlim[0] - xlim[1], ylim[1] - ylim[0]
        x_start = x_right + 0.06 * span_x
        y_bar = y_bottom + 0.07 * span_y
        ax0.plot([x_start, x_start + scale_bar_mm], [y_bar, y_bar], color="white", lw=2)
        ax0.text(
            x_start + scale_bar_mm / 2,
            y_bar + 0.03 * span_y,
            f"{scale_bar_mm:g} mm",
            color="white",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    for c, (_, _, _, cbar_label) in enumerate(columns):
        cb = fig.colorbar(
            images[c], ax=axes[:, c], orientation="horizontal", fraction=0.04, pad=0.01, aspect=25
        )
        cb.set_label(cbar_label)
    if title:
        fig.suptitle(title)
    save_figure(fig, png_path, dpi=dpi)
