"""Fig 6: ground truth beside each model's prediction on axial slices of validation subjects.

Arrays are indexed ``(x, y)`` per axial slice of an RAS+ grid; slices are drawn in world
millimetres in the radiological convention (patient's right on the viewer's left, anterior up),
as in Fig 3. Labels are coloured from ``labels.tsv`` over the CT (grey, a HU display window);
background is transparent. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.patches import Patch

from ..labels import LabelTable
from .style import apply_style, save_figure


@dataclass
class ExampleRow:
    """One axial slice of one subject: CT (HU), ground truth and each model's labels."""

    subject: str
    k: int
    z_mm: float
    ct: np.ndarray  # (x, y) HU
    truth: np.ndarray  # (x, y) class ids
    predictions: dict[str, np.ndarray]  # model -> (x, y) class ids
    affine: np.ndarray  # of the volume the slice comes from
    dice: dict[str, float] = field(default_factory=dict)  # model -> subject's mean Dice


def mean_dice(confusion: np.ndarray) -> float:
    """Mean Dice over the foreground classes present in either map, from a confusion matrix
    ``C[truth, prediction]`` (the evaluation's per-subject mean: absent classes left out)."""
    c = np.asarray(confusion, dtype=float)
    both = np.diag(c)[1:]
    total = c.sum(axis=0)[1:] + c.sum(axis=1)[1:]
    present = total > 0
    return float(np.mean(2 * both[present] / total[present])) if present.any() else float("nan")


def labelled_extent(label: np.ndarray) -> tuple[int, int]:
    """Lowest and highest axial slice (``k``) holding any foreground label; whole range if none."""
    present = np.flatnonzero(np.asarray(label).reshape(-1, label.shape[2], order="F").any(axis=0))
    if present.size == 0:
        return 0, label.shape[2] - 1
    return int(present[0]), int(present[-1])


def level_slices(label: np.ndarray, levels: Sequence[float]) -> list[int]:
    """Slice indices at ``levels``: fractions of the labelled extent, 0 = its lowest slice."""
    lo, hi = labelled_extent(label)
    return [int(round(lo + float(f) * (hi - lo))) for f in levels]


def slice_extent(
    shape: Sequence[int], affine: np.ndarray, k: int
) -> tuple[float, float, float, float]:
    """(x_min, x_max, y_min, y_max) world mm of the voxel edges of axial slice ``k``."""
    nx, ny = shape[:2]
    corners = (
        np.asarray(affine, float) @ np.array([[-0.5, -0.5, k, 1.0], [nx - 0.5, ny - 0.5, k, 1.0]]).T
    )
    (x0, x1), (y0, y1) = np.sort(corners[0]), np.sort(corners[1])
    return float(x0), float(x1), float(y0), float(y1)


def label_rgba(label: np.ndarray, labels: LabelTable, alpha: float) -> np.ndarray:
    """RGBA image (``(x, y, 4)``, 0..1) of a label slice; background fully transparent."""
    lut = np.zeros((labels.n_classes, 4))
    for cid, (r, g, b) in labels.rgb().items():
        lut[cid] = (r / 255, g / 255, b / 255, 0.0 if cid == 0 else alpha)
    return lut[np.asarray(label, dtype=np.intp)]


def content_box_mm(row: ExampleRow, margin_mm: float = 10.0) -> tuple[float, float, float, float]:
    """World box (x_min, x_max, y_min, y_max) around the body and labels of a slice, plus margin."""
    inside = (row.ct > -500) | (row.truth > 0)
    for pred in row.predictions.values():
        inside |= pred > 0
    if not inside.any():
        return slice_extent(row.ct.shape, row.affine, row.k)
    ii, jj = np.nonzero(inside)
    corners = (
        np.asarray(row.affine, float)
        @ np.array(
            [
                [ii.min() - 0.5, jj.min() - 0.5, row.k, 1.0],
                [ii.max() + 0.5, jj.max() + 0.5, row.k, 1.0],
            ]
        ).T
    )
    (x0, x1), (y0, y1) = np.sort(corners[0]), np.sort(corners[1])
    return x0 - margin_mm, x1 + margin_mm, y0 - margin_mm, y1 + margin_mm


def draw_overlay(ax, ct: np.ndarray, label: np.ndarray, extent, labels, display_hu, alpha) -> None:
    """A 2-D CT slice (HU, shown in ``display_hu``) under its label map in the label colours.

    ``ct`` and ``label`` are (first, second) axis arrays drawn with the first axis horizontal;
    ``extent`` is matplotlib's (left, right, bottom, top) in mm.
    """
    ax.imshow(
        ct.T,
        origin="lower",
        extent=extent,
        cmap="gray",
        vmin=display_hu[0],
        vmax=display_hu[1],
        interpolation="nearest",
    )
    ax.imshow(
        np.transpose(label_rgba(label, labels, alpha), (1, 0, 2)),
        origin="lower",
        extent=extent,
        interpolation="nearest",
    )


