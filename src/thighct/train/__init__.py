"""Training of one segmentation network: random crops, Dice loss, AdamW, sliding-window validation.

The paper's protocol (Kim et al. 2024): Dice loss, AdamW (lr 8e-5, weight decay 1e-5), batch 2,
5000 epochs, four 96³ crops per image per step. Here an *epoch* is one pass over the training
images in a seeded random order; a *step* takes ``batch_size`` images and ``crops_per_image``
crops of each, so one step sees ``batch_size * crops_per_image`` patches.

A run killed mid-way resumes from its last checkpoint and ends, on CPU, with the same weights
bit for bit as an uninterrupted run (:mod:`thighct.train.checkpoint`).

Arrays are in nibabel voxel order (x, y, z); images are the preprocessed intensities, labels
integer class ids 0..n_classes-1.

Submodules: ``settings`` (the ``train`` config section), ``data`` (pairs, crops, batches),
``augment`` (intensity, zoom, mirroring), ``precision`` (autocast dtype, memory layout),
``step`` (loss, optimiser, schedule, one optimiser step), ``validation`` (Dice),
``checkpoint`` (seeds, RNG states, resumable checkpoints) and ``loop`` (:func:`train_model`,
:func:`write_outputs`).
"""

from ..errors import ThighctError
from ..models import build_network
from .augment import augment_flip, augment_intensity, augment_scale
from .checkpoint import (
    CHECKPOINT_VERSION,
    checkpoint_path,
    epoch_seeds,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    seed_everything,
    training_hash,
)
from .data import check_label_range, crop_pipeline, crops_to_batch, epoch_batches, load_pairs
from .loop import LOG_COLUMNS, TrainResult, train_model, write_outputs
from .precision import autocast_dtype, cpu_has_native_bf16
from .settings import NON_TRAINING_KEYS, PRECISIONS, TrainSettings
from .step import lr_factor, make_loss, make_optimizer, optimiser_step, pick_device
from .validation import mean_dice, validate

__all__ = [
    "CHECKPOINT_VERSION",
    "LOG_COLUMNS",
    "NON_TRAINING_KEYS",
    "PRECISIONS",
    "ThighctError",
    "TrainResult",
    "TrainSettings",
    "augment_flip",
    "augment_intensity",
    "augment_scale",
    "autocast_dtype",
    "build_network",
    "check_label_range",
    "checkpoint_path",
    "cpu_has_native_bf16",
    "crop_pipeline",
    "crops_to_batch",
    "epoch_batches",
    "epoch_seeds",
    "load_checkpoint",
    "load_pairs",
    "lr_factor",
    "make_loss",
    "make_optimizer",
    "mean_dice",
    "optimiser_step",
    "pick_device",
    "restore_rng_states",
    "rng_states",
    "seed_everything",
    "train_model",
    "training_hash",
    "validate",
    "write_outputs",
]
