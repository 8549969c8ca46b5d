"""Seeds, RNG states and checkpoints: what lets a killed training run resume exactly.

Every random source of epoch ``e`` (image order, crop centres, the torch generator) is seeded
from ``(seed, e)``, and a checkpoint written at the end of an epoch holds the weights,
optimiser, scheduler, loss scaler, best weights, log rows and RNG states. A run resumed from a
checkpoint therefore continues exactly where the killed run stopped: on CPU it ends with the
same weights, bit for bit, as an uninterrupted run. The checkpoint stores a hash of everything
that shapes training (network, training settings, seed, labels, subjects); when that hash
changes, training starts afresh. The checkpoint is removed once the model is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..labels import LabelTable
from .settings import TrainSettings

log = logging.getLogger("thighct.train")


#: Version of the checkpoint layout; a checkpoint of another version is not resumed.
CHECKPOINT_VERSION = 1


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


def _remove_empty_dir(folder: Path) -> None:
    """Remove the run's own checkpoint folder once empty (other runs may share its parents)."""
    with contextlib.suppress(OSError):
        folder.rmdir()
