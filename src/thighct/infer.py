"""Segmentation of a whole scan: sliding-window inference streamed in slabs, argmax to labels.

MONAI's ``sliding_window_inference`` sums every window's logits into a float32 volume of
``n_classes x X x Y x Z`` (1.1 GB for 30 classes at 300 x 133 x 225 voxels) plus a count map,
divides, and then the argmax reads the whole volume again. We only need the labels, so
:func:`sliding_window_labels` runs **the same windows** (MONAI's positions for the ROI and
overlap, MONAI's blending weights) in order along one voxel axis, the *slab axis*, and sums
them into an accumulator only one ROI deep along that axis. Once the windows move past a
plane, no later window touches it: those voxels are final, are reduced to uint8 labels, and
their accumulator rows are reused. The label of a voxel is the argmax of the weighted sum of
its windows' logits; MONAI's output is that sum divided by the total weight at the voxel,
which is the same for every class, so the argmax is the same (up to float rounding of the
division, which can only matter for exact ties).

When the network ends in a 1x1x1 convolution (UNETR, DynUNet: ``UnetOutBlock``), that last
layer is linear, so the weighted sum of the windows' logits equals the layer applied to the
weighted sum of their features plus its bias times the weight total. The accumulator then holds
the features (16 channels for the paper's UNETR instead of 30 logits) and one weight-total
channel, and the layer runs once per voxel when it is finalised instead of once per window.

The running sums are kept in half precision by default (``accumulate``, nnU-Net v2's choice),
which halves the accumulator; a sum that could overflow is widened to float32 on the fly.

The network itself runs under ``torch.inference_mode`` in batches of ``sw_batch_size``
windows. :func:`prepare_network` makes result-preserving changes for CPU speed:
channels-last memory layout with every 3-D convolution computed by oneDNN (PyTorch would send
single-window batches and single-channel inputs to a slower generic path); the transformer's
linear layers computed by oneDNN too (PyTorch's MKL sgemm takes a slower path on AMD
processors: :class:`OneDNNLinear`); instance norm
computed in place from a row sum and a Gram diagonal (PyTorch's instance norm runs through
batch norm on a reshaped copy, and ``var_mean`` over a channels-last tensor is a strided
reduction); UNETR's one-channel residual block as a rank-one update
(:class:`OneChannelResBlock`); and UNETR's up-blocks computed in place
(:class:`StreamlinedUNETR`): no concatenation is built, each residual block runs in three
buffers (oneDNN convolutions that add into a given buffer), and the full-resolution ones are
kept per thread from window to window. The predict job also keeps freed memory for the next window
(:func:`reuse_freed_memory`). On CPU, ``workers`` batches of windows can run at once in
threads, each with its share of the cores; their sums are still added in window order.

Arrays are indexed ``(x, y, z)`` (nibabel voxel order) on the grid of the preprocessed image;
:func:`thighct.preprocess.to_native` brings the labels back to the scan's own grid.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .body import body_region

log = logging.getLogger(__name__)

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
    channels_last: channels-last memory layout for the network on CPU, every 3-D convolution
        and linear layer computed by oneDNN (CPU speed; same results up to float rounding).
    fast_norm: instance norm as group norm with one group per channel (same results, faster).
    split_head: accumulate features before a final 1x1x1 convolution instead of logits
        (same results up to float rounding; smaller accumulator, fewer operations).
    fuse_blocks: on CPU with ``fast_norm`` and ``channels_last``, the residual block on the
        one-channel input (UNETR's ``encoder1``) computes its 1x1x1 residual branch as a
        rank-one update (:class:`OneChannelResBlock`; same results up to float rounding).
    reuse_memory: on CPU, keep freed large blocks for the next window instead of returning
        them to the system (:func:`reuse_freed_memory`; the predict job's process only).
    workers: batches of windows computed at once on CPU, each with ``threads // workers``
        torch threads (:func:`use_cpu_threads`). Two single-threaded windows on two cores avoid the
        per-operation synchronisation of two threads sharing one window, at a second window's
        memory; with ``reuse_memory`` one window on two threads is as fast.
    mirror_axes: test-time mirroring: the network also sees each window mirrored along these
        image axes (0 = x, left-right; 1 = y; 2 = z), one pass per non-empty combination, and
        the outputs, mirrored back, are averaged (nnU-Net's mirroring, on chosen axes). Costs
        ``2 ** len(mirror_axes)`` network passes per window. Only axes along which the anatomy
        is (nearly) symmetric make sense for a network trained without mirroring: x swaps the
        legs, whose labels carry no side.
    accumulate: precision of the running sums of overlapping windows: ``float16`` (nnU-Net
        v2's choice: half the accumulator's memory; labels of near-tied voxels may differ
        from a float32 sum) or ``float32``. A half-precision sum that could overflow is
        widened to float32 on the fly (:class:`SlabAccumulator`).
    """

    overlap: float = 0.25
    mode: str = "constant"
    sigma_scale: float = 0.125
    sw_batch_size: int = 1
    device: str = "auto"
    amp: bool = False
    channels_last: bool = True
    fast_norm: bool = True
    split_head: bool = True
    fuse_blocks: bool = True
    reuse_memory: bool = True
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


# ----------------------------------------------------------------------------- windows
def scan_interval(image_size: Sequence[int], roi: Sequence[int], overlap: float) -> tuple[int, ...]:
    """Step between window starts per axis (voxels): ``int(roi * (1 - overlap))``, as MONAI."""
    steps = []
    for size, r in zip(image_size, roi, strict=True):
        steps.append(int(r) if r == size else max(int(r * (1.0 - overlap)), 1))
    return tuple(steps)


def axis_starts(size: int, roi: int, step: int) -> list[int]:
    """Window starts along one axis (voxels): every ``step``, the last one flush with the end.

    The same positions as MONAI's ``dense_patch_slices`` for an axis at least ``roi`` long.
    """
    n = 1
    while (n - 1) * step + roi < size:
        n += 1
    return [i * step - max(i * step + roi - size, 0) for i in range(n)]


def window_starts(
    image_size: Sequence[int], roi: Sequence[int], overlap: float
) -> list[tuple[int, ...]]:
    """All window corners (voxels), first axis outermost: MONAI's windows in MONAI's order."""
    steps = scan_interval(image_size, roi, overlap)
    per_axis = [axis_starts(s, r, t) for s, r, t in zip(image_size, roi, steps, strict=True)]
    grids = np.meshgrid(*per_axis, indexing="ij")
    return [
        tuple(int(v) for v in corner) for corner in zip(*(g.ravel() for g in grids), strict=True)
    ]


