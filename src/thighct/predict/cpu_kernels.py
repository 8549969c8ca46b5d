"""Building blocks of the CPU fast path that need only public PyTorch operators.

Tensor math on channels-last CPU tensors (float32): instance-norm statistics from a row sum and
a Gram diagonal, a kernel-2 stride-2 transposed convolution as matrix products, a 1x1x1
convolution of a concatenation without building it. :mod:`thighct.predict.cpu_fastpath` uses
them; they depend on no torch version's private operators and no MONAI block's inner structure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


# Rows of a (voxels, channels) projection formed at once.
_PROJECT_ROWS = 1 << 16


def empty_channels_last(shape, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised channels-last tensor of ``shape`` with ``like``'s dtype and device."""
    return torch.empty(
        shape,
        dtype=like.dtype,
        device=like.device,
        memory_format=torch.channels_last_3d,
    )


def single_transpose(module: nn.Module | None) -> nn.ConvTranspose3d | None:
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


def project_into(target: torch.Tensor, other: torch.Tensor, w_target, w_other, bias) -> None:
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


def leaky_relu_(x: torch.Tensor, act: nn.LeakyReLU) -> torch.Tensor:
    return F.leaky_relu_(x, act.negative_slope)


def upsample_into(inp: torch.Tensor, transp: nn.ConvTranspose3d, target: torch.Tensor) -> None:
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


class StrideTwoTranspose(nn.Module):
    """A ``ConvTranspose3d`` of kernel = stride = 2 computed as matrix products into a new
    channels-last tensor (:func:`upsample_into`), on CPU in float32.

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
        out = empty_channels_last((n, t.out_channels, *(2 * s for s in size)), x)
        upsample_into(x, t, out)
        return out
