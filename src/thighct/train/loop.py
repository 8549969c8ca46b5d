"""The training loop: :func:`train_model` trains one network and keeps its best weights;
:func:`write_outputs` writes ``model.pt`` and ``train_log.tsv``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.data import CacheDataset
from monai.transforms import Compose

from .. import io
from ..errors import ThighctError
from ..labels import LabelTable
from ..model_file import model_meta
from ..models import atomic_torch_save, build_network, count_parameters, network_roi
from ..models import save_model as save_model_file
from .augment import augment_flip, augment_intensity, augment_scale
from .checkpoint import (
    CHECKPOINT_VERSION,
    _remove_empty_dir,
    _state_copy,
    checkpoint_path,
    epoch_seeds,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    seed_everything,
    training_hash,
)
from .data import check_label_range, crop_pipeline, crops_to_batch, epoch_batches
from .precision import _memory_format, _precision_name, autocast_dtype
from .settings import TrainSettings
from .step import lr_factor, make_loss, make_optimizer, optimiser_step, pick_device
from .validation import validate

log = logging.getLogger("thighct.train")


LOG_COLUMNS = ["epoch", "train_loss", "val_dice", "lr", "seconds"]


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