def roi_padding(image_size: Sequence[int], roi: Sequence[int]) -> list[tuple[int, int]]:
    """(before, after) zero padding per axis that brings an axis shorter than the ROI up to it.

    Half (rounded down) goes before, as MONAI pads.
    """
    pads = []
    for size, r in zip(image_size, roi, strict=True):
        diff = max(int(r) - int(size), 0)
        pads.append((diff // 2, diff - diff // 2))
    return pads


def choose_slab_axis(image_size: Sequence[int], roi: Sequence[int]) -> int:
    """The axis to stream along: the one that makes the ROI-deep accumulator smallest.

    The accumulator holds ``roi[a] * prod(size[b], b != a)`` voxels, smallest where
    ``size[a] / roi[a]`` is largest.
    """
    ratios = [int(s) / int(r) for s, r in zip(image_size, roi, strict=True)]
    return int(np.argmax(ratios))


def importance_map(
    roi: Sequence[int], mode: str, sigma_scale: float, device: torch.device
) -> torch.Tensor | None:
    """Per-voxel window weight (roi-shaped, float32), MONAI's; ``None`` for constant weights."""
    if mode == "constant":
        return None
    from monai.data.utils import compute_importance_map

    return compute_importance_map(
        tuple(int(r) for r in roi),
        mode=mode,
        sigma_scale=sigma_scale,
        device=device,
        dtype=torch.float32,
    )


# ----------------------------------------------------------------------------- network
class InstanceNormAsGroupNorm(nn.Module):
    """Instance norm computed by ``group_norm`` with one group per channel.

    Both normalise each (sample, channel) over its voxels with the biased variance; group
    norm has a native channels-last kernel where instance norm copies its input twice.
    """

    def __init__(self, norm: nn.modules.instancenorm._InstanceNorm):
        super().__init__()
        self.eps = float(norm.eps)
        self.weight = norm.weight if norm.affine else None
        self.bias = norm.bias if norm.affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)


class InstanceNormInPlace(InstanceNormAsGroupNorm):
    """Instance norm that overwrites its input (one full-size tensor less at the peak).

    Only for layers whose input is a fresh convolution output that nothing else reads: the
    norms inside MONAI's ``UnetResBlock`` and ``UnetBasicBlock`` (UNETR's and DynUNet's blocks).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_contiguous(memory_format=torch.channels_last_3d) and x.ndim == 5:
            return self._channels_last(x)
        dims = tuple(range(2, x.ndim))
        var, mean = torch.var_mean(x, dim=dims, keepdim=True, correction=0)
        x.sub_(mean).mul_(torch.rsqrt(var + self.eps))
        if self.weight is not None:
            shape = (1, -1) + (1,) * (x.ndim - 2)
            x.mul_(self.weight.view(shape)).add_(self.bias.view(shape))
        return x

    def _channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """The same normalisation on a channels-last tensor, seen as (voxels, channels) rows.

        ``var_mean`` over the spatial dims of a channels-last tensor is a strided reduction
        (a third of a window's time in UNETR); here the statistics come from a row sum and the
        diagonal of the Gram matrix (one BLAS call), and one pass writes the result.
        """
        n, c = x.shape[:2]
        flat = x.permute(0, 2, 3, 4, 1).view(n, -1, c)  # x itself: (sample, voxel, channel)
        for i in range(n):
            rows = flat[i]
            mean, var = row_moments(rows)
            scale, shift = affine_of_norm(mean, var, self.eps, self.weight, self.bias)
            torch.addcmul(shift, rows, scale, out=rows)
        return x


#: Largest mean^2 / variance for which E[x^2] - mean^2 keeps float32 accuracy (about 1e-5
#: relative); beyond it the rows are centred first.
_ONE_PASS_LIMIT = 100.0


def row_moments(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and biased variance of a ``(voxels, channels)`` matrix.

    One read for the sums and one Gram matrix for the squares. When a column's mean is large
    against its spread the difference of squares would lose digits: the rows are then centred
    in place and the returned mean is 0 (the centring is already applied).
    """
    count = rows.shape[0]
    mean = rows.sum(dim=0) / count
    var = torch.mm(rows.T, rows).diagonal() / count - mean * mean
    if bool((mean * mean > _ONE_PASS_LIMIT * var.clamp_min(0)).any()):
        rows.sub_(mean)
        var = torch.mm(rows.T, rows).diagonal() / count
        mean = torch.zeros_like(mean)
    return mean, var.clamp_min(0)


def affine_of_norm(mean, var, eps, weight, bias) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with norm(x) = x * scale + shift, per channel (inference: no grad)."""
    weight = None if weight is None else weight.detach()
    bias = None if bias is None else bias.detach()
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return scale, shift


class OneChannelResBlock(nn.Module):
    """MONAI's ``UnetResBlock`` on a one-channel input (UNETR's ``encoder1``), fused.

    Its residual branch is a 1x1x1 convolution of the input and an instance norm. With one
    input channel, channel c of that branch is ``w_c * x + b_c``, so after the norm it is
    ``scale_c * (x - mean_x) + shift_c`` with ``scale_c = w_c * gamma_c / sqrt(w_c^2 var_x +
    eps)``: no convolution, no full-size tensor. It is added, with the main branch's last norm,
    in one pass over the main branch (a rank-one update). Same result up to float rounding.
    """

    def __init__(self, block: nn.Module, residual_conv: nn.Conv3d):
        super().__init__()
        self.block = block
        self.w3 = residual_conv.weight.detach().reshape(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        out = b.lrelu(b.norm1(b.conv1(x)))
        out = b.conv2(out)
        if not (
            x.is_contiguous(memory_format=torch.channels_last_3d)
            and out.is_contiguous(memory_format=torch.channels_last_3d)
        ):
            return self.block(x)
        self._add_residual(x, out)
        return b.lrelu(out)

    def forward_into(self, x: torch.Tensor, work: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The same block computed in two given buffers (channels-last, float32, on CPU):
        ``work`` holds the first convolution, ``out`` receives the result (returned)."""
        b = self.block
        conv1, conv2 = _the_conv(b.conv1), _the_conv(b.conv2)
        _conv_into(work, x, conv1.weight, conv1.bias, conv1, accumulate=False)
        _leaky_relu_(b.norm1(work), b.lrelu)
        _conv_into(out, work, conv2.weight, conv2.bias, conv2, accumulate=False)
        self._add_residual(x, out)
        return _leaky_relu_(out, b.lrelu)

    def _add_residual(self, x: torch.Tensor, out: torch.Tensor) -> None:
        """``out <- norm2(out) + norm3(conv3(x))`` in place (both channels-last)."""
        b = self.block
        n, c = out.shape[:2]
        flat = out.permute(0, 2, 3, 4, 1).view(n, -1, c)
        inputs = x.reshape(n, -1)
        n2, n3 = b.norm2, b.norm3
        w3 = self.w3.to(out.dtype)
        for i in range(n):
            rows = flat[i]
            mean2, var2 = row_moments(rows)
            scale2, shift2 = affine_of_norm(mean2, var2, n2.eps, n2.weight, n2.bias)
            xi = inputs[i]
            mean_x = xi.mean()
            var_x = (xi - mean_x).pow(2).mean()
            # norm3(w x + b) = gamma * w * (x - mean_x) * rsqrt(w^2 var_x + eps) + beta
            zero = torch.zeros_like(w3)
            scale3, shift3 = affine_of_norm(zero, w3 * w3 * var_x, n3.eps, n3.weight, n3.bias)
            scale3 = scale3 * w3
            shift3 = shift3 - mean_x * scale3
            torch.addcmul(shift2 + shift3, rows, scale2, out=rows)
            rows.addr_(xi, scale3)


class StreamlinedUNETR(nn.Module):
    """UNETR's forward pass (MONAI's or :class:`thighct.models.PatchUNETR`) with its up-blocks
    computed in place.

    MONAI's forward computes ``encoder1`` first and keeps it through the whole transformer and
    decoder, upsamples the decoder, copies both into a new concatenation and runs the last
    residual block on it: five full-resolution tensors are alive at its peak. Here the
    full-resolution stage (:meth:`_full_resolution`) runs last in three full-resolution
    buffers kept per thread from window to window (so the output of a call is overwritten by
    the same thread's next call: use it before then): the transposed convolution
    (kernel = stride = 2: one matrix product) writes the upsampled features, ``encoder1``
    runs, and the last block's convolutions of the concatenation are computed as the sum of
    convolutions of its two halves (oneDNN convolutions that add into a buffer), so the
    concatenation is never built; its 1x1x1 residual projection overwrites the upsampled
    features voxel by voxel. The lower up-blocks run the same way (:meth:`_up_block`) in
    buffers of their own, the skip features taking the result. Same operations and results up
    to float rounding. Where a part is not the expected MONAI block, it runs as MONAI's does.
    """

    def __init__(
        self, net: nn.Module, vit, encoder1, skips, layers, decoders, proj_feat, out, transp
    ):
        super().__init__()
        self.net = net
        self._parts = (vit, encoder1, list(skips), list(layers), list(decoders), proj_feat, out)
        # The last up-block's transposed convolution (not registered a second time).
        self._last_transp = (transp,)
        self._local = threading.local()  # per thread: the kept buffers
        self._split_cache: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vit, encoder1, skips, layers, decoders, proj_feat, head = self._parts
        feats, hidden = vit(x)
        lows = [enc(proj_feat(hidden[layer])) for enc, layer in zip(skips, layers, strict=True)]
        del hidden
        out = proj_feat(feats)
        del feats
        for dec, skip in zip(decoders[:-1], reversed(lows), strict=True):
            out = self._up_block(dec, out, skip)
        del lows, skip
        block = decoders[-1].conv_block
        fused = _fused_block(encoder1)
        if fused is not None and _pair_block_ok(block) and _fused_block_ok(fused, x):
            return head(self._full_resolution(x, out, fused, block))
        return head(self._concatenated(x, out, encoder1, block))

    def _concatenated(self, x, out, encoder1, block) -> torch.Tensor:
        """The last up-block on a concatenation, as MONAI computes it."""
        n, _, *size = x.shape
        c = self._last_transp[0].out_channels
        cat = torch.empty(
            (n, 2 * c, *size),
            dtype=out.dtype,
            device=out.device,
            memory_format=torch.channels_last_3d,
        )
        _upsample_into(out, self._last_transp[0], cat[:, :c])
        del out
        cat[:, c:].copy_(encoder1(x))  # encoder1's output lives only until this copy
        return block(cat)

    def _kept_buffers(self, like: torch.Tensor, n: int, c: int, size) -> tuple[torch.Tensor, ...]:
        """This thread's three kept full-resolution buffers (made again for another shape)."""
        shape = (n, c, *size)
        kept = getattr(self._local, "buffers", None)
        if kept is None or tuple(kept[0].shape) != shape or kept[0].dtype != like.dtype:
            self._local.buffers = None  # free the old ones first
            kept = tuple(
                torch.empty(
                    shape,
                    dtype=like.dtype,
                    device=like.device,
                    memory_format=torch.channels_last_3d,
                )
                for _ in range(3)
            )
            self._local.buffers = kept
        return kept

    def _split_weights(self, block, c: int) -> tuple:
        """A residual block's convolutions and their weights for the two halves of its
        concatenated input (the first ``c`` channels, the rest), channels-last; made once."""
        conv1, conv2, conv3 = (_the_conv(getattr(block, f"conv{i}")) for i in (1, 2, 3))
        key = (id(block), conv1.weight.data_ptr(), conv3.weight.data_ptr())
        if key not in self._split_cache:
            cl = torch.channels_last_3d
            w1 = conv1.weight.detach()
            w3 = conv3.weight.detach()[:, :, 0, 0, 0]
            self._split_cache[key] = (
                w1[:, :c].contiguous(memory_format=cl),
                w1[:, c:].contiguous(memory_format=cl),
                w3[:, :c].T.contiguous(),
                w3[:, c:].T.contiguous(),
            )
        return (conv1, conv2, conv3, *self._split_cache[key])

    def _pair_block(self, block, up, other, work, result) -> torch.Tensor:
        """MONAI's ``UnetResBlock`` (1x1x1 projection) on the concatenation ``[up, other]``
        without building it; ``up`` and ``work`` are overwritten, the result is written into
        ``result`` (which may be ``other``) and returned."""
        conv1, conv2, conv3, w1_up, w1_other, w3_up, w3_other = self._split_weights(
            block, up.shape[1]
        )
        # h = lrelu(norm1(conv1([up, other]))), the convolution of each half added into `work`.
        _conv_into(work, up, w1_up, conv1.bias, conv1, accumulate=False)
        _conv_into(work, other, w1_other, None, conv1, accumulate=True)
        _leaky_relu_(block.norm1(work), block.lrelu)
        # residual = norm3(conv3([up, other])), a 1x1x1 projection: written over `up`.
        _project_into(up, other, w3_up, w3_other, conv3.bias)
        residual = block.norm3(up)
        # out = lrelu(norm2(conv2(h)) + residual), written into `result`.
        _conv_into(result, work, conv2.weight, conv2.bias, conv2, accumulate=False)
        block.norm2(result).add_(residual)
        return _leaky_relu_(result, block.lrelu)

    def _up_block(self, dec, inp: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """One of UNETR's lower up-blocks (``UnetrUpBlock``): upsampling, concatenation with
        the skip features and a residual block, computed as :meth:`_pair_block` in three
        buffers (the skip features, which nothing reads afterwards, take the result)."""
        transp = _single_transpose(getattr(dec, "transp_conv", None))
        block = getattr(dec, "conv_block", None)
        n, _, *half = inp.shape
        size = [2 * h for h in half]
        if (
            transp is None
            or not _pair_block_ok(block)
            or not _tensor_ok(skip)
            or tuple(skip.shape) != (n, transp.out_channels, *size)
            or _the_conv(block.conv1).in_channels != 2 * transp.out_channels
        ):
            return dec(inp, skip)
        up = torch.empty(
            skip.shape, dtype=skip.dtype, device=skip.device, memory_format=torch.channels_last_3d
        )
        _upsample_into(inp, transp, up)
        del inp
        work = torch.empty_like(up, memory_format=torch.channels_last_3d)
        return self._pair_block(block, up, skip, work, result=skip)

    def _full_resolution(self, x, out, encoder1, block) -> torch.Tensor:
        n, _, *size = x.shape
        up, work, result = self._kept_buffers(x, n, self._last_transp[0].out_channels, size)
        _upsample_into(out, self._last_transp[0], up)
        del out
        # encoder1's result lands in `result`, which ends as this call's output.
        encoder1.forward_into(x, work, result)
        return self._pair_block(block, up, result, work, result=result)


# Rows of a (voxels, channels) projection formed at once.
_PROJECT_ROWS = 1 << 16


def _the_conv(module: nn.Module) -> nn.Conv3d:
    convs = [m for m in module.modules() if type(m) is nn.Conv3d]
    if len(convs) != 1:
        raise TypeError(f"expected one Conv3d in {type(module).__name__}, found {len(convs)}")
    return convs[0]


def _fused_block(encoder1: nn.Module) -> OneChannelResBlock | None:
    """``encoder1``'s fused residual block: itself, or the layer of MONAI's UnetrBasicBlock."""
    from monai.networks.blocks.unetr_block import UnetrBasicBlock

    if type(encoder1) is UnetrBasicBlock:
        encoder1 = encoder1.layer
    return encoder1 if isinstance(encoder1, OneChannelResBlock) else None


def _tensor_ok(x: torch.Tensor) -> bool:
    """A float32 channels-last tensor on CPU (what the in-place blocks compute on)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.ndim == 5
        and x.is_contiguous(memory_format=torch.channels_last_3d)
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise_")
    )


def _pair_block_ok(block: nn.Module | None) -> bool:
    """Whether :meth:`StreamlinedUNETR._pair_block` can run ``block``: MONAI's residual block
    with a 1x1x1 projection, in-place norms (``fast_norm``) and a leaky ReLU."""
    from monai.networks.blocks.dynunet_block import UnetResBlock

    if not (
        type(block) is UnetResBlock
        and hasattr(block, "conv3")
        and hasattr(block, "norm3")
        and isinstance(block.lrelu, nn.LeakyReLU)
    ):
        return False
    if not all(type(m) is InstanceNormInPlace for m in (block.norm1, block.norm2, block.norm3)):
        return False
    try:
        convs = [_the_conv(getattr(block, f"conv{i}")) for i in (1, 2, 3)]
    except TypeError:
        return False
    return tuple(convs[2].kernel_size) == (1, 1, 1) and all(
        m.groups == 1 and tuple(m.stride) == (1, 1, 1) and not isinstance(m.padding, str)
        for m in convs
    )


def _fused_block_ok(encoder1: OneChannelResBlock, x: torch.Tensor) -> bool:
    """Whether ``encoder1.forward_into`` can run on ``x``."""
    return (
        _tensor_ok(x)
        and type(encoder1.block.norm1) is InstanceNormInPlace
        and isinstance(encoder1.block.lrelu, nn.LeakyReLU)
    )


def _single_transpose(module: nn.Module | None) -> nn.ConvTranspose3d | None:
    """The one transposed convolution of kernel = stride = 2 (no padding) in ``module``."""
    if module is None:
        return None
    found = [m for m in module.modules() if isinstance(m, nn.ConvTranspose3d)]
    if len(found) != 1:
        return None
    t = found[0]
    if (
        tuple(t.kernel_size) != (2, 2, 2)
        or tuple(t.stride) != (2, 2, 2)
        or tuple(t.padding) != (0, 0, 0)
        or tuple(t.output_padding) != (0, 0, 0)
        or t.groups != 1
        or tuple(t.dilation) != (1, 1, 1)
    ):
        return None
    return t


def _conv_into(
    out: torch.Tensor, x: torch.Tensor, weight, bias, conv: nn.Conv3d, accumulate: bool
) -> None:
    """``out (+)= conv(x)`` by oneDNN, written into ``out`` (channels-last, float32)."""
    if not accumulate:
        out.zero_()
    torch.ops.mkldnn._convolution_pointwise_.binary(
        out,
        x,
        weight,
        None if bias is None else bias.detach(),
        list(conv.padding),
        list(conv.stride),
        list(conv.dilation),
        conv.groups,
        "add",
        None,
        None,
        [],
        None,
    )


def _project_into(target: torch.Tensor, other: torch.Tensor, w_target, w_other, bias) -> None:
    """``target <- target @ w_target + other @ w_other (+ bias)`` voxel by voxel, in place:
    a 1x1x1 convolution of the concatenation ``[target, other]`` (both channels-last)."""
    rows = target.permute(0, 2, 3, 4, 1).reshape(-1, target.shape[1])
    other_rows = other.permute(0, 2, 3, 4, 1).reshape(-1, other.shape[1])
    for r0 in range(0, rows.shape[0], _PROJECT_ROWS):
        part = rows[r0 : r0 + _PROJECT_ROWS]
        if bias is None:
            y = torch.mm(part, w_target)
        else:
            y = torch.addmm(bias.detach(), part, w_target)
        y.addmm_(other_rows[r0 : r0 + _PROJECT_ROWS], w_other)
        part.copy_(y)


def _leaky_relu_(x: torch.Tensor, act: nn.LeakyReLU) -> torch.Tensor:
    return F.leaky_relu_(x, act.negative_slope)


def _upsample_into(inp: torch.Tensor, transp: nn.ConvTranspose3d, target: torch.Tensor) -> None:
    """A transposed convolution of kernel = stride = 2 (no padding) written into ``target``
    (a channels-last view): each input voxel times the weight gives its 2 x 2 x 2 outputs.

    One matrix product per output offset (di, dj) along the first two axes gives, for every
    input voxel (i, j, k), the outputs (2i + di, 2j + dj, 2k + dk) for both dk: in
    channels-last order these are one run along k, so each product is copied with a 5-D
    loop (an 8-D permuted copy of all eight offsets at once is several times slower).
    """
    n, cin, i, j, k = inp.shape
    cout = transp.out_channels
    rows = inp.permute(0, 2, 3, 4, 1).reshape(-1, cin)
    # (cin, cout, di, dj, dk) -> (di, dj, cin, dk * cout)
    weight = transp.weight.detach().permute(2, 3, 0, 4, 1).reshape(2, 2, cin, 2 * cout)
    bias = None if transp.bias is None else transp.bias.detach().repeat(2)
    dest = target.permute(0, 2, 3, 4, 1).view(n, i, 2, j, 2, 2 * k, cout)
    for di in range(2):
        for dj in range(2):
            if bias is None:
                y = torch.mm(rows, weight[di, dj])
            else:
                y = torch.addmm(bias, rows, weight[di, dj])
            dest[:, :, di, :, dj].copy_(y.view(n, i, j, 2 * k, cout))


def streamline_unetr(net: nn.Module) -> nn.Module:
    """``net`` wrapped in :class:`StreamlinedUNETR` when it is a UNETR whose last up-block has
    a kernel-2 stride-2 transposed convolution; otherwise ``net`` unchanged."""
    from monai.networks.nets import UNETR

    from .models import PatchUNETR

    if isinstance(net, UNETR):
        parts = (
            net.vit,
            net.encoder1,
            [net.encoder2, net.encoder3, net.encoder4],
            [3, 6, 9],
            [net.decoder5, net.decoder4, net.decoder3, net.decoder2],
        )
    elif isinstance(net, PatchUNETR):
        parts = (net.vit, net.encoder1, net.encoders, net.skip_layers, net.decoders)
    else:
        return net
    transp = _single_transpose(parts[4][-1].transp_conv)
    if transp is None:
        return net
    return StreamlinedUNETR(net, *parts, net.proj_feat, net.out, transp)


def fuse_one_channel_blocks(module: nn.Module) -> int:
    """Replace every ``UnetResBlock`` on a one-channel input by :class:`OneChannelResBlock`.

    Only blocks whose norms were swapped to :class:`InstanceNormAsGroupNorm` (``fast_norm``)
    and whose residual convolution is 1x1x1 with stride 1 qualify. Returns how many.
    """
    from monai.networks.blocks.dynunet_block import UnetResBlock

    fused = 0
    for name, child in module.named_children():
        if isinstance(child, UnetResBlock) and hasattr(child, "conv3"):
            convs = [m for m in child.conv3.modules() if isinstance(m, nn.Conv3d)]
            norms = (child.norm1, child.norm2, getattr(child, "norm3", None))
            if (
                len(convs) == 1
                and convs[0].in_channels == 1
                and tuple(convs[0].kernel_size) == (1, 1, 1)
                and tuple(convs[0].stride) == (1, 1, 1)
                and all(isinstance(m, InstanceNormAsGroupNorm) for m in norms)
            ):
                setattr(module, name, OneChannelResBlock(child, convs[0]))
                fused += 1
                continue
        fused += fuse_one_channel_blocks(child)
    return fused


def _in_place_norm_blocks() -> tuple[type, ...]:
    from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetResBlock

    return (UnetResBlock, UnetBasicBlock)


def swap_instance_norms(module: nn.Module, in_place: bool = False) -> int:
    """Replace every instance norm without running statistics by :class:`InstanceNormAsGroupNorm`.

    With ``in_place``, the norms of MONAI's ``UnetResBlock`` / ``UnetBasicBlock`` become
    :class:`InstanceNormInPlace`: their forward passes feed each norm a fresh convolution
    output and keep no other reference to it. Returns how many layers were replaced. Layers
    with running statistics are left alone: in eval mode they normalise with the stored
    statistics, which group norm would not reproduce.
    """
    swapped = 0
    here_in_place = in_place and isinstance(module, _in_place_norm_blocks())
    for name, child in module.named_children():
        if (
            isinstance(child, nn.modules.instancenorm._InstanceNorm)
            and not child.track_running_stats
        ):
            norm = InstanceNormInPlace if here_in_place else InstanceNormAsGroupNorm
            setattr(module, name, norm(child))
            swapped += 1
        else:
            swapped += swap_instance_norms(child, in_place)
    return swapped


class OneDNNConv3d(nn.Module):
    """A ``Conv3d`` always computed by oneDNN on CPU (float32), output kept channels-last.

    PyTorch's heuristic sends small batches, single-channel inputs and small volumes to its
    generic (im2col) convolution, which also converts channels-last tensors back and forth.
    Same convolution, other kernel: results agree to float rounding.
    """

    def __init__(self, conv: nn.Conv3d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if x.device.type != "cpu" or x.dtype != torch.float32:
            return c(x)
        y = torch.mkldnn_convolution(x, c.weight, c.bias, c.padding, c.stride, c.dilation, c.groups)
        return y.contiguous(memory_format=torch.channels_last_3d)


def route_convolutions_to_onednn(module: nn.Module) -> int:
    """Wrap every zero-padded ``Conv3d`` in :class:`OneDNNConv3d`; returns how many."""
    wrapped = 0
    for name, child in module.named_children():
        if (
            type(child) is nn.Conv3d
            and child.padding_mode == "zeros"
            and not isinstance(child.padding, str)
        ):
            setattr(module, name, OneDNNConv3d(child))
            wrapped += 1
        else:
            wrapped += route_convolutions_to_onednn(child)
    return wrapped


class StrideTwoTranspose(nn.Module):
    """A ``ConvTranspose3d`` of kernel = stride = 2 computed as matrix products into a new
    channels-last tensor (:func:`_upsample_into`), on CPU in float32.

    PyTorch runs these (UNETR's skip projections and up-blocks) through its generic
    ``slow_conv_transpose3d``, whose output is not channels-last, so the next oneDNN
    convolution copies it once more. Same product, other kernel: results agree to float rounding.
    """

    def __init__(self, transp: nn.ConvTranspose3d):
        super().__init__()
        self.transp = transp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.transp
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.ndim != 5:
            return t(x)
        n, _, *size = x.shape
        out = torch.empty(
            (n, t.out_channels, *(2 * s for s in size)),
            dtype=x.dtype,
            device=x.device,
            memory_format=torch.channels_last_3d,
        )
        _upsample_into(x, t, out)
        return out


def route_transposes_to_products(module: nn.Module) -> int:
    """Wrap every kernel-2 stride-2 ``ConvTranspose3d`` in :class:`StrideTwoTranspose`."""
    wrapped = 0
    for name, child in module.named_children():
        if type(child) is nn.ConvTranspose3d and _single_transpose(child) is child:
            setattr(module, name, StrideTwoTranspose(child))
            wrapped += 1
        else:
            wrapped += route_transposes_to_products(child)
    return wrapped


class OneDNNLinear(nn.Module):
    """A ``Linear`` computed by oneDNN on CPU (float32): UNETR's transformer layers.

    PyTorch sends ``Linear`` to MKL's sgemm, which on AMD processors runs a slower code path
    than oneDNN's (measured on a 2-core AMD EPYC, 2 threads, ViT-B shapes of 216 tokens: 150
    against 195 GFLOP/s; the paper UNETR's transformer 0.305 -> 0.238 s per window). Same
    product, other kernel: results agree to float rounding.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lin = self.linear
        if x.device.type != "cpu" or x.dtype != torch.float32 or lin.weight.dtype != x.dtype:
            return lin(x)
        return torch.ops.mkldnn._linear_pointwise(x, lin.weight, lin.bias, "none", [], "")


def route_linears_to_onednn(module: nn.Module) -> int:
    """Wrap every ``Linear`` in :class:`OneDNNLinear`; returns how many (0 where this torch
    build has no oneDNN linear)."""
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return 0
    wrapped = 0
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, OneDNNLinear(child))
            wrapped += 1
        else:
            wrapped += route_linears_to_onednn(child)
    return wrapped


@dataclass(frozen=True)
class LinearHead:
    """A final 1x1x1 convolution as a matrix: logits = ``weight`` @ features + ``bias``."""

    weight: torch.Tensor  # (n_classes, n_features)
    bias: torch.Tensor | None  # (n_classes,)


_HEAD_ATTRIBUTES = ("out", "output_block")  # UNETR.out, DynUNet.output_block


def split_linear_head(net: nn.Module) -> tuple[nn.Module, LinearHead] | None:
    """Detach a network's final 1x1x1 convolution: returns ``(trunk, head)`` or ``None``.

    Recognises MONAI's ``UnetOutBlock`` (UNETR's ``out``, DynUNet's ``output_block``): one
    ``Conv3d`` with a 1x1x1 kernel and stride 1, at most followed by dropout (identity in eval
    mode). The block is replaced by ``nn.Identity`` in ``net`` (modified in place), which then
    returns features. Other networks (MONAI's UNet ends in a 3x3x3 convolution) give ``None``.
    """
    for attr in _HEAD_ATTRIBUTES:
        block = getattr(net, attr, None)
        if not isinstance(block, nn.Module):
            continue
        leaves = [m for m in block.modules() if not list(m.children())]
        convs = [m for m in leaves if isinstance(m, nn.Conv3d)]
        others = [
            m
            for m in leaves
            if not isinstance(m, nn.Conv3d | nn.Dropout | nn.Dropout3d | nn.Identity)
        ]
        if len(convs) != 1 or others:
            return None
        conv = convs[0]
        if (
            tuple(conv.kernel_size) != (1, 1, 1)
            or tuple(conv.stride) != (1, 1, 1)
            or conv.groups != 1
        ):
            return None
        head = LinearHead(
            weight=conv.weight.detach()[:, :, 0, 0, 0].clone(),
            bias=None if conv.bias is None else conv.bias.detach().clone(),
        )
        setattr(net, attr, nn.Identity())
        return net, head
    return None


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("infer.device is 'cuda' but no CUDA device is available")
    return torch.device(device)


@dataclass
class Segmenter:
    """A network ready for inference: ``trunk`` maps windows to logits, or to features when
    ``head`` is set (the detached final 1x1x1 convolution)."""

    trunk: nn.Module
    n_classes: int
    head: LinearHead | None
    device: torch.device
    channels_last: bool


def uses_cpu_fast_path(device: torch.device, settings: InferSettings) -> bool:
    """Whether the network is rewritten for CPU speed (channels-last, oneDNN, in-place blocks):
    on the CPU when ``channels_last`` is on, never on CUDA, which runs the plain modules."""
    return bool(settings.channels_last and device.type == "cpu")


def prepare_network(
    net: nn.Module, n_classes: int, device: torch.device, settings: InferSettings
) -> Segmenter:
    """``net`` in eval mode on ``device`` with the result-preserving speed-ups of ``settings``.

    Modifies ``net`` in place (norm layers swapped, head detached).
    """
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    fast_path = uses_cpu_fast_path(device, settings)
    if settings.fast_norm:
        # The in-place norm is written for channels-last CPU tensors; CUDA gets group norm.
        swapped = swap_instance_norms(net, in_place=fast_path)
        log.debug("instance norm -> group norm in %d layers", swapped)
    head = None
    if settings.split_head:
        split = split_linear_head(net)
        if split is not None:
            net, head = split
            head = LinearHead(
                head.weight.to(device), None if head.bias is None else head.bias.to(device)
            )
    net.to(device)
    channels_last = fast_path
    if channels_last:
        if settings.fast_norm and settings.fuse_blocks:
            log.debug("%d one-channel residual blocks fused", fuse_one_channel_blocks(net))
        if settings.fuse_blocks:
            net = streamline_unetr(net)
        net.to(memory_format=torch.channels_last_3d)
        if torch.backends.mkldnn.is_available():
            log.debug("%d convolutions routed to oneDNN", route_convolutions_to_onednn(net))
            log.debug("%d linear layers routed to oneDNN", route_linears_to_onednn(net))
        if settings.fuse_blocks:
            log.debug("%d transposed convolutions as products", route_transposes_to_products(net))
    return Segmenter(net, int(n_classes), head, device, channels_last)


# ----------------------------------------------------------------------------- streaming
# Bytes of class logits formed at once when features are finalised through the head.
_FINALISE_BYTES = 8 << 20
# Planes of a window added at once to a half-precision accumulator (through float32).
_ADD_PLANES = 8
# Largest sum a half-precision accumulator may have to hold (float16's largest is 65504).
_HALF_LIMIT = 16384.0


class SlabAccumulator:
    """Weighted sums of the voxels still open, ROI-deep along the slab axis.

    ``buffer`` is ``(channels, *spatial)`` with the slab axis ``roi[axis]`` long, starting at
    image plane ``offset``; channels are the logits, or with a ``head`` the features plus a
    last channel holding the weight total. ``finish_before(plane)`` writes the labels of the
    planes in ``[offset, plane)`` and moves the buffer down. With ``channels_last`` the
    channels of a voxel are adjacent in memory, as in a channels-last network's output, so
    adding a window reads and writes both in order (and finalising reads whole voxels).

    ``dtype`` float16 stores the sums in half precision (as nnU-Net v2 does), half the memory:
    each window is added in float32 a few planes at a time and the sum rounded to 11
    significant bits. ``cover`` (the most windows that overlap one voxel) bounds every sum by
    ``cover`` times the largest value seen; before that bound could pass :data:`_HALF_LIMIT`,
    the buffer is widened to float32 (logged), so a sum never overflows.
    """

    def __init__(
        self,
        channels,
        image_size,
        roi,
        axis,
        labels_out,
        device,
        head=None,
        channels_last=False,
        dtype=torch.float32,
        cover=1,
    ):
        self.axis = axis
        self.depth = int(roi[axis])
        self.head = head
        shape = list(image_size)
        shape[axis] = self.depth
        extra = 1 if head is not None else 0
        layout = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.buffer = torch.empty(
            (1, channels + extra, *shape), dtype=dtype, device=device, memory_format=layout
        )[0].zero_()
        self.offset = 0
        self.size = int(image_size[axis])
        self.labels_out = labels_out
        self.cover = max(int(cover), 1)
        self._largest = 1.0  # the weight total is at most `cover` too

    def _rows(self, start: int, stop: int) -> torch.Tensor:
        return self.buffer.narrow(self.axis + 1, start, stop - start)

    def _widen_if_needed(self, values: torch.Tensor) -> None:
        # Over a flat view (a channels-last window's permuted view is contiguous): no copy.
        dense = values.permute(1, 2, 3, 0) if values.stride(0) == 1 else values
        low, high = torch.aminmax(dense.reshape(-1))
        self._largest = max(self._largest, -float(low), float(high))
        if self._largest * self.cover > _HALF_LIMIT:
            log.warning(
                "window values up to %.3g over %d overlapping windows could overflow a "
                "half-precision sum: accumulating in float32 from here on",
                self._largest,
                self.cover,
            )
            self.buffer = self.buffer.float()

    def add(self, corner: Sequence[int], values: torch.Tensor, weight: torch.Tensor | None) -> None:
        """Add one window's ``(channels, *roi)`` values at image corner ``corner``."""
        index = [slice(None)]
        for a, (c, r) in enumerate(zip(corner, values.shape[1:], strict=True)):
            c = c - self.offset if a == self.axis else c
            index.append(slice(c, c + r))
        if self.buffer.dtype != torch.float32:
            self._widen_if_needed(values)
        region = self.buffer[tuple(index)]
        if region.dtype == torch.float32:
            self._accumulate(region, values, weight)
            return
        for a in range(0, values.shape[1], _ADD_PLANES):
            part = region[:, a : a + _ADD_PLANES]
            wide = part.float()
            w = None if weight is None else weight[a : a + _ADD_PLANES]
            self._accumulate(wide, values[:, a : a + _ADD_PLANES], w)
            part.copy_(wide)

    def _accumulate(self, region: torch.Tensor, values: torch.Tensor, weight) -> None:
        target = region if self.head is None else region[:-1]
        if self.head is not None:
            total = region[-1]
            if weight is None:
                total.add_(1.0)
            else:
                total.add_(weight)
        if weight is None:
            target.add_(values)
        else:
            target.addcmul_(values, weight)

    def _labels(self, start: int, stop: int) -> torch.Tensor:
        rows = self._rows(start, stop)
        if self.head is None:
            return torch.argmax(rows, dim=0)
        features, total = rows[:-1], rows[-1].float()
        if features.stride(0) == 1:  # channels last: (voxels, features) rows
            flat = features.permute(1, 2, 3, 0).reshape(-1, features.shape[0]).float()
            # (voxels, classes): torch's argmax over the last dim is the fast one here.
            logits = flat @ self.head.weight.T
            if self.head.bias is not None:
                logits.addr_(total.reshape(-1), self.head.bias)
            return torch.argmax(logits, dim=1).reshape(total.shape)
        flat = features.reshape(features.shape[0], -1).float()
        logits = self.head.weight @ flat
        if self.head.bias is not None:
            logits.addcmul_(self.head.bias[:, None], total.reshape(1, -1))
        return torch.argmax(logits, dim=0).reshape(total.shape)

    def finish_before(self, plane: int) -> None:
        """Turn planes ``[offset, plane)`` into labels and shift the buffer to start at ``plane``."""
        n = plane - self.offset
        if n <= 0:
            return
        per_plane = self.buffer[0].numel() // self.depth
        n_classes = self.head.weight.shape[0] if self.head is not None else 1
        step = (
            max(1, _FINALISE_BYTES // (4 * n_classes * per_plane)) if self.head is not None else n
        )
        index = [slice(None)] * self.labels_out.ndim
        for r0 in range(0, n, step):
            r1 = min(r0 + step, n)
            index[self.axis] = slice(self.offset + r0, self.offset + r1)
            self.labels_out[tuple(index)] = self._labels(r0, r1).to(torch.uint8).cpu().numpy()
        keep = self.depth - n
        # Row by row, front to back: a row's source lies behind its destination, so the copy
        # never overwrites a row it still has to read (no temporary copy of the buffer).
        for r in range(keep):
            self._rows(r, r + 1).copy_(self._rows(r + n, r + n + 1))
        self._rows(keep, self.depth).zero_()
        self.offset = plane

    def finish(self) -> None:
        self.finish_before(min(self.offset + self.depth, self.size))


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _in_order(fn: Callable, items: Sequence, workers: int) -> Iterator[tuple]:
    """``(item, fn(item))`` in order; with ``workers`` > 1, that many items computed at once.

    At most ``workers`` results are in flight, so memory holds ``workers`` windows' outputs.
    """
    if workers <= 1:
        for item in items:
            yield item, fn(item)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="window") as pool:
        pending = deque()
        queue = iter(items)
        for item in queue:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= workers:
                break
        while pending:
            item, future = pending.popleft()
            result = future.result()
            nxt = next(queue, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(fn, nxt)))
            yield item, result
            del result


def sliding_window_labels(
    image: np.ndarray,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    roi: Sequence[int],
    n_classes: int,
    *,
    overlap: float = 0.25,
    mode: str = "constant",
    sigma_scale: float = 0.125,
    sw_batch_size: int = 1,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    amp: bool = False,
    head: LinearHead | None = None,
    slab_axis: int | None = None,
    workers: int = 1,
    accumulate: str = "float32",
) -> np.ndarray:
    """Class labels (uint8, argmax over classes) of ``image`` by sliding-window inference.

    ``image``: ``(x, y, z)`` float array (the network's input intensities). ``predictor`` maps a
    ``(batch, 1, *roi)`` float32 tensor on ``device`` to ``(batch, n_classes, *roi)`` logits, or,
    with ``head``, to the features that ``head`` turns into logits. Windows, their order and
    blending weights are MONAI's for ``roi``, ``overlap``, ``mode`` and ``sigma_scale``; axes
    shorter than the ROI are zero-padded as MONAI does. Returns an array of ``image``'s shape.
    ``slab_axis`` (default: the one with the smallest accumulator) is the streaming axis.
    ``workers`` batches of windows run at once (threads; the sums are still added in order).
    ``accumulate``: the precision of the running sums, ``float32`` (labels as MONAI's up to
    float rounding) or ``float16`` (half the accumulator; see :class:`SlabAccumulator`).
    """
    if n_classes > 256:
        raise ValueError(f"{n_classes} classes do not fit uint8 labels")
    if accumulate not in ACCUMULATE:
        raise ValueError(f"accumulate must be one of {ACCUMULATE}, got {accumulate!r}")
    device = torch.device(device)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be 3-D (x, y, z), got shape {image.shape}")
    roi = tuple(int(r) for r in roi)
    pads = roi_padding(image.shape, roi)
    if any(p for pair in pads for p in pair):
        image = np.pad(image, pads, mode="constant", constant_values=0.0)
    size = image.shape
    corners = window_starts(size, roi, overlap)
    axis = choose_slab_axis(size, roi) if slab_axis is None else int(slab_axis)
    # Stable sort: within a slab, windows keep MONAI's order.
    corners.sort(key=lambda c: c[axis])
    channels = n_classes if head is None else int(head.weight.shape[1])

    source = torch.from_numpy(image)
    labels = np.zeros(size, dtype=np.uint8)
    acc = SlabAccumulator(
        channels,
        size,
        roi,
        axis,
        labels,
        device,
        head,
        channels_last,
        dtype=getattr(torch, accumulate),
        cover=max_cover(size, roi, overlap),
    )
    weight = importance_map(roi, mode, sigma_scale, device)
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    use_amp = amp and device.type == "cuda"

    def run(batch):
        # inference_mode and autocast are per thread: set them where the network runs.
        with torch.inference_mode():
            windows = torch.stack(
                [
                    source[tuple(slice(c, c + r) for c, r in zip(corner, roi, strict=True))]
                    for corner in batch
                ]
            )[:, None]
            windows = windows.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                values = predictor(windows)
            if values.shape[1] != channels or tuple(values.shape[2:]) != roi:
                raise RuntimeError(
                    f"network returned {tuple(values.shape)} for windows of {roi}; expected "
                    f"(batch, {channels}, *{roi})"
                )
            if workers > 1 and values.dtype == torch.float32:
                # A worker may start its next window before this one is added, and a predictor
                # may reuse its output buffer (StreamlinedUNETR): keep a copy.
                return values.clone()
            return values.float()

    with torch.inference_mode():
        for batch, values in _in_order(run, list(_batches(corners, int(sw_batch_size))), workers):
            for corner, window_values in zip(batch, values, strict=True):
                acc.finish_before(corner[axis])
                acc.add(corner, window_values, weight)
            del values
        acc.finish()
    crop = tuple(slice(before, s - after) for (before, after), s in zip(pads, size, strict=True))
    return labels[crop]


def mirrored(predictor: Callable[[torch.Tensor], torch.Tensor], axes: Sequence[int]):
    """``predictor`` averaged over the window and its mirror images along image ``axes``.

    Windows are ``(batch, channels, x, y, z)``; every non-empty subset of ``axes`` is one more
    pass, its output mirrored back before the sum (so the result is aligned with the input).
    Outputs are linear in the average, so features before a split head may be averaged too.
    """
    axes = tuple(int(a) for a in axes)
    if not axes:
        return predictor
    flips = [
        tuple(a + 2 for a, on in zip(axes, bits, strict=True) if on)
        for bits in itertools.product((False, True), repeat=len(axes))
    ][1:]

    def run(windows: torch.Tensor) -> torch.Tensor:
        # A copy: the predictor may reuse its output buffer on the next call.
        total = predictor(windows).clone()
        for dims in flips:
            # torch.flip keeps the input's memory layout (channels-last stays channels-last).
            total.add_(torch.flip(predictor(torch.flip(windows, dims)), dims))
        return total.mul_(1.0 / (len(flips) + 1))

    return run


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
        channels_last=segmenter.channels_last,
        amp=settings.amp,
        head=segmenter.head,
        workers=settings.workers if segmenter.device.type == "cpu" else 1,
        accumulate=settings.accumulate,
    )


