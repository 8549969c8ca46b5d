"""Fig 7 and Fig 8 (sex-stratified correlation heatmaps of sarcopenia and muscle volumes) and
the forest plot of the adjusted logistic models.

Each heatmap panel is the correlation matrix of sarcopenia (0/1) and the height-adjusted volumes
(mm³/m²) of one sex. The sarcopenia row of that matrix (the point-biserial r) is drawn as its own
annotated column on the left, wide enough to print r and the FDR mark; the volumes' correlations
with each other fill the lower triangle beside it. No torch or MONAI here.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ..stats import SARCOPENIA, SEXES, correlation_matrix, structure_order
from .style import apply_style, save_figure

PANEL_LETTERS = "ABCDEFGH"
# Layout, in inches at print size (the figure is meant to be printed at 100 %).
FEW = 8  # up to this many structures: larger cells, every matrix value printed
CELL_IN = {True: 0.145, False: 0.42}  # heatmap cell edge, by "many structures"
SARCOPENIA_COLUMN_IN = {True: 0.5, False: 0.7}
CHAR_IN = 0.068  # mean width of a 9 pt DejaVu Sans character
TITLE_IN = 0.45
COLORBAR_IN = 0.8
NOTE_IN = 0.45
NA_COLOUR = "#d9d9d9"
OR_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)
COVARIATE_NAMES = {"bmi": "BMI", "age": "age"}


def _covariate_names(covariates: str) -> str:
    return ", ".join(COVARIATE_NAMES.get(c.strip(), c.strip()) for c in str(covariates).split(","))


def _fmt_r(r: float, mark: bool) -> str:
    # Unicode minus: a hyphen reads as a dash at print size.
    return f"{r:.2f}".replace("-", "\u2212") + ("*" if mark else "")


def _text_colour(value: float, cmap, norm) -> str:
    """Black or white, whichever reads better on the cell colour."""
    r, g, b, _ = cmap(norm(value))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _group_boundaries(structures: Sequence[str], groups: Mapping[str, str] | None) -> list[int]:
    """Indices where the muscle group changes (for separator lines)."""
    if not groups:
        return []
    g = [groups.get(s) for s in structures]
    return [i for i in range(1, len(g)) if g[i] != g[i - 1]]


def _panel_caption(corr: pd.DataFrame, sex: str) -> str:
    part = corr[corr["sex"] == sex]
    n = int(part["n"].max()) if len(part) else 0
    n_s = int(part["n_sarcopenic"].max()) if len(part) else 0
    n_n = int(part["n_non_sarcopenic"].max()) if len(part) else 0
    return f"n = {n} ({n_s} sarcopenic, {n_n} not)"


def _draw_panel(
    ax_s,
    ax_m,
    letter: str,
    sex: str,
    matrix: pd.DataFrame,
    corr: pd.DataFrame,
    structures: list[str],
    displays: Mapping[str, str],
    *,
    cmap,
    norm,
    annotate_matrix: bool,
    groups: Mapping[str, str] | None,
    alpha: float,
    title_x: float,
    column_labels: bool = True,
):
    """One sex: the annotated sarcopenia column (``ax_s``) and the lower-triangle volume matrix
    (``ax_m``). ``title_x``: where the panel title starts, in ``ax_s`` axes fraction."""
    n = len(structures)
    part = corr[corr["sex"] == sex].set_index("structure").reindex(structures)
    r = part["r"].to_numpy(float)
    sig = part["p_fdr"].to_numpy(float) < alpha
    names = [displays.get(s, s) for s in structures]

    # Sarcopenia column: one cell per structure, r printed in it.
    ax_s.set_facecolor(NA_COLOUR)
    sns.heatmap(
        r[:, None],
        ax=ax_s,
        cmap=cmap,
        vmin=norm.vmin,
        vmax=norm.vmax,
        cbar=False,
        linewidths=0.4,
        linecolor="white",
        xticklabels=["Sarcopenia"],
        yticklabels=names,
        square=False,
    )
    for i, value in enumerate(r):
        if np.isfinite(value):
            ax_s.text(
                0.5,
                i + 0.5,
                _fmt_r(value, bool(sig[i])),
                ha="center",
                va="center",
                fontsize=8.5 if n > 10 else 10,
                color=_text_colour(value, cmap, norm),
                weight="bold" if sig[i] else "normal",
            )
        elif np.isfinite(r).any():
            ax_s.text(0.5, i + 0.5, "n/a", ha="center", va="center", fontsize=8, color="#555555")
    ax_s.tick_params(axis="y", length=0, labelrotation=0)
    ax_s.tick_params(
        axis="x",
        length=0,
        labelrotation=0,
        top=True,
        labeltop=True,
        bottom=False,
        labelbottom=False,
    )
    ax_s.set_ylabel("")

    # Volume-volume correlations, lower triangle with the diagonal.
    vol = matrix.reindex(index=structures, columns=structures).to_numpy(float)
    mask = np.triu(np.ones_like(vol, dtype=bool), k=1)
    ax_m.set_facecolor("white")
    annot = (
        np.vectorize(lambda v: _fmt_r(v, False) if np.isfinite(v) else "")(vol)
        if annotate_matrix
        else False
    )
    sns.heatmap(
        vol,
        ax=ax_m,
        mask=mask,
        cmap=cmap,
        vmin=norm.vmin,
        vmax=norm.vmax,
        cbar=False,
        linewidths=0.4,
        linecolor="white",
        xticklabels=names if column_labels else False,
        yticklabels=False,
        square=False,
        annot=annot,
        fmt="",
        annot_kws={"fontsize": 9},
    )
    if annotate_matrix:
        for text, value in zip(ax_m.texts, vol[~mask], strict=False):
            text.set_color(_text_colour(value, cmap, norm))
    ax_m.tick_params(axis="x", length=0, labelrotation=90 if n > FEW else 35)
    if n <= FEW:
        for label in ax_m.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    ax_m.tick_params(axis="y", length=0)
    for b in _group_boundaries(structures, groups):
        ax_s.axhline(b, color="black", lw=1.0)
        ax_m.plot([0, b], [b, b], color="black", lw=1.0)
        ax_m.plot([b, b], [b, n], color="black", lw=1.0)
    for ax in (ax_s, ax_m):
        for spine in ax.spines.values():
            spine.set_visible(False)

    reasons = sorted(set(part["reason"].dropna().astype(str)) - {"", "nan"})
    ax_s.set_title(f"{letter}   {SEXES[sex]}", loc="left", x=title_x, fontsize=13, weight="bold")
    ax_m.set_title(_panel_caption(corr, sex), loc="right", fontsize=9.5)
    if reasons and not np.isfinite(r).any():
        # Why the whole column is empty, written along it.
        why = textwrap.fill("not computed: " + "; ".join(reasons), 28 if n <= FEW else 48)
        ax_s.text(
            0.5,
            0.5,
            why,
            transform=ax_s.transAxes,
            ha="center",
            va="center",
            rotation=90,
            fontsize=8.5,
            color="#8a1c1c",
            linespacing=1.2,
            zorder=5,
            bbox={"facecolor": NA_COLOUR, "edgecolor": "none", "pad": 1.0},
        )
    return ax_s, ax_m


def plot_correlation_heatmaps(
    adjusted: pd.DataFrame,
    correlations: pd.DataFrame,
    family: str,
    png_path,
    *,
    groups: Mapping[str, str] | None = None,
    cmap: str = "RdBu_r",
    alpha: float = 0.05,
    dpi: int = 200,
    figsize: tuple[float, float] | None = None,
    annotate_matrix: bool | None = None,
    layout: str | None = None,
    title: str | None = None,
    source: str | None = None,
    also: tuple[str, ...] = ("pdf",),
) -> Figure:
    """Fig 7 (family ``muscles``) or Fig 8 (``groups``): panel A female, panel B male.

    ``adjusted``: the adjusted-volume table (:func:`thighct.stats.adjusted_volumes`);
    ``correlations``: the correlation table of this family (:func:`thighct.stats.correlate`).
    Colour: Pearson r on a diverging map centred on 0 with limits ±1. The sarcopenia column
    prints r, with ``*`` where p_fdr < ``alpha``. ``groups`` (structure -> group) draws lines
    between muscle groups. ``layout``: ``stacked`` (A above B; the default for many structures,
    so Fig 7 prints at one page width) or ``side`` (A beside B; the default for few). Sizes are
    set so that at 100 % the fonts are 8-10 pt. ``source`` (e.g. "UNETR predictions") opens
    the caption, so a reader knows whose volumes are shown. Returns the (closed) figure.
    """
    apply_style()
    structures = structure_order(adjusted, family) or list(
        correlations.loc[correlations["family"] == family, "structure"].drop_duplicates()
    )
    displays = dict(zip(correlations["structure"], correlations["display"], strict=False))
    n = len(structures)
    if annotate_matrix is None:
        annotate_matrix = n <= FEW
    stacked = n > FEW if layout is None else layout == "stacked"
    many = n > FEW
    longest = max((len(displays.get(s, s)) for s in structures), default=8)
    cell = CELL_IN[many]
    sarc_w = SARCOPENIA_COLUMN_IN[many]
    label_w = CHAR_IN * longest + 0.2
    # Column names run at 90° (many) or 35° (few) below the matrix.
    xlabel_h = CHAR_IN * longest * (1.0 if many else 0.6) + 0.2
    panel_w, panel_h = label_w + sarc_w + n * cell, n * cell + TITLE_IN
    if figsize is None:
        if stacked:
            figsize = (panel_w + COLORBAR_IN, 2 * panel_h + xlabel_h + NOTE_IN)
        else:
            figsize = (2 * panel_w + COLORBAR_IN, panel_h + xlabel_h + NOTE_IN)
    cm = plt.get_cmap(cmap)
    norm = Normalize(vmin=-1.0, vmax=1.0)
    fig = plt.figure(figsize=figsize, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.04, h_pad=0.04, wspace=0.0, hspace=0.02)
    outer = fig.subfigures(1, 2, width_ratios=[figsize[0] - COLORBAR_IN, COLORBAR_IN], wspace=0.0)
    # One grid for both panels, so their cells are the same size.
    if stacked:
        grid = outer[0].subplots(2, 2, gridspec_kw={"width_ratios": [sarc_w, n * cell]})
        pairs = [tuple(grid[0]), tuple(grid[1])]
    else:
        grid = outer[0].subplots(1, 4, gridspec_kw={"width_ratios": [sarc_w, n * cell] * 2})
        pairs = [(grid[0], grid[1]), (grid[2], grid[3])]
    for k, sex in enumerate(SEXES):
        matrix = correlation_matrix(adjusted, family, sex) if len(adjusted) else pd.DataFrame()
        matrix = matrix.drop(index=SARCOPENIA, columns=SARCOPENIA, errors="ignore")
        _draw_panel(
            *pairs[k],
            PANEL_LETTERS[k],
            sex,
            matrix,
            correlations,
            structures,
            displays,
            cmap=cm,
            norm=norm,
            annotate_matrix=annotate_matrix,
            groups=groups,
            alpha=alpha,
            title_x=-label_w / sarc_w,
            # Stacked panels share the column order: name the columns once, at the bottom.
            column_labels=not stacked or k == len(SEXES) - 1,
        )
    cax = outer[1].add_axes([0.15, 0.3, 0.22, 0.45] if stacked else [0.15, 0.2, 0.22, 0.65])
    cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cm), cax=cax)
    cb.set_ticks([-1, -0.5, 0, 0.5, 1])
    cb.set_ticklabels(["\u22121", "\u22120.5", "0", "0.5", "1"])
    cb.set_label("Correlation r", fontsize=10)
    cb.outline.set_visible(False)
    volumes = f"Volumes from {source}, adjusted" if source else "Volumes adjusted"
    note = (
        f"{volumes} by height\u00b2 (mm\u00b3/m\u00b2). Sarcopenia column: point-biserial r "
        f"(sarcopenic = 1; r < 0: smaller volume in sarcopenia); * p < {alpha:g} after "
        f"Benjamini\u2013Hochberg FDR within sex."
    )
    fig.supxlabel(
        textwrap.fill(note, int(figsize[0] / (CHAR_IN * 0.95))), fontsize=9, color="#333333"
    )
    if title:
        fig.suptitle(title, fontsize=12)
    save_figure(fig, png_path, also=also, dpi=dpi)
    return fig


def plot_adjusted_models(
    models: pd.DataFrame,
    png_path,
    *,
    dpi: int = 200,
    also: tuple[str, ...] = ("pdf",),
    confidence: float = 0.95,
) -> Figure:
    """Forest plot: odds ratio of sarcopenia per SD of adjusted volume (log axis), with CI, one
    panel per sex; rows whose model could not be fitted say why."""
    apply_style()
    structures = list(models["structure"].drop_duplicates())
    displays = dict(zip(models["structure"], models["display"], strict=False))
    n = len(structures)
    fig, axes = plt.subplots(
        1, len(SEXES), figsize=(11, 0.55 * n + 1.9), sharey=True, layout="constrained"
    )
    finite = models[["ci_low", "ci_high"]].to_numpy(float)
    finite = finite[np.isfinite(finite)]
    lo = min(0.1, finite.min() / 1.5) if finite.size else 0.1
    hi = max(10.0, finite.max() * 1.5) if finite.size else 10.0
    for k, (ax, sex) in enumerate(zip(axes, SEXES, strict=True)):
        part = models[models["sex"] == sex].set_index("structure").reindex(structures)
        y = np.arange(n)[::-1]
        ax.axvline(1.0, color="#777777", lw=1, ls="--", zorder=0)
        for yi, (_, row) in zip(y, part.iterrows(), strict=True):
            if np.isfinite(row["odds_ratio"]):
                ax.plot([row["ci_low"], row["ci_high"]], [yi, yi], color="#2b6ca3", lw=2)
                ax.plot(row["odds_ratio"], yi, "s", color="#2b6ca3", ms=7)
                label = f"{row['odds_ratio']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
                ax.annotate(
                    label,
                    (1.0, yi),
                    xycoords=("axes fraction", "data"),
                    xytext=(6, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=9,
                )
            else:
                reason = str(row["reason"]) if isinstance(row["reason"], str) else "not estimable"
                ax.text(
                    np.sqrt(lo * hi),
                    yi,
                    "not estimable: " + reason.split(":")[0],
                    ha="center",
                    va="center",
                    fontsize=8.5,
                    color="#8a1c1c",
                    style="italic",
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5},
                )
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_yticks(y, [displays.get(s, s) for s in structures])
        ax.set_ylim(-0.7, n - 0.3)
        pct = f"{confidence * 100:g}%"
        ax.set_xlabel(f"Odds ratio of sarcopenia per SD of adjusted volume ({pct} CI, log scale)")
        sub = models[models["sex"] == sex]
        cov = sub["covariates"].iloc[0] if len(sub) else "none"
        n_txt = (
            (
                f"n = {int(sub['n'].max())} ({int(sub['n_sarcopenic'].max())} sarcopenic, "
                f"{int(sub['n_non_sarcopenic'].max())} not)"
            )
            if len(sub)
            else "n = 0"
        )
        ax.set_title(f"{PANEL_LETTERS[k]}   {SEXES[sex]}", loc="left", weight="bold", fontsize=12)
        ax.set_title(f"{n_txt}\nadjusted for {_covariate_names(cov)}", loc="right", fontsize=9)
        ax.xaxis.set_major_locator(FixedLocator([t for t in OR_TICKS if lo <= t <= hi]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(axis="x", which="major", color="#e5e5e5", lw=0.8)
        ax.tick_params(axis="y", length=0)
    save_figure(fig, png_path, also=also, dpi=dpi)
    return fig
