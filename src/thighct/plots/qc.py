"""The flagged scans (results/figures/qc_flagged.png): what each scan's first flag is about.

One row per flagged scan and label map: an axial and a coronal slice through the flagged
structure (or the metal, or the unlabelled muscle), the labels over the CT as in Fig 6
(:mod:`thighct.plots.segmentation`), the flagged voxels outlined in white, and the scan's flags
listed beside. Slices are drawn in world millimetres in the radiological convention (patient's
right on the viewer's left). Arrays are indexed ``(x, y, z)`` on an RAS+ grid. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import pyplot as plt

from ..labels import LabelTable
from .segmentation import draw_overlay, slice_extent
from .style import apply_style, save_figure

# Flags listed per row before the rest are counted ("+ n more").
MAX_LISTED = 7


@dataclass
class FlaggedView:
    """One flagged scan: its slices through the first flag's region, and its flags as text."""

    subject: str
    source: str  # the label map's display name
    flags: list[str]  # one line per flag
    affine: np.ndarray
    k: int  # axial slice
    j: int  # coronal slice
    axial: tuple[np.ndarray, np.ndarray, np.ndarray]  # CT (HU), labels, region; (x, y)
    coronal: tuple[np.ndarray, np.ndarray, np.ndarray]  # CT (HU), labels, region; (x, z)


def view_of(
    subject: str,
    source: str,
    flags: Sequence[str],
    hu: np.ndarray,
    label: np.ndarray,
    region: np.ndarray,
    affine: np.ndarray,
    k: int,
    j: int,
) -> FlaggedView:
    """Cut the axial slice ``k`` and coronal slice ``j`` out of a scan's CT, labels and region."""
    return FlaggedView(
        subject=subject,
        source=source,
        flags=list(flags),
        affine=np.asarray(affine, float),
        k=int(k),
        j=int(j),
        axial=tuple(np.asarray(a[:, :, k]) for a in (hu, label, region)),
        coronal=tuple(np.asarray(a[:, j, :]) for a in (hu, label, region)),
    )


def coronal_extent(shape: Sequence[int], affine: np.ndarray, j: int) -> tuple[float, ...]:
    """(x_min, x_max, z_min, z_max) world mm of the voxel edges of coronal slice ``j``."""
    nx, _, nz = shape
    corners = (
        np.asarray(affine, float) @ np.array([[-0.5, j, -0.5, 1.0], [nx - 0.5, j, nz - 0.5, 1.0]]).T
    )
    (x0, x1), (z0, z1) = np.sort(corners[0]), np.sort(corners[2])
    return float(x0), float(x1), float(z0), float(z1)


def _draw(ax, ct, label, region, extent, labels, display_hu, alpha):
    draw_overlay(ax, ct, label, extent, labels, display_hu, alpha)
    if region.any() and not region.all():
        ax.contour(
            region.T.astype(float),
            levels=[0.5],
            extent=extent,
            origin="lower",
            colors="white",
            linewidths=1.2,
        )
    ax.set_xlim(extent[1], extent[0])  # radiological: patient's right on the viewer's left
    ax.set_ylim(extent[2], extent[3])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("black")
    ax.text(0.03, 0.96, "R", color="white", transform=ax.transAxes, va="top", fontsize=8)
    ax.text(
        0.97, 0.96, "L", color="white", transform=ax.transAxes, va="top", ha="right", fontsize=8
    )


