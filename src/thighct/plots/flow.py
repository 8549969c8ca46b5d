"""Fig 1: a CONSORT-style cohort flow diagram drawn from the flow table."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import FancyBboxPatch

from .style import apply_style, save_figure

BOX_W = 0.40  # main-column box width (axes fraction)
SIDE_W = 0.44


def _box(ax, x, y, w, h, text, colour, fill="#ffffff", weight="normal", size=9.5, align="center"):
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.006,rounding_size=0.012",
            linewidth=1.3,
            edgecolor=colour,
            facecolor=fill,
        )
    )
    tx = x if align == "center" else x - w / 2 + 0.02
    ax.text(tx, y, text, ha=align, va="center", fontsize=size, weight=weight, linespacing=1.35)


def _arrow(ax, x0, y0, x1, y1):
    ax.annotate(
        "",
        xy=(x1, y1),
        xytext=(x0, y0),
        arrowprops=dict(arrowstyle="-|>", color="#333333", lw=1.2, shrinkA=0, shrinkB=0),
    )


def _side_text(title: str, rows: pd.DataFrame) -> str:
    n = int(rows["n_excluded"].sum())
    lines = [f"{title} (n = {n})"]
    lines += [f"• {r.description} (n = {int(r.n_excluded)})" for r in rows.itertuples()]
    return "\n".join(lines)


def plot_flow(
    flow: pd.DataFrame,
    included: pd.DataFrame,
    png_path,
    dpi: int = 200,
    colour: str = "#2b6ca3",
    also: tuple[str, ...] = ("svg",),
):
    """Draw the flow: screened -> inclusion -> exclusion -> eligible -> annotated (train/val).

    ``flow`` has step, kind, criterion, description, n_before, n_excluded, n_after (kind in
    inclusion, exclusion, annotation); ``included`` has split (train/val/unlabelled) and smi.
    """
    apply_style()
    inc = flow[flow["kind"] == "inclusion"]
    exc = flow[flow["kind"] == "exclusion"]
    ann = flow[flow["kind"] == "annotation"]
    n0 = int(flow["n_before"].iloc[0])
    n_inc = int(inc["n_after"].iloc[-1]) if len(inc) else n0
    n_elig = int(exc["n_after"].iloc[-1]) if len(exc) else n_inc
    n_ann = int(ann["n_after"].iloc[-1]) if len(ann) else n_elig
    counts = included["split"].value_counts()
    n_train, n_val, n_unl = (int(counts.get(k, 0)) for k in ("train", "val", "unlabelled"))
    n_smi = int(included["smi"].notna().sum()) if "smi" in included else 0

    n_side_lines = max(len(inc), 1) + max(len(exc), 1) + 2
    fig_h = 6.0 + 0.22 * n_side_lines
    fig, ax = plt.subplots(figsize=(9.0, fig_h))
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    xm, xs = 0.26, 0.735
    line_h = 0.30 / fig_h  # height of one text line in axes units

    y = 0.95
    _box(ax, xm, y, BOX_W, 0.065, f"Patients screened\n(n = {n0})", colour, weight="bold")
    y_inc_side = y - 0.16
    h_inc = line_h * (len(inc) + 1) + 0.03
    if len(inc):
        _box(
            ax,
            xs,
            y_inc_side,
            SIDE_W,
            h_inc,
            _side_text("Not meeting inclusion criteria", inc),
            colour,
            fill="#f3f6fa",
            size=8.5,
            align="left",
        )
        ax.plot([xm, xs - SIDE_W / 2], [y_inc_side, y_inc_side], color="#333333", lw=1.2)
    y_inc = y_inc_side - max(h_inc / 2, 0.05) - 0.08
    _arrow(ax, xm, y - 0.0325, xm, y_inc + 0.0325)
    _box(ax, xm, y_inc, BOX_W, 0.065, f"Met inclusion criteria\n(n = {n_inc})", colour)

    h_exc = line_h * (len(exc) + 1) + 0.03
    y_exc_side = y_inc - 0.06 - h_exc / 2
    if len(exc):
        _box(
            ax,
            xs,
            y_exc_side,
            SIDE_W,
            h_exc,
            _side_text("Excluded", exc),
            colour,
            fill="#f3f6fa",
            size=8.5,
            align="left",
        )
        ax.plot([xm, xs - SIDE_W / 2], [y_exc_side, y_exc_side], color="#333333", lw=1.2)
    y_elig = y_exc_side - h_exc / 2 - 0.07
    _arrow(ax, xm, y_inc - 0.0325, xm, y_elig + 0.0325)
    _box(
        ax,
        xm,
        y_elig,
        BOX_W,
        0.065,
        f"Eligible for the study\n(n = {n_elig}; SMI available n = {n_smi})",
        colour,
        weight="bold",
    )

    y_ann = y_elig - 0.14
    xa, xu = 0.20, 0.70
    ax.plot([xm, xm], [y_elig - 0.0325, y_elig - 0.07], color="#333333", lw=1.2)
    ax.plot([xa, xu], [y_elig - 0.07, y_elig - 0.07], color="#333333", lw=1.2)
    _arrow(ax, xa, y_elig - 0.07, xa, y_ann + 0.0325)
    _arrow(ax, xu, y_elig - 0.07, xu, y_ann + 0.0325)
    _box(ax, xa, y_ann, 0.34, 0.065, f"Annotated (manual labels)\n(n = {n_ann})", colour)
    _box(
        ax,
        xu,
        y_ann,
        0.40,
        0.065,
        f"Unlabelled: segmented by the models\n(n = {n_unl})",
        colour,
        fill="#f3f6fa",
    )

    y_split = y_ann - 0.13
    xt, xv = 0.10, 0.32
    ax.plot([xa, xa], [y_ann - 0.0325, y_ann - 0.065], color="#333333", lw=1.2)
    ax.plot([xt, xv], [y_ann - 0.065, y_ann - 0.065], color="#333333", lw=1.2)
    _arrow(ax, xt, y_ann - 0.065, xt, y_split + 0.0325)
    _arrow(ax, xv, y_ann - 0.065, xv, y_split + 0.0325)
    _box(ax, xt, y_split, 0.19, 0.065, f"Training\n(n = {n_train})", colour)
    _box(ax, xv, y_split, 0.19, 0.065, f"Validation\n(n = {n_val})", colour)
    ax.set_ylim(min(y_split - 0.06, 0), 1)
    return save_figure(fig, png_path, also=also, dpi=dpi)