def reuse_freed_memory() -> bool:
    """Keep large freed blocks in the process for reuse (glibc ``mallopt``); True if set.

    By default glibc serves every block over 32 MB by ``mmap`` and returns it on ``free``, so
    each full-resolution activation of every window arrives as fresh pages that the kernel must
    fault in and zero: a fifth of a paper-size UNETR's CPU inference time. With ``mmap`` off
    and trimming rare, the blocks freed by one window serve the next. Peak memory is then the
    peak of the live tensors plus fragmentation. Call it after the model is loaded (its
    temporaries are then already returned) and only in a process that does inference.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


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


def max_cover(image_size: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """The most windows that overlap one voxel of an image of ``image_size`` (already padded
    to at least the ROI): per axis, the most window spans over one coordinate, multiplied."""
    steps = scan_interval(image_size, roi, overlap)
    cover = 1
    for size, r, step in zip(image_size, roi, steps, strict=True):
        counts = np.zeros(int(size), dtype=np.int64)
        for start in axis_starts(int(size), int(r), int(step)):
            counts[start : start + int(r)] += 1
        cover *= int(counts.max())
    return cover


def count_windows(image_size: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of windows sliding-window inference runs over an image of ``image_size``."""
    pads = roi_padding(image_size, roi)
    size = [s + a + b for s, (a, b) in zip(image_size, pads, strict=True)]
    steps = scan_interval(size, roi, overlap)
    return math.prod(len(axis_starts(s, r, t)) for s, r, t in zip(size, roi, steps, strict=True))


