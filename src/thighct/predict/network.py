"""The network made ready for inference, and the labels of one preprocessed image.

:func:`prepare_network` puts the network in eval mode, detaches a final 1x1x1 convolution
(blended once per voxel: :func:`thighct.predict.streaming.split_linear_head`) and, on CPU
with ``infer.cpu_fastpath``, hands it to :mod:`thighct.predict.cpu_fastpath`. CUDA always
runs MONAI's modules.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import cpu_fastpath
from .settings import InferSettings
from .streaming import LinearHead, mirrored, sliding_window_labels, split_linear_head

log = logging.getLogger(__name__)


@dataclass
class Segmenter:
    """A network ready for inference: ``trunk`` maps windows to logits, or to features when
    ``head`` is set (the detached final 1x1x1 convolution). ``fast_path``: the trunk is the
    CPU fast path's rewrite (channels-last windows)."""

    trunk: nn.Module
    n_classes: int
    head: LinearHead | None
    device: torch.device
    fast_path: bool = False


def uses_cpu_fast_path(device: torch.device, settings: InferSettings) -> bool:
    """Whether the fast path is asked for: on the CPU with ``cpu_fastpath``, never on CUDA."""
    return bool(settings.cpu_fastpath and torch.device(device).type == "cpu")


def choose_fast_path(net: nn.Module, device: torch.device, settings: InferSettings) -> bool:
    """Whether ``net`` runs rewritten by the CPU fast path. When it is asked for but
    :func:`thighct.predict.cpu_fastpath.fastpath_problem` finds a reason not to, one
    warning in the log names it and the plain modules run."""
    if not uses_cpu_fast_path(device, settings):
        return False
    problem = cpu_fastpath.fastpath_problem(net)
    if problem:
        log.warning("CPU fast path off, MONAI's modules run instead: %s", problem)
        return False
    return True


def prepare_network(
    net: nn.Module, n_classes: int, device: torch.device, settings: InferSettings
) -> Segmenter:
    """``net`` in eval mode on ``device``, its head detached, rewritten by the CPU fast path
    where :func:`choose_fast_path` says so. Modifies ``net`` in place."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    fast = choose_fast_path(net, device, settings)
    head = None
    split = split_linear_head(net)
    if split is not None:
        net, head = split
        head = LinearHead(
            head.weight.to(device), None if head.bias is None else head.bias.to(device)
        )
    net.to(device)
    if fast:
        net = cpu_fastpath.rewrite(net)
    return Segmenter(net, int(n_classes), head, device, fast)


def keep_freed_memory(segmenter: Segmenter) -> bool:
    """With the CPU fast path, keep freed memory in this process for the next window
    (:func:`thighct.predict.cpu_fastpath.reuse_freed_memory`); True if set."""
    return segmenter.fast_path and cpu_fastpath.reuse_freed_memory()


def predict_labels(
    image: np.ndarray, segmenter: Segmenter, roi: Sequence[int], settings: InferSettings
) -> np.ndarray:
    """Labels (uint8 class ids, ``(x, y, z)``) of a preprocessed image by a prepared network."""
    return sliding_window_labels(
        image,
        mirrored(segmenter.trunk, settings.mirror_axes),
        roi,
        segmenter.n_classes,
        overlap=settings.overlap,
        mode=settings.mode,
        sigma_scale=settings.sigma_scale,
        sw_batch_size=settings.sw_batch_size,
        device=segmenter.device,
        channels_last=segmenter.fast_path,
        amp=settings.amp,
        head=segmenter.head,
        workers=settings.workers if segmenter.device.type == "cpu" else 1,
        accumulate=settings.accumulate,
    )
