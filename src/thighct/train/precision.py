"""Numeric precision and memory layout of training: autocast dtype and channels-last.

On CUDA ``train.amp`` turns on float16 autocast; on CPU bfloat16 autocast runs only where the
CPU computes bfloat16 natively (emulated bfloat16 is slower than float32).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

import torch

from .settings import TrainSettings

log = logging.getLogger("thighct.train")


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


def _precision_name(dtype: torch.dtype | None) -> str:
    return str(dtype).removeprefix("torch.") if dtype is not None else "float32"


def _memory_format(settings: TrainSettings) -> torch.memory_format:
    return torch.channels_last_3d if settings.channels_last else torch.contiguous_format
