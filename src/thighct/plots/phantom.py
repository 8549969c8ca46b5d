"""Example of a synthetic phantom: axial CT slices beside their 30-class labels.

Arrays are indexed ``(x, y, z)`` on RAS+ grids (load with ``canonical=True``). Slices are drawn
in world millimetres in the radiological convention (patient's right on the viewer's left,
anterior up), CT in a soft-tissue window, labels in the colours of ``labels.tsv``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.patches import Patch

from .style import apply_style, label_colormap

GROUP_TITLES = {
    "anterior": "Anterior thigh",
    "medial": "Medial thigh",
    "posterior": "Posterior thigh",
    "gluteal": "Gluteal region",
    "other": "Other",
    "bone": "Bone",
}


def femur_level_slices(
    label: np.ndarray, femur_id: int, levels: Mapping[str, float]
) -> dict[str, int]:
    """Level name -> slice index, each level a fraction of the femur's height in the scan.

    0 is the femur's lowest slice (knee), 1 its highest (top of the femoral head); ``label``
    indexed (x, y, z) with z increasing upwards (RAS).
    """
    present = np.flatnonzero((np.asarray(label) == femur_id).any(axis=(0, 1)))
    if present.size == 0:
        raise ValueError("the label map has no femur; cannot place the example levels")
    lo, hi = int(present[0]), int(present[-1])
    return {name: int(round(lo + frac * (hi - lo))) for name, frac in levels.items()}


def _extent(affine: np.ndarray, shape, k: int) -> tuple[float, float, float, float]:
    nx, ny = shape[:2]
    corners = affine @ np.array([[-0.5, -0.5, k, 1.0], [nx - 0.5, ny - 0.5, k, 1.0]]).T
    (x0, x1), (y0, y1) = np.sort(corners[0]), np.sort(corners[1])
    return float(x0), float(x1), float(y0), float(y1)


def _body_box(ct: np.ndarray, affine: np.ndarray, ks, threshold_hu: float, margin_mm: float):
    """World (x_min, x_max, y_min, y_max) around the body (voxels above threshold) on slices ks."""
    body = np.zeros(ct.shape[:2], bool)
    for k in ks:
        body |= ct[:, :, k] > threshold_hu
    ii, jj = np.nonzero(body)
    if ii.size == 0:
        return _extent(affine, ct.shape, ks[0])
    pts = affine @ np.array([[ii.min(), jj.min(), 0, 1.0], [ii.max(), jj.max(), 0, 1.0]]).T
    (x0, x1), (y0, y1) = np.sort(pts[0]), np.sort(pts[1])
    return x0 - margin_mm, x1 + margin_mm, y0 - margin_mm, y1 + margin_mm


def phantom_example_figure(
    ct: np.ndarray,
    label: np.ndarray,
    affine: np.ndarray,
    labels,
    levels: Mapping[str, float],
    *,
    title: str = "",
    window_hu: tuple[float, float] = (-160.0, 240.0),
    body_threshold_hu: float = -500.0,
    scale_bar_mm: float = 50.0,
):
    """Figure: one row per level (CT | labels over CT), a legend of the classes shown.

    ``ct`` (HU) and ``label`` (class ids) share the RAS grid ``affine``; ``levels`` maps a row
    name (e.g. "hip") to a fraction of the femur's height (``femur_level_slices``).
    """
    apply_style()
    ks = femur_level_slices(label, labels.id_of("femur"), levels)
    x0, x1, y0, y1 = _body_box(ct, affine, list(ks.values()), body_threshold_hu, 8.0)
    aspect = (y1 - y0) / (x1 - x0)
    n = len(ks)
    panel_w = 3.3
    fig, axes = plt.subplots(
        n,
        2,
        figsize=(2 * panel_w + 2.9, panel_w * aspect * n + 0.9),
        squeeze=False,
        layout="constrained",
    )
    cmap = label_colormap(labels)
    n_ids = labels.n_classes
    shown: set[int] = set()
    image = None
    for r, (name, k) in enumerate(ks.items()):
        ext = _extent(affine, ct.shape, k)
        z_mm = float((affine @ np.array([0.0, 0.0, k, 1.0]))[2])
        lab = np.asarray(label[:, :, k])
        shown |= set(np.unique(lab).tolist())
        for c in range(2):
            ax = axes[r, c]
            image = ax.imshow(
                ct[:, :, k].T,
                origin="lower",
                extent=ext,
                cmap="gray",
                vmin=window_hu[0],
                vmax=window_hu[1],
                interpolation="nearest",
            )
            if c == 1:
                ax.imshow(
                    np.ma.masked_equal(lab, 0).T,
                    origin="lower",
                    extent=ext,
                    cmap=cmap,
                    vmin=-0.5,
                    vmax=n_ids - 0.5,
                    interpolation="nearest",
                    alpha=0.85,
                )
            ax.set_xlim(x1, x0)  # radiological: the patient's right on the viewer's left
            ax.set_ylim(y0, y1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("black")
            if r == 0:
                ax.set_title("CT" if c == 0 else "Ground-truth labels")
        pretty = name.replace("_", " ").capitalize()
        axes[r, 0].set_ylabel(f"{pretty}\nz = {z_mm:.0f} mm")
        ax0 = axes[r, 0]
        for x_txt, ha, text in ((0.03, "left", "R"), (0.97, "right", "L")):
            ax0.text(
                x_txt,
                0.92,
                text,
                color="white",
                transform=ax0.transAxes,
                ha=ha,
                va="top",
                fontsize=9,
                fontweight="bold",
            )
        xs = x0 + 0.06 * (x1 - x0)
        yb = y0 + 0.08 * (y1 - y0)
        ax0.plot([xs, xs + scale_bar_mm], [yb, yb], color="white", lw=2)
        ax0.text(
            xs + scale_bar_mm / 2,
            yb + 0.03 * (y1 - y0),
            f"{scale_bar_mm:g} mm",
            color="white",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    cb = fig.colorbar(
        image, ax=axes[:, 0], orientation="horizontal", fraction=0.04, pad=0.01, aspect=25
    )
    cb.set_label("CT (HU), window W 400 / L 40")

    handles = []
    for group, ids in labels.groups(include_bone=True).items():
        ids = [i for i in ids if i in shown]
        if not ids:
            continue
        handles.append(Patch(color="none", label=GROUP_TITLES.get(group, group.capitalize())))
        handles += [
            Patch(
                facecolor=labels.colour_lut()[i],
                edgecolor="0.3",
                lw=0.4,
                label=f"  {labels.id_to_display[i]}",
            )
            for i in ids
        ]
    leg = fig.legend(
        handles=handles,
        loc="outside right upper",
        frameon=False,
        fontsize=8,
        handlelength=1.2,
        handleheight=0.9,
        borderaxespad=0.2,
    )
    for text in leg.get_texts():
        if not text.get_text().startswith("  "):
            text.set_fontweight("bold")
    if title:
        fig.suptitle(title)
    return fig