def synchronise(device: torch.device) -> None:
    """Wait for queued GPU work (so timings measure it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- one scan
def check_native_grid(
    transform: Mapping,
    shape: Sequence[int],
    affine: np.ndarray,
    *,
    subject: str | None = None,
    path=None,
    tolerance_mm: float = 1e-3,
) -> None:
    """Raise unless the ingested image has the grid that ``transform`` (transform.json) records.

    A mismatch means transform.json is stale (made from another version of the scan).
    """
    from .errors import ThighctError
    from .grid import grid_difference

    recorded_shape = tuple(int(s) for s in transform["ingested"]["shape"])
    recorded_affine = np.asarray(transform["ingested"]["affine"], float)
    difference = grid_difference(shape, affine, recorded_shape, recorded_affine, tolerance_mm)
    if difference:
        raise ThighctError(
            f"the ingested image is not the scan its transform.json describes ({difference}, "
            "ingested against recorded); the pre-processing is out of date",
            subject=subject,
            path=path,
            fix="rerun the pre-processing (delete results/preprocessed/<subject>/ and rerun)",
        )


def predict_native(
    image: np.ndarray,
    transform: Mapping,
    segmenter: Segmenter,
    roi: Sequence[int],
    settings: InferSettings,
) -> np.ndarray:
    """Labels (uint8 class ids) of a scan on its ingested grid, ``(x, y, z)``.

    ``image`` is the preprocessed image and ``transform`` its transform.json; the labels
    predicted on the preprocessed grid are mapped back by nearest neighbour
    (:func:`thighct.preprocess.to_native`), background outside the body crop.
    """
    from .preprocess import to_native

    labels = predict_labels(image, segmenter, roi, settings)
    return to_native(labels, transform)


# ----------------------------------------------------------------------------- post-processing
@dataclass(frozen=True)
class PostprocessSettings:
    """``infer.postprocess`` (see workflow/schemas/config.schema.yaml).

    body_only: labels outside the body (air, the table) become background.
    min_component_fraction: per class, connected pieces smaller than this fraction of the
        class's largest piece become background; 0 keeps every piece.
    """

    body_only: bool = True
    min_component_fraction: float = 0.0

    @classmethod
    def from_config(cls, section: Mapping | None) -> PostprocessSettings:
        section = section or {}
        known = asdict(cls())
        settings = cls(**{k: section[k] for k in known if k in section})
        if not 0.0 <= float(settings.min_component_fraction) <= 1.0:
            raise ValueError(
                "infer.postprocess.min_component_fraction must be in [0, 1], "
                f"got {settings.min_component_fraction}"
            )
        return settings


def drop_small_pieces(labels: np.ndarray, fraction: float) -> dict[int, int]:
    """Per class, set pieces (26-connected) under ``fraction`` of its largest piece to 0.

    Works in place on ``labels``; returns ``{class id: voxels dropped}`` for the classes
    that lost any.
    """
    from scipy import ndimage

    dropped: dict[int, int] = {}
    if fraction <= 0:
        return dropped
    structure = np.ones((3, 3, 3), bool)
    for cid, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        view = labels[box]
        pieces, n = ndimage.label(view == cid, structure=structure)
        if n < 2:
            continue
        sizes = np.bincount(pieces.ravel())[1:]
        small = np.flatnonzero(sizes < fraction * sizes.max()) + 1
        if small.size:
            view[np.isin(pieces, small)] = 0
            dropped[cid] = int(sizes[small - 1].sum())
    return dropped


def postprocess_labels(
    labels: np.ndarray,
    hu: np.ndarray,
    affine: np.ndarray,
    body,
    settings: PostprocessSettings,
) -> dict[str, int]:
    """Clean a predicted label map on the scan's grid in place (see :class:`PostprocessSettings`).

    Returns voxel counts: ``outside_body`` (labels cleared outside the body) and
    ``small_pieces`` (labels cleared in small pieces).
    """
    if labels.shape != np.shape(hu):
        raise ValueError(f"labels {labels.shape} and image {np.shape(hu)} differ in shape")
    counts = {"outside_body": 0, "small_pieces": 0}
    if settings.body_only:
        outside = ~body_region(hu, affine, body) & (labels > 0)
        counts["outside_body"] = int(outside.sum())
        labels[outside] = 0
    counts["small_pieces"] = sum(
        drop_small_pieces(labels, float(settings.min_component_fraction)).values()
    )
    return counts
