"""Random augmentations of a batch of crops: intensity, zoom and mirroring.

Each draws from torch's global generator, which every epoch seeds and every checkpoint
stores, so a run and its resume repeat exactly. Batches are ``(n, 1, x, y, z)`` tensors.
"""

from __future__ import annotations

import torch

from .settings import TrainSettings


def augment_intensity(images: torch.Tensor, settings: TrainSettings) -> torch.Tensor:
    """Random brightness and contrast per crop: ``image * (1 + a) + b`` with probability
    ``intensity_prob``, ``a`` uniform in +-``intensity_scale`` and ``b`` in +-``intensity_shift``
    (units of the preprocessed 0..1 range). Drawn from torch's generator, which each epoch
    seeds and each checkpoint stores, so runs and resumes repeat exactly.

    Why: muscle that loses volume also turns darker (fat infiltration; the phantoms' sarcopenic
    muscle is 6 HU darker). A network that keys on the exact brightness then misplaces the
    boundaries of exactly the subjects a study compares.
    """
    if settings.intensity_prob <= 0 or (
        settings.intensity_shift <= 0 and settings.intensity_scale <= 0
    ):
        return images
    n = images.shape[0]
    shape = (n,) + (1,) * (images.ndim - 1)
    draws = torch.rand(3, n)
    on = (draws[0] < settings.intensity_prob).float()
    scale = 1.0 + (2 * draws[1] - 1) * settings.intensity_scale * on
    shift = (2 * draws[2] - 1) * settings.intensity_shift * on
    return images * scale.view(shape).to(images.device) + shift.view(shape).to(images.device)


def augment_scale(
    images: torch.Tensor, targets: torch.Tensor, settings: TrainSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random zoom per crop about its centre: by ``1 + u`` with ``u`` uniform in
    +-``scale_range``, with probability ``scale_prob`` (nnU-Net scales 0.7..1.4).

    Images are resampled trilinearly and labels by nearest neighbour; a crop zoomed out is
    padded with 0 (the bottom of the HU window) and background. Drawn from torch's generator
    like :func:`augment_intensity`, so runs and resumes repeat exactly.

    Why: a network that sees every structure only at the sizes of the training subjects can
    tie its boundaries to those sizes, and a volume study compares exactly the subjects whose
    muscles are larger or smaller.
    """
    if settings.scale_prob <= 0 or settings.scale_range <= 0:
        return images, targets
    n = images.shape[0]
    draws = torch.rand(2, n)
    on = (draws[0] < settings.scale_prob).float()
    factor = 1.0 + (2 * draws[1] - 1) * settings.scale_range * on
    theta = torch.zeros(n, 3, 4)
    for axis in range(3):
        theta[:, axis, axis] = 1.0 / factor  # output point p samples the input at p / factor
    grid = torch.nn.functional.affine_grid(
        theta.to(images.device), list(images.shape), align_corners=False
    )
    images = torch.nn.functional.grid_sample(
        images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    targets = torch.nn.functional.grid_sample(
        targets.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    ).long()
    return images, targets


def augment_flip(
    images: torch.Tensor, targets: torch.Tensor, settings: TrainSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random mirroring per crop: along each axis of ``flip_axes`` (0 = x, left-right in RAS)
    with probability ``flip_prob``, image and label together. Drawn from torch's generator like
    :func:`augment_intensity`, so runs and resumes repeat exactly.

    Why: the classes have no side (left and right muscles share an id; volumes are split by
    the body midline afterwards), so a mirrored crop is a valid body, and the network sees each
    structure from both sides (nnU-Net mirrors along every axis by default).
    """
    if settings.flip_prob <= 0 or not settings.flip_axes:
        return images, targets
    n = images.shape[0]
    draws = torch.rand(len(settings.flip_axes), n) < settings.flip_prob
    if not bool(draws.any()):
        return images, targets
    images, targets = images.clone(), targets.clone()
    for i in range(n):
        dims = [2 + int(a) for a, on in zip(settings.flip_axes, draws[:, i], strict=True) if on]
        if dims:
            images[i] = torch.flip(images[i], [d - 1 for d in dims])
            targets[i] = torch.flip(targets[i], [d - 1 for d in dims])
    return images, targets
