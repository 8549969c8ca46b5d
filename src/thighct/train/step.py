"""One optimiser step and what it is built from: loss, optimiser, learning-rate schedule, device."""

from __future__ import annotations

import math

import torch
from monai.losses import DiceCELoss, DiceLoss

from ..errors import ThighctError
from .precision import _autocast
from .settings import TrainSettings


def make_loss(name: str) -> torch.nn.Module:
    """Loss on (n, C, x, y, z) logits and (n, 1, x, y, z) class ids.

    Dice is pooled over the batch (``batch=True``): a class absent from one crop would
    otherwise count as a perfect or a failed score on its own.
    """
    if name == "dice":
        return DiceLoss(to_onehot_y=True, softmax=True, batch=True)
    if name == "dice_ce":
        return DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    raise ThighctError(f"unknown loss {name!r}", fix="set train.loss to dice or dice_ce")


def make_optimizer(net: torch.nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(
            net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
        )
    if settings.optimizer == "adam":
        return torch.optim.Adam(
            net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
        )
    raise ThighctError(
        f"unknown optimizer {settings.optimizer!r}", fix="set train.optimizer to adamw or adam"
    )


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based): linear warm-up, then
    constant or cosine decay to zero at ``total_steps``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))
    raise ThighctError(
        f"unknown lr_schedule {schedule!r}", fix="set train.lr_schedule to constant or cosine"
    )


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA when present (or as asked), else CPU."""
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def optimiser_step(net, images, targets, loss_fn, optimizer, scaler, dtype) -> torch.Tensor:
    """One optimiser step as rule train takes it: forward under ``dtype`` autocast (None:
    float32), loss, scaled backward, step and scaler update. Returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    with _autocast(dtype, images.device):
        loss = loss_fn(net(images), targets)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss
