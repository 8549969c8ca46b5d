"""Training data: preprocessed image/label pairs, random crops and the batches of an epoch.

Arrays are channel-first ``(1, x, y, z)`` in nibabel voxel order; images are float32
intensities, labels uint8 class ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import (
    ClassesToIndicesd,
    FgBgToIndicesd,
    RandCropByLabelClassesd,
    RandCropByPosNegLabeld,
    SpatialPadd,
)

from .. import io
from ..errors import ThighctError
from .settings import TrainSettings


def load_pairs(
    subjects: Sequence[str], images: Sequence[str | Path], labels: Sequence[str | Path]
) -> list[dict]:
    """Read preprocessed image/label pairs as channel-first arrays ``(1, x, y, z)``.

    Images become float32, labels uint8 class ids; mismatched shapes are an error.
    """
    items = []
    for subject, image_path, label_path in zip(subjects, images, labels, strict=True):
        image = io.load_nifti(image_path, subject=subject).array
        label = io.load_nifti(label_path, subject=subject).array
        if image.shape != label.shape:
            raise ThighctError(
                f"image {image.shape} and label {label.shape} differ in shape",
                subject=subject,
                path=label_path,
                fix="rerun rule preprocess for this subject",
            )
        items.append(
            {
                "subject": subject,
                "image": np.asarray(image, dtype=np.float32)[None],
                "label": np.rint(label).astype(np.uint8)[None],
            }
        )
    return items


def check_label_range(items: Sequence[dict], n_classes: int) -> None:
    """Every label value must be a class id of the label table."""
    for item in items:
        top = int(item["label"].max())
        if top >= n_classes:
            raise ThighctError(
                f"label map holds class {top} but the label table has {n_classes} classes",
                subject=item.get("subject"),
                fix="use the label table the labels were drawn with (config 'labels')",
            )


def crop_pipeline(
    roi: Sequence[int], settings: TrainSettings, n_classes: int
) -> tuple[list, object]:
    """([cached transforms], random crop transform) for training.

    The cached part pads images smaller than the ROI and precomputes the voxel indices that
    crop centres are drawn from; the random part returns ``crops_per_image`` crops per image.
    """
    keys = ["image", "label"]
    pad = SpatialPadd(keys=keys, spatial_size=list(roi), mode="constant")
    if settings.crop_method == "pos_neg":
        indices = FgBgToIndicesd(keys="label", fg_postfix="_fg", bg_postfix="_bg")
        crop = RandCropByPosNegLabeld(
            keys=keys,
            label_key="label",
            spatial_size=list(roi),
            pos=settings.crop_pos,
            neg=settings.crop_neg,
            num_samples=settings.crops_per_image,
            fg_indices_key="label_fg",
            bg_indices_key="label_bg",
        )
    elif settings.crop_method == "classes":
        indices = ClassesToIndicesd(keys="label", num_classes=n_classes, indices_postfix="_cls")
        crop = RandCropByLabelClassesd(
            keys=keys,
            label_key="label",
            spatial_size=list(roi),
            num_classes=n_classes,
            num_samples=settings.crops_per_image,
            indices_key="label_cls",
        )
    else:
        raise ThighctError(
            f"unknown crop_method {settings.crop_method!r}",
            fix="set train.crop_method to pos_neg or classes",
        )
    return [pad, indices], crop


def epoch_batches(n_images: int, batch_size: int, order_seed: int) -> list[list[int]]:
    """Image indices of each step of one epoch, in a seeded random order (last step may be short)."""
    order = np.random.default_rng(order_seed).permutation(n_images)
    return [order[i : i + batch_size].tolist() for i in range(0, n_images, batch_size)]


def crops_to_batch(
    crops: Sequence[dict], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack crops into (n, 1, x, y, z) float images and (n, 1, x, y, z) long labels."""
    images = torch.stack([torch.as_tensor(np.asarray(c["image"])) for c in crops]).float()
    labels = torch.stack([torch.as_tensor(np.asarray(c["label"])) for c in crops]).long()
    return images.to(device), labels.to(device)
