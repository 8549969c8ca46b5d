"""Sliding-window inference streamed in slabs along one axis, argmax to labels.

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
weighted sum of their features plus its bias times the weight total
(:func:`split_linear_head`). The accumulator then holds the features (16 channels for the
paper's UNETR instead of 30 logits) and one weight-total channel, and the layer runs once per
voxel when it is finalised instead of once per window.

The running sums are kept in half precision by default (``accumulate``, nnU-Net v2's choice),
which halves the accumulator; a sum that could overflow is widened to float32 on the fly.
``workers`` batches of windows can run at once in threads; their sums are still added in
window order. Arrays are indexed ``(x, y, z)`` (nibabel voxel order).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .settings import ACCUMULATE
from .windows import choose_slab_axis, importance_map, max_cover, roi_padding, window_starts

log = logging.getLogger(__name__)


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