def _panel(ax, row: ExampleRow, label: np.ndarray, labels, display_hu, alpha, box):
    extent = slice_extent(row.ct.shape, row.affine, row.k)
    draw_overlay(ax, row.ct, label, extent, labels, display_hu, alpha)
    x0, x1, y0, y1 = box
    ax.set_xlim(x1, x0)  # radiological: patient's right on the viewer's left
    ax.set_ylim(y0, y1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("black")


def plot_examples(
    rows: Sequence[ExampleRow],
    models: Sequence[str],
    labels: LabelTable,
    png_path,
    *,
    model_names: Mapping[str, str] | None = None,
    display_hu: Sequence[float] = (-200.0, 300.0),
    alpha: float = 0.55,
    dpi: int = 200,
    scale_bar_mm: float = 50.0,
) -> None:
    """Grid of axial slices: a row per (subject, slice), columns ground truth then each model.

    The first row of each subject carries the column titles with each model's mean Dice for
    that subject; a legend lists the classes shown.
    """
    apply_style()
    model_names = dict(model_names or {})
    boxes = [content_box_mm(r) for r in rows]
    aspect = float(np.median([(b[3] - b[2]) / (b[1] - b[0]) for b in boxes]))
    n_cols = 1 + len(models)
    panel_w = 2.9
    panel_h = panel_w * float(np.clip(aspect, 0.35, 1.2))
    shown = sorted(
        {int(c) for r in rows for lab in (r.truth, *r.predictions.values()) for c in np.unique(lab)}
        - {0}
    )
    legend_rows = int(np.ceil(len(shown) / 4)) if shown else 0
    fig = plt.figure(
        figsize=(panel_w * n_cols + 0.9, panel_h * len(rows) + 0.6 + 0.19 * legend_rows)
    )
    grid = fig.add_gridspec(len(rows), n_cols, hspace=0.28, wspace=0.03)
    first_of_subject = [i == 0 or rows[i - 1].subject != r.subject for i, r in enumerate(rows)]
    for i, row in enumerate(rows):
        columns = [("Ground truth", row.truth)] + [(m, row.predictions[m]) for m in models]
        for c, (name, label) in enumerate(columns):
            ax = fig.add_subplot(grid[i, c])
            _panel(ax, row, label, labels, display_hu, alpha, boxes[i])
            if first_of_subject[i]:
                if c == 0:
                    title = f"{row.subject}: ground truth"
                else:
                    dice = row.dice.get(name, float("nan"))
                    shown_dice = "n/a" if not np.isfinite(dice) else f"{dice:.3f}"
                    title = f"{model_names.get(name, name)} (mean Dice {shown_dice})"
                ax.set_title(title, fontsize=10)
            if c == 0:
                ax.set_ylabel(f"z = {row.z_mm:.0f} mm", fontsize=9)
                ax.text(
                    0.03, 0.92, "R", color="white", transform=ax.transAxes, va="top", fontsize=8
                )
                ax.text(
                    0.97,
                    0.92,
                    "L",
                    color="white",
                    transform=ax.transAxes,
                    va="top",
                    ha="right",
                    fontsize=8,
                )
                if i == len(rows) - 1:
                    x0, x1, y0, y1 = boxes[i]
                    xb = x0 + 0.05 * (x1 - x0)  # bottom right on screen (x runs right to left)
                    yb = y0 + 0.08 * (y1 - y0)
                    ax.plot([xb, xb + scale_bar_mm], [yb, yb], color="white", lw=2)
                    ax.text(
                        xb + scale_bar_mm / 2,
                        yb + 0.04 * (y1 - y0),
                        f"{scale_bar_mm:.0f} mm",
                        color="white",
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
    if shown:
        handles = [
            Patch(facecolor=labels.colour_lut()[c], edgecolor="none", label=labels.id_to_display[c])
            for c in shown
        ]
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=4,
            frameon=False,
            fontsize=8,
            bbox_to_anchor=(0.5, 0.0),
            handlelength=1.2,
            columnspacing=1.0,
        )
        fig.subplots_adjust(bottom=(0.19 * legend_rows + 0.2) / fig.get_figheight())
    save_figure(fig, png_path, dpi=dpi)
