"""The ``train`` section of the config as a checked, frozen settings object.

:class:`TrainSettings` refuses unknown keys, an epoch count that is not a positive integer and
an unknown precision, and separates the settings that shape the trained weights (what a
checkpoint's resume hash and ``model.pt``'s metadata cover) from run settings (threads,
resources, checkpoint cadence; :mod:`thighct.run_settings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ThighctError
from ..run_settings import RUN_KEYS

#: ``train`` keys that do not change the trained weights (a change to them still resumes).
NON_TRAINING_KEYS = tuple(sorted(RUN_KEYS["train"]))


#: ``train.precision`` values: ``auto`` runs bfloat16 autocast on a CPU with native bfloat16
#: arithmetic and float32 on any other CPU; on CUDA ``amp`` decides (float16 autocast).
PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class TrainSettings:
    """The ``train`` section of the config (see workflow/schemas/config.schema.yaml)."""

    epochs: int
    batch_size: int = 2
    crops_per_image: int = 4
    crop_method: str = "pos_neg"
    crop_pos: float = 1.0
    crop_neg: float = 1.0
    loss: str = "dice"
    optimizer: str = "adamw"
    lr: float = 8e-5
    weight_decay: float = 1e-5
    lr_schedule: str = "constant"
    warmup_epochs: int = 0
    intensity_prob: float = 0.0
    intensity_shift: float = 0.0
    intensity_scale: float = 0.0
    scale_prob: float = 0.0
    scale_range: float = 0.0
    flip_prob: float = 0.0
    flip_axes: tuple = (0,)
    val_every: int = 5
    val_overlap: float = 0.25
    sw_batch_size: int = 4
    checkpoint_every: int = 5
    checkpoint_dir: str = "checkpoints"
    amp: bool = True
    precision: str = "auto"
    channels_last: bool = False
    cache_rate: float = 1.0
    threads: int = 1
    resources: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, train_cfg: dict) -> TrainSettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(train_cfg) - known)
        if unknown:
            raise ThighctError(
                f"unknown train settings {unknown}",
                fix=f"use only these keys under train: {sorted(known)}",
            )
        epochs = train_cfg.get("epochs")
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ThighctError(
                f"train.epochs must be a positive count for this model, got {epochs!r}",
                fix="set train.epochs to a count, or give every model in `models` its own "
                "count (train.epochs: {unetr: 8, unet: 20})",
            )
        precision = train_cfg.get("precision", "auto")
        if precision not in PRECISIONS:
            raise ThighctError(
                f"train.precision must be one of {list(PRECISIONS)}, got {precision!r}",
                fix="set train.precision to auto, float32 or bfloat16",
            )
        return cls(**train_cfg)

    def training_dict(self) -> dict:
        """The settings that shape the trained weights (what the resume hash covers)."""
        return {k: v for k, v in vars(self).items() if k not in NON_TRAINING_KEYS}
