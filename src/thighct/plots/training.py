"""Training curves: training loss and validation mean Dice per epoch, one line per model.

Reads the ``train_log.tsv`` tables of rule train (epoch, train_loss, val_dice, lr, seconds).
No torch here: the figure can be redrawn in a light environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .style import apply_style, save_figure

#: Display names of the networks (fallback: the model key as given).
DISPLAY = {"unetr": "UNETR", "unet": "3D U-Net", "dynunet": "DynUNet"}
#: Line colours by model order (colour-blind safe, Okabe-Ito).
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]


def read_train_logs(paths: Mapping[str, str | Path]) -> dict[str, pd.DataFrame]:
    """Model name -> its training log (one row per epoch; ``val_dice`` empty when not validated)."""
    return {name: pd.read_csv(path, sep="\t") for name, path in paths.items()}


def training_curves(
    logs: Mapping[str, pd.DataFrame], loss_name: str | Mapping[str, str] = "Dice"
) -> plt.Figure:
    """Two panels: (A) mean training loss per epoch, (B) validation mean Dice at each
    validation, the best epoch (whose weights are kept) starred. ``loss_name``: one loss for
    every model, or the loss of each model (named in panel A's legend when they differ).
    Returns the figure."""
    apply_style()
    names = loss_name if isinstance(loss_name, Mapping) else dict.fromkeys(logs, loss_name)
    one_loss = len(set(names.values())) == 1
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(7.2, 3.0), constrained_layout=True)
    for k, (name, df) in enumerate(logs.items()):
        colour = COLOURS[k % len(COLOURS)]
        label = DISPLAY.get(name, name)
        loss_label = label if one_loss else f"{label} ({names.get(name, '?')} loss)"
        ax_loss.plot(df["epoch"], df["train_loss"], color=colour, lw=1.5, label=loss_label)
        val = df.dropna(subset=["val_dice"])
        if val.empty:
            continue
        best = val.loc[val["val_dice"].idxmax()]
        ax_dice.plot(
            val["epoch"],
            val["val_dice"],
            color=colour,
            lw=1.5,
            marker="o",
            ms=3,
            label=f"{label}: best {best['val_dice']:.3f} (epoch {int(best['epoch'])})",
        )
        # Later models get smaller stars on top, so coinciding best epochs stay visible.
        ax_dice.plot(
            best["epoch"],
            best["val_dice"],
            marker="*",
            ms=13 - 4 * k,
            color=colour,
            mec="black",
            mew=0.6,
            ls="none",
            zorder=3 + k,
        )
    last_epoch = max((int(df["epoch"].max()) for df in logs.values() if len(df)), default=1)
    for ax in (ax_loss, ax_dice):
        ax.set_xlabel("Epoch")
        ax.set_xlim(0, last_epoch * 1.03 + 0.5)
        ax.grid(True, alpha=0.3, lw=0.5)
    common = f"{next(iter(names.values()))} " if one_loss and names else ""
    ax_loss.set_ylabel(f"Training {common}loss (epoch mean)")
    ax_loss.set_title("A  Training loss", loc="left")
    ax_dice.set_ylabel("Validation mean Dice")
    ax_dice.set_title("B  Validation Dice (\u2605 weights kept)", loc="left")
    ax_dice.set_ylim(0, 1)
    ax_dice.set_yticks(np.linspace(0, 1, 6))
    ax_loss.legend(loc="upper right", frameon=False)
    ax_dice.legend(loc="best", frameon=False)
    return fig


def save(fig: plt.Figure, png_path: str | Path, dpi: int = 200) -> None:
    """Write the figure as PNG and PDF beside it."""
    save_figure(fig, png_path, also=("pdf",), dpi=dpi)
