"""The ``infer:`` section of the config as settings, and where the network runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

import torch

BLEND_MODES = ("constant", "gaussian")
ACCUMULATE = ("float16", "float32")  # precision of the running window sums
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class InferSettings:
    """The ``infer:`` section of the config (see workflow/schemas/config.schema.yaml).

    overlap: fraction of the ROI that neighbouring windows share, per axis (MONAI's overlap).
    mode: blending of overlapping windows: ``constant`` (plain mean) or ``gaussian``.
    sigma_scale: Gaussian sigma as a fraction of the ROI (mode ``gaussian`` only).
    sw_batch_size: windows per network call.
    device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    amp: float16 autocast on CUDA (ignored on CPU, which has no fast half precision here).
    cpu_fastpath: on CPU, run the network rewritten for speed
        (:mod:`thighct.predict.cpu_fastpath`; same labels up to float rounding). Ignored on
        CUDA, which runs MONAI's modules. Where the rewrite cannot be trusted (another torch
        version, an operator that is missing or misbehaves, an unexpected network block) the
        plain modules run, with one warning.
    workers: batches of windows computed at once on CPU, each with ``threads // workers``
        torch threads (:func:`use_cpu_threads`): more speed for a second window's memory.
    mirror_axes: test-time mirroring: the network also sees each window mirrored along these
        image axes (0 = x, left-right; 1 = y; 2 = z), one pass per non-empty combination, and
        the outputs, mirrored back, are averaged (nnU-Net's mirroring, on chosen axes). Costs
        ``2 ** len(mirror_axes)`` network passes per window. Only axes along which the anatomy
        is (nearly) symmetric make sense for a network trained without mirroring: x swaps the
        legs, whose labels carry no side.
    accumulate: precision of the running sums of overlapping windows: ``float16`` (nnU-Net
        v2's choice: half the accumulator's memory; labels of near-tied voxels may differ
        from a float32 sum) or ``float32``. A half-precision sum that could overflow is
        widened to float32 on the fly (:class:`thighct.predict.streaming.SlabAccumulator`).
    """

    overlap: float = 0.25
    mode: str = "constant"
    sigma_scale: float = 0.125
    sw_batch_size: int = 1
    device: str = "auto"
    amp: bool = False
    cpu_fastpath: bool = True
    workers: int = 1
    mirror_axes: tuple[int, ...] = ()
    accumulate: str = "float16"

    @classmethod
    def from_config(cls, section: Mapping) -> InferSettings:
        """Build from the config's ``infer:`` mapping (missing keys take the defaults)."""
        known = asdict(cls())
        values = {k: section[k] for k in known if k in section}
        if "mirror_axes" in values:
            values["mirror_axes"] = tuple(values["mirror_axes"] or ())
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ValueError(f"infer.overlap must be in [0, 1), got {self.overlap}")
        if self.mode not in BLEND_MODES:
            raise ValueError(f"infer.mode must be one of {BLEND_MODES}, got {self.mode!r}")
        if int(self.sw_batch_size) < 1:
            raise ValueError(f"infer.sw_batch_size must be >= 1, got {self.sw_batch_size}")
        if int(self.workers) < 1:
            raise ValueError(f"infer.workers must be >= 1, got {self.workers}")
        if self.accumulate not in ACCUMULATE:
            raise ValueError(
                f"infer.accumulate must be one of {ACCUMULATE}, got {self.accumulate!r}"
            )
        if self.device not in DEVICES:
            raise ValueError(f"infer.device must be one of {DEVICES}, got {self.device!r}")
        axes = list(self.mirror_axes)
        if any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(
                f"infer.mirror_axes must list distinct image axes 0, 1 or 2, got {axes}"
            )


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("infer.device is 'cuda' but no CUDA device is available")
    return torch.device(device)


def use_cpu_threads(settings: InferSettings, threads: int, device: torch.device) -> InferSettings:
    """Share the rule's ``threads`` among the window workers; returns the settings to run with.

    Workers never outnumber the threads (and are 1 off the CPU, where the GPU does the work);
    each worker gets ``threads // workers`` torch intra-op threads.
    """
    threads = max(int(threads), 1)
    workers = min(int(settings.workers), threads) if device.type == "cpu" else 1
    torch.set_num_threads(max(threads // workers, 1))
    # One op runs at a time per worker; no inter-op pool on top of the workers.
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # fixed once torch has run parallel work in this process
    return replace(settings, workers=workers)


def synchronise(device: torch.device) -> None:
    """Wait for queued GPU work (so timings measure it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