def plot_flagged(
    views: Sequence[FlaggedView],
    labels: LabelTable,
    png_path,
    *,
    n_flagged: int,
    n_scans: int,
    n_flags: int,
    display_hu: Sequence[float] = (-200.0, 300.0),
    alpha: float = 0.55,
    dpi: int = 200,
) -> None:
    """Rows of flagged scans (axial, coronal, flags); a figure that says so when none is.

    ``n_flagged`` scans of ``n_scans`` carry ``n_flags`` flags in all; ``views`` (a scan's
    label map each) are the ones shown.
    """
    apply_style()
    if not views:
        fig = plt.figure(figsize=(7.0, 1.6))
        fig.text(
            0.5,
            0.5,
            f"No scan flagged\n{n_scans} scans checked (thresholds: config qc)",
            ha="center",
            va="center",
            fontsize=12,
        )
        save_figure(fig, png_path, dpi=dpi)
        return
    # Panels keep their world aspect: a row is as tall as its taller slice (the coronal one).
    panel_w = 2.6
    aspects = []
    for view in views:
        ax0, ax1, ay0, ay1 = slice_extent(view.axial[0].shape, view.affine, view.k)
        cx0, cx1, cz0, cz1 = coronal_extent(
            (view.coronal[0].shape[0], 1, view.coronal[0].shape[1]), view.affine, 0
        )
        aspects.append(max((ay1 - ay0) / (ax1 - ax0), (cz1 - cz0) / (cx1 - cx0)))
    row_h = [panel_w * float(np.clip(a, 0.4, 1.6)) + 0.5 for a in aspects]
    height = sum(row_h) + 0.65
    fig = plt.figure(figsize=(3 * panel_w + 1.0, height))
    grid = fig.add_gridspec(
        len(views), 3, width_ratios=[1.0, 1.0, 1.1], height_ratios=row_h, hspace=0.25, wspace=0.05
    )
    fig.subplots_adjust(top=1 - 0.65 / height, bottom=0.1 / height, left=0.05, right=0.99)
    for row, view in enumerate(views):
        ct, label, region = view.axial
        ax = fig.add_subplot(grid[row, 0])
        _draw(
            ax,
            ct,
            label,
            region,
            slice_extent(ct.shape, view.affine, view.k),
            labels,
            display_hu,
            alpha,
        )
        z_mm = float((view.affine @ np.array([0.0, 0.0, view.k, 1.0]))[2])
        ax.set_title(f"{view.subject}: axial, z = {z_mm:.0f} mm", fontsize=10)
        ax.set_ylabel(view.source, fontsize=10)
        ct, label, region = view.coronal
        shape = (ct.shape[0], 1, ct.shape[1])
        ax = fig.add_subplot(grid[row, 1])
        _draw(
            ax, ct, label, region, coronal_extent(shape, view.affine, 0), labels, display_hu, alpha
        )
        y_mm = float((view.affine @ np.array([0.0, view.j, 0.0, 1.0]))[1])
        ax.set_title(f"coronal, y = {y_mm:.0f} mm", fontsize=10)
        ax = fig.add_subplot(grid[row, 2])
        ax.axis("off")
        lines = view.flags[:MAX_LISTED]
        if len(view.flags) > MAX_LISTED:
            lines.append(f"+ {len(view.flags) - MAX_LISTED} more (results/qc/flags.tsv)")
        ax.text(
            0.02,
            0.98,
            f"{len(view.flags)} flag{'s' if len(view.flags) != 1 else ''}, outlined: the first listed\n\n"
            + "\n".join(lines),
            transform=ax.transAxes,
            va="top",
            ha="left",
            fontsize=9,
        )
    fig.suptitle(
        f"Flagged scans: {n_flagged} of {n_scans}, {n_flags} flags"
        + f" ({len(views)} label map{'s' if len(views) != 1 else ''} shown)",
        y=1 - 0.12 / height,
        va="top",
    )
    save_figure(fig, png_path, dpi=dpi)


def source_name(source: str, model_names: Mapping[str, str]) -> str:
    """A flag's source in words: a model's display name, a pair of models, or the CT."""
    if source == "image":
        return "CT"
    return " vs ".join(model_names.get(part, part) for part in source.split(" vs "))


def flag_lines(flags, labels: LabelTable) -> list[str]:
    """One readable line per flag row: kind, structure and value against the threshold."""
    shown = {"missing": "missing", "fov_cut": "cut by FOV", "metal": "metal"}
    shown |= {"unlabelled_muscle": "unlabelled muscle", "asymmetry": "L/R asymmetry"}
    shown |= {"volume_outlier": "volume outlier", "model_disagreement": "models disagree"}
    out = []
    for r in flags.itertuples():
        name = labels.name_to_id.get(r.structure)
        structure = labels.id_to_display[name] if name is not None else "whole scan"
        if r.flag == "missing":
            value = "absent"
        elif r.flag == "volume_outlier":
            value = f"z = {r.value:.1f}, beyond ±{r.threshold:g}"
        elif r.flag == "metal":
            value = f"{r.value / 1000:.1f} > {r.threshold / 1000:.1f} cm³"
        else:
            sign = "<" if r.flag == "model_disagreement" else ">"
            value = f"{r.value:.2f} {sign} {r.threshold:g}"
        out.append(f"{shown.get(r.flag, r.flag)}: {structure} ({value})")
    return out
