"""Validation: mean foreground Dice of sliding-window predictions on the validation images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from .precision import _autocast, autocast_dtype
from .settings import TrainSettings


def mean_dice(pred: torch.Tensor, truth: torch.Tensor, n_classes: int) -> float:
    """Mean Dice over foreground classes present in ``truth`` (x, y, z class-id tensors).

    A class absent from the ground truth is left out (its Dice is undefined); a class present in
    the truth and missing from the prediction counts 0.
    """
    pred = pred.reshape(-1).long()
    truth = truth.reshape(-1).long()
    pair = torch.bincount(truth * n_classes + pred, minlength=n_classes * n_classes)
    confusion = pair.reshape(n_classes, n_classes).double()  # rows truth, columns prediction
    tp = confusion.diag()
    truth_n = confusion.sum(1)
    pred_n = confusion.sum(0)
    present = truth_n[1:] > 0
    if not bool(present.any()):
        return float("nan")
    dice = (2 * tp[1:] / (truth_n[1:] + pred_n[1:]).clamp(min=1))[present]
    return float(dice.mean())


@torch.no_grad()
def validate(
    net: torch.nn.Module,
    items: Sequence[dict],
    roi: Sequence[int],
    n_classes: int,
    settings: TrainSettings,
    device: torch.device,
) -> float:
    """Mean over validation images of the mean foreground Dice of sliding-window predictions."""
    net.eval()
    scores = []
    for item in items:
        image = torch.as_tensor(item["image"])[None].float().to(device)
        with _autocast(autocast_dtype(settings, device), device):
            logits = sliding_window_inference(
                image,
                roi_size=list(roi),
                sw_batch_size=settings.sw_batch_size,
                predictor=net,
                overlap=settings.val_overlap,
                mode="constant",
            )
        pred = logits.argmax(1)[0].cpu()
        scores.append(mean_dice(pred, torch.as_tensor(item["label"][0]), n_classes))
    net.train()
    return float(np.nanmean(scores)) if scores else float("nan")
