"""Training of one segmentation network: random crops, Dice loss, AdamW, sliding-window validation.

The paper's protocol (Kim et al. 2024): Dice loss, AdamW (lr 8e-5, weight decay 1e-5), batch 2,
5000 epochs, four 96³ crops per image per step. Here an *epoch* is one pass over the training
images in a seeded random order; a *step* takes ``batch_size`` images and ``crops_per_image``
crops of each, so one step sees ``batch_size * crops_per_image`` patches.

Reproducibility and resume. Every random source of epoch ``e`` (image order, crop centres, the
torch generator) is seeded from ``(seed, e)``, and a checkpoint written at the end of an epoch
holds the weights, optimiser, scheduler, loss scaler, best weights, log rows and RNG states. A
run resumed from a checkpoint therefore continues exactly where the killed run stopped: on CPU
it ends with the same weights, bit for bit, as an uninterrupted run. The checkpoint stores a
hash of everything that shapes training (network, training settings, seed, labels, subjects);
when that hash changes, training starts afresh. The checkpoint is removed once the model is
written.

Arrays are in nibabel voxel order (x, y, z); images are the preprocessed intensities, labels
integer class ids 0..n_classes-1.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.data import CacheDataset
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss, DiceLoss
from monai.transforms import (
    ClassesToIndicesd,
    Compose,
    FgBgToIndicesd,
    RandCropByLabelClassesd,
    RandCropByPosNegLabeld,
    SpatialPadd,
)

from . import io
from .errors import ThighctError
from .labels import LabelTable
from .model_file import model_meta
from .models import atomic_torch_save, build_network, count_parameters, network_roi
from .models import save_model as save_model_file
from .run_settings import RUN_KEYS

log = logging.getLogger("thighct.train")

LOG_COLUMNS = ["epoch", "train_loss", "val_dice", "lr", "seconds"]
#: Version of the checkpoint layout; a checkpoint of another version is not resumed.
CHECKPOINT_VERSION = 1
#: ``train`` keys that do not change the trained weights (a change to them still resumes).
NON_TRAINING_KEYS = tuple(sorted(RUN_KEYS["train"]))


#: ``train.precision`` values: ``auto`` runs bfloat16 autocast on a CPU with native bfloat16
#: arithmetic and float32 on any other CPU; on CUDA ``amp`` decides (float16 autocast).
PRECISIONS = ("auto", "float32", "bfloat16")


# ------------------------------------------------------------------------------- settings
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


def training_hash(
    model_name: str,
    net_cfg: dict,
    settings: TrainSettings,
    seed: int,
    labels: LabelTable,
    train_ids: Sequence[str],
    val_ids: Sequence[str],
) -> str:
    """SHA-256 of everything that shapes training; a checkpoint resumes only if it matches."""
    payload = {
        "checkpoint_version": CHECKPOINT_VERSION,
        "model": model_name,
        "network": net_cfg,
        "train": settings.training_dict(),
        "seed": int(seed),
        "labels": labels.to_dict(),
        "train_ids": list(train_ids),
        "val_ids": list(val_ids),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------------- seeds
def epoch_seeds(seed: int, epoch: int) -> dict[str, int]:
    """Independent seeds for the random sources of one epoch (image order, crops, torch)."""
    order, crops, torch_seed = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(3)
    return {"order": int(order), "crops": int(crops), "torch": int(torch_seed)}


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (network initialisation uses torch)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _crop_generator(crop_transform) -> np.random.RandomState:
    """The generator a MONAI dictionary crop really draws from (its inner array transform's)."""
    return getattr(crop_transform, "cropper", crop_transform).R


def rng_states(crop_transform) -> dict:
    """Global RNG states plus the crop transform's own generator, as tensors and plain types."""
    return {
        "python": [list(s) if isinstance(s, tuple) else s for s in random.getstate()],
        "numpy": _numpy_state(np.random.get_state()),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "crops": _numpy_state(_crop_generator(crop_transform).get_state()),
    }


def _numpy_state(state) -> dict:
    kind, keys, pos, has_gauss, cached = state
    return {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _as_numpy_state(d: dict) -> tuple:
    return (d["kind"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])


def restore_rng_states(states: dict, crop_transform) -> None:
    py = states["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(_as_numpy_state(states["numpy"]))
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    _crop_generator(crop_transform).set_state(_as_numpy_state(states["crops"]))


# ------------------------------------------------------------------------------------ data
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


# ------------------------------------------------------------------------------- training
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


# ----------------------------------------------------------------------------- validation
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


@functools.lru_cache(maxsize=8)
def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes in bfloat16 natively (x86 AVX512-BF16 or AMX-BF16; Arm BF16).

    Without native support, bfloat16 is emulated in float32 and slower than float32 itself.
    Reads the kernel's CPU flags; False where they cannot be read (not Linux).
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return False


def autocast_dtype(settings: TrainSettings, device: torch.device) -> torch.dtype | None:
    """The autocast dtype training and validation run in, or None for plain float32.

    CUDA: float16 when ``amp`` is on. CPU: bfloat16 when ``precision`` is ``auto`` or
    ``bfloat16`` and the CPU has native bfloat16 (explicit ``bfloat16`` on another CPU falls
    back to float32 with a warning: emulated bfloat16 is slower than float32).
    """
    if device.type == "cuda":
        return torch.float16 if settings.amp else None
    if device.type != "cpu" or settings.precision == "float32":
        return None
    if cpu_has_native_bf16():
        return torch.bfloat16
    if settings.precision == "bfloat16":
        log.warning("train.precision bfloat16: this CPU has no native bfloat16; using float32")
    return None


def _autocast(dtype: torch.dtype | None, device: torch.device):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


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


def _precision_name(dtype: torch.dtype | None) -> str:
    return str(dtype).removeprefix("torch.") if dtype is not None else "float32"


def _memory_format(settings: TrainSettings) -> torch.memory_format:
    return torch.channels_last_3d if settings.channels_last else torch.contiguous_format


# ----------------------------------------------------------------------------- checkpoints
def checkpoint_path(checkpoint_dir: str | Path, model_name: str, fold: int | None = None) -> Path:
    """``{checkpoint_dir}/{model}[/fold{k}]/last.pt`` (not a rule output: it outlives a killed job)."""
    base = Path(checkpoint_dir) / model_name
    return (base / f"fold{fold}" if fold is not None else base) / "last.pt"


def load_checkpoint(path: Path, expected_hash: str) -> dict | None:
    """The checkpoint at ``path`` if it belongs to this training run, else None (start afresh)."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged checkpoint must not stop training, only its resume
        log.warning("checkpoint %s is unreadable (%s); starting afresh", path, exc)
        return None
    if ckpt.get("version") != CHECKPOINT_VERSION or ckpt.get("config_hash") != expected_hash:
        log.warning("checkpoint %s was written with another training config; starting afresh", path)
        return None
    return ckpt


def _state_copy(net: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


# ------------------------------------------------------------------------------------ main
@dataclass
class TrainResult:
    """What :func:`train_model` produced: the best weights and the per-epoch log."""

    net: torch.nn.Module
    log: pd.DataFrame
    best_dice: float
    best_epoch: int
    device: str
    finished: bool
    precision: str = "float32"


def train_model(
    model_name: str,
    net_cfg: dict,
    train_cfg: dict,
    labels: LabelTable,
    train_items: Sequence[dict],
    val_items: Sequence[dict],
    *,
    seed: int,
    checkpoint_dir: str | Path | None = None,
    fold: int | None = None,
    device: str | None = None,
    stop_after: int | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``model_name`` on ``train_items`` and keep the weights with the best validation Dice.

    Parameters
    ----------
    net_cfg: ``networks.<model_name>`` (see :func:`thighct.models.build_network`).
    train_cfg: the ``train`` section of the config.
    train_items, val_items: dicts from :func:`load_pairs` (``image``/``label`` as (1, x, y, z)).
    seed: the config's master seed.
    checkpoint_dir: where resumable checkpoints go (default ``train_cfg["checkpoint_dir"]``).
    fold: cross-validation fold (only names the checkpoint folder).
    stop_after: stop after this epoch as if killed (tests); the checkpoint stays.
    on_epoch: called with each epoch's log row.

    Returns the best network (by validation mean Dice; the last one if never validated) on CPU.
    """
    settings = TrainSettings.from_config(train_cfg)
    if not train_items:
        raise ThighctError(
            "no training images", fix="check the split (config split, cohort table labels)"
        )
    n_classes = labels.n_classes
    check_label_range(list(train_items) + list(val_items), n_classes)
    roi = network_roi(net_cfg)
    dev = pick_device(device)
    torch.set_num_threads(int(settings.threads))
    config_hash = training_hash(
        model_name,
        net_cfg,
        settings,
        seed,
        labels,
        [i.get("subject", str(k)) for k, i in enumerate(train_items)],
        [i.get("subject", str(k)) for k, i in enumerate(val_items)],
    )

    seed_everything(seed)
    net = build_network(model_name, net_cfg, n_classes).to(dev)
    net = net.to(memory_format=_memory_format(settings))
    optimizer = make_optimizer(net, settings)
    steps_per_epoch = math.ceil(len(train_items) / settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    warmup_steps = settings.warmup_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, settings.lr_schedule)
    )
    amp_dtype = autocast_dtype(settings, dev)
    # Loss scaling guards float16 gradients against underflow; bfloat16 has float32's range.
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
    loss_fn = make_loss(settings.loss)

    cached, crop = crop_pipeline(roi, settings, n_classes)
    dataset = CacheDataset(
        data=[{"image": i["image"], "label": i["label"]} for i in train_items],
        transform=Compose([*cached, crop]),  # flat: CacheDataset caches up to the first random one
        cache_rate=settings.cache_rate,
        num_workers=0,
        progress=False,
        copy_cache=False,
    )

    ckpt_file = checkpoint_path(checkpoint_dir or settings.checkpoint_dir, model_name, fold)
    rows: list[dict] = []
    best_state, best_dice, best_epoch, start = None, -math.inf, 0, 1
    ckpt = load_checkpoint(ckpt_file, config_hash)
    if ckpt is not None:
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        restore_rng_states(ckpt["rng"], crop)
        rows = [dict(r) for r in ckpt["log"]]
        best_state, best_dice, best_epoch = (
            ckpt["best_state"],
            ckpt["best_dice"],
            ckpt["best_epoch"],
        )
        start = int(ckpt["epoch"]) + 1
        log.info(
            "resuming %s from %s at epoch %d of %d", model_name, ckpt_file, start, settings.epochs
        )

    log.info(
        "training %s (%s, %d parameters) on %s%s; seed %d; %d train / %d val images; "
        "roi %s, %d epochs x %d steps of %d images x %d crops",
        model_name,
        net_cfg.get("arch"),
        count_parameters(net),
        dev,
        f" in {_precision_name(amp_dtype)}"
        + (" (channels-last)" if settings.channels_last else ""),
        seed,
        len(train_items),
        len(val_items),
        list(roi),
        settings.epochs,
        steps_per_epoch,
        settings.batch_size,
        settings.crops_per_image,
    )

    net.train()
    spent = sum(float(r["seconds"]) for r in rows)
    for epoch in range(start, settings.epochs + 1):
        t0 = time.perf_counter()
        seeds = epoch_seeds(seed, epoch)
        torch.manual_seed(seeds["torch"])
        crop.set_random_state(seed=seeds["crops"])
        losses = []
        for batch in epoch_batches(len(train_items), settings.batch_size, seeds["order"]):
            crops = [c for i in batch for c in dataset[i]]
            images, targets = crops_to_batch(crops, dev)
            images = augment_intensity(images, settings)
            images, targets = augment_scale(images, targets, settings)
            images, targets = augment_flip(images, targets, settings)
            images = images.contiguous(memory_format=_memory_format(settings))
            loss = optimiser_step(net, images, targets, loss_fn, optimizer, scaler, amp_dtype)
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used
            scheduler.step()
            losses.append(float(loss.detach()))

        val_dice = float("nan")
        if val_items and (epoch % settings.val_every == 0 or epoch == settings.epochs):
            val_dice = validate(net, val_items, roi, n_classes, settings, dev)
            if val_dice > best_dice:
                best_dice, best_epoch, best_state = val_dice, epoch, _state_copy(net)
        seconds = time.perf_counter() - t0
        spent += seconds
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "val_dice": val_dice,
            "lr": lr,
            "seconds": seconds,
        }
        rows.append(row)
        eta = spent / len(rows) * (settings.epochs - epoch)
        log.info(
            "%s epoch %d/%d loss %.4f val_dice %s (best %s @%d) lr %.2e time %.1fs ETA %s",
            model_name,
            epoch,
            settings.epochs,
            row["train_loss"],
            "-" if math.isnan(val_dice) else f"{val_dice:.4f}",
            "-" if best_epoch == 0 else f"{best_dice:.4f}",
            best_epoch,
            lr,
            seconds,
            _duration(eta),
        )
        if on_epoch is not None:
            on_epoch(row)
        killed = stop_after is not None and epoch >= stop_after
        if epoch % settings.checkpoint_every == 0 or killed:
            atomic_torch_save(
                {
                    "version": CHECKPOINT_VERSION,
                    "config_hash": config_hash,
                    "epoch": epoch,
                    "model": _state_copy(net),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rng_states(crop),
                    "log": rows,
                    "best_state": best_state,
                    "best_dice": best_dice,
                    "best_epoch": best_epoch,
                },
                ckpt_file,
            )
        if killed and epoch < settings.epochs:
            log.info("stopping after epoch %d as asked; rerun to resume from %s", epoch, ckpt_file)
            return TrainResult(
                net.cpu(),
                pd.DataFrame(rows, columns=LOG_COLUMNS),
                best_dice,
                best_epoch,
                str(dev),
                False,
                _precision_name(amp_dtype),
            )

    if best_state is not None:
        net.load_state_dict(best_state)
        log.info(
            "%s: best validation mean Dice %.4f at epoch %d", model_name, best_dice, best_epoch
        )
    else:
        best_dice, best_epoch = float("nan"), settings.epochs
    ckpt_file.unlink(missing_ok=True)
    _remove_empty_dir(ckpt_file.parent)
    net = net.cpu().to(memory_format=torch.contiguous_format)
    return TrainResult(
        net,
        pd.DataFrame(rows, columns=LOG_COLUMNS),
        best_dice,
        best_epoch,
        str(dev),
        True,
        _precision_name(amp_dtype),
    )


def _remove_empty_dir(folder: Path) -> None:
    """Remove the run's own checkpoint folder once empty (other runs may share its parents)."""
    with contextlib.suppress(OSError):
        folder.rmdir()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def write_outputs(
    result: TrainResult,
    model_path: str | Path,
    log_path: str | Path,
    model_name: str,
    net_cfg: dict,
    train_cfg: dict,
    labels: LabelTable,
    seed: int,
    preprocess: dict,
) -> None:
    """Write model.pt and train_log.tsv atomically.

    model.pt holds the best weights with the label table, the network config and the
    pre-processing (``preprocess`` config) the scans went through (:mod:`thighct.model_file`).
    """
    meta = model_meta(
        model_name,
        net_cfg,
        labels,
        preprocess,
        seed=int(seed),
        best_epoch=int(result.best_epoch),
        best_val_dice=None if math.isnan(result.best_dice) else float(result.best_dice),
        epochs=int(train_cfg["epochs"]),
        device=result.device,
        precision=result.precision,
        train=TrainSettings.from_config(train_cfg).training_dict(),
    )
    save_model_file(model_path, result.net, meta)
    with io.atomic_path(log_path) as tmp:
        result.log.to_csv(tmp, sep="\t", index=False, float_format="%.6g", na_rep="")
