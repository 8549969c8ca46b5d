"""Fig 5 as a figure: the proposed model against the baseline, per muscle and metric.

One panel per metric (columns), one row per muscle (grouped as in the label table); each
model is a marker at its mean over subjects with a bar of ± 1 sd (VC is one value per muscle,
so it has no bar). The paper shows these numbers as a table (results/tables/fig5_metrics.tsv).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from .style import apply_style

# Distinguishable in greyscale and for colour-blind readers (Okabe-Ito), with distinct markers.
MODEL_STYLES = [("#0072B2", "o"), ("#D55E00", "s"), ("#009E73", "^"), ("#CC79A7", "D")]
# A panel whose positive values span more than this many decades is drawn on a log axis.
LOG_DECADES = 1.5


def fig5_figure(
    summaries: Mapping[str, pd.DataFrame],
    class_ids: Sequence[int],
    class_labels: Mapping[int, str],
    class_groups: Mapping[int, str],
    metrics: Sequence[str],
    metric_labels: Mapping[str, str],
    model_names: Mapping[str, str],
):
    """Dot-and-whisker panels (metric) × rows (class) for each model; returns the figure.

    ``summaries``: model -> summary table (class_id, <metric>_mean, <metric>_sd, vc);
    ``metrics``: summary columns without ``_mean`` (``vc`` as is).
    """
    apply_style()
    n_rows = len(class_ids)
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(1.5 * len(metrics) + 1.8, 0.24 * n_rows + 1.3), sharey=True
    )
    axes = np.atleast_1d(axes)
    y = np.arange(n_rows)[::-1]  # first class at the top
    n_models = len(summaries)
    dodge = (np.arange(n_models) - (n_models - 1) / 2) * 0.28

    for ax, metric in zip(axes, metrics, strict=True):
        values_all = []
        for k, (model, summary) in enumerate(summaries.items()):
            colour, marker = MODEL_STYLES[k % len(MODEL_STYLES)]
            by_id = summary.set_index("class_id")
            mean_col = metric if metric in by_id.columns else f"{metric}_mean"
            sd_col = f"{metric}_sd"
            mean = np.array([by_id[mean_col].get(int(c), np.nan) for c in class_ids], float)
            sd = np.array(
                [
                    by_id[sd_col].get(int(c), np.nan) if sd_col in by_id else np.nan
                    for c in class_ids
                ],
                float,
            )
            values_all.append(mean)
            ax.errorbar(
                mean,
                y + dodge[k],
                xerr=np.where(np.isfinite(sd), sd, 0),
                fmt=marker,
                ms=3.5,
                color=colour,
                ecolor=colour,
                elinewidth=0.8,
                capsize=0,
                lw=0,
                label=model_names.get(model, model),
            )
        values = np.concatenate(values_all) if values_all else np.array([])
        if not np.isfinite(values).any():
            ax.text(
                0.5,
                0.5,
                "not estimable\n(too few subjects)",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=8,
                color="0.4",
            )
            ax.set_xticks([])
        _maybe_log(ax, values)
        ax.set_title(metric_labels.get(metric, metric))
        ax.grid(axis="x", lw=0.4, alpha=0.5)
        ax.tick_params(axis="y", length=0)
        if metric == "ravd":
            ax.axvline(0, color="0.3", lw=0.6)
    _shade_groups(axes, y, class_ids, class_groups)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([class_labels[int(c)] for c in class_ids])
    axes[0].set_ylim(-0.7, n_rows - 0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=max(1, n_models),
        frameon=False,
        bbox_to_anchor=(0.55, 1.0),
    )
    fig.supxlabel("mean ± 1 SD over the evaluated subjects (VC: one value per muscle)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return fig


def _maybe_log(ax, values: np.ndarray) -> None:
    # Baseline ASSD and HD can be 50× the proposed model's: a linear axis would squash one.
    pos = values[np.isfinite(values) & (values > 0)]
    if len(pos) and np.nanmin(values) > 0 and np.log10(pos.max() / pos.min()) > LOG_DECADES:
        ax.set_xscale("log")
        # Plain numbers (0.5, 1, 10) read faster than powers of ten at print size.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _shade_groups(axes, y, class_ids, class_groups) -> None:
    """Alternate light bands behind the muscle groups, named at the right edge."""
    groups = [class_groups[int(c)] for c in class_ids]
    start = 0
    band = 0
    for i in range(1, len(groups) + 1):
        if i == len(groups) or groups[i] != groups[start]:
            top, bottom = y[start] + 0.5, y[i - 1] - 0.5
            for ax in axes:
                if band % 2 == 0:
                    ax.axhspan(bottom, top, color="0.93", zorder=0, lw=0)
            axes[-1].annotate(
                groups[start],
                xy=(1.02, (top + bottom) / 2),
                xycoords=("axes fraction", "data"),
                rotation=-90,
                va="center",
                ha="left",
                fontsize=8,
                color="0.3",
            )
            start = i
            band += 1
