"""The CPU fast path: the network rewritten for speed on CPU, fenced behind ``infer.cpu_fastpath``.

Result-preserving rewrites (same labels up to float rounding): channels-last memory layout with
every 3-D convolution computed by oneDNN (PyTorch sends single-window batches and one-channel
inputs to a slower generic path); the transformer's linear layers by oneDNN too
(:class:`OneDNNLinear`: PyTorch's MKL sgemm takes a slower path on AMD processors); instance
norm computed in place from a row sum and a Gram diagonal; UNETR's one-channel residual block
as a rank-one update (:class:`OneChannelResBlock`); UNETR's up-blocks computed in place
(:class:`StreamlinedUNETR`: no concatenation is built, each residual block runs in three
buffers, the full-resolution ones kept per thread from window to window); kernel-2 stride-2
transposed convolutions as matrix products; and freed memory kept for the next window
(:func:`reuse_freed_memory`, glibc ``mallopt``).

Several of these call private PyTorch operators (``torch.ops.mkldnn._convolution_pointwise_``,
``torch.ops.mkldnn._linear_pointwise``, ``torch.mkldnn_convolution``) and rely on the inner
structure of MONAI's blocks, neither of which is a stable API. So :func:`fastpath_problem`
vets them before any rewrite: the torch version must lie in :data:`WRITTEN_FOR`, each operator
must answer a small probe call (its signature, and its result against the public operator),
and a UNETR's blocks must be the ones MONAI builds. Any failure means the plain MONAI modules
run instead (:func:`thighct.predict.network.prepare_network` logs one warning naming the reason).
"""

from __future__ import annotations

import functools
import logging
import threading

import torch
import torch.nn.functional as F
from torch import nn

from .cpu_kernels import (
    InstanceNormAsGroupNorm,
    StrideTwoTranspose,
    affine_of_norm,
    empty_channels_last,
    leaky_relu_,
    project_into,
    row_moments,
    single_transpose,
    upsample_into,
)

log = logging.getLogger(__name__)

#: The torch versions (major, minor; both ends included) the private operator calls were
#: written and checked for. Widen only after tests/test_predict.py and bench/bench_infer.py
#: pass on the new version.
WRITTEN_FOR = ((2, 13), (2, 13))


def torch_version_problem(version: str | None = None) -> str | None:
    """Why this torch is outside :data:`WRITTEN_FOR` (None when inside)."""
    version = torch.__version__ if version is None else version
    try:
        major_minor = tuple(int(p) for p in version.split("+")[0].split(".")[:2])
    except ValueError:
        return f"torch version {version!r} cannot be read"
    (lo, hi) = WRITTEN_FOR
    if not lo <= major_minor <= hi:
        return (
            f"torch {version} is outside the versions the fast path was written for "
            f"({lo[0]}.{lo[1]} to {hi[0]}.{hi[1]})"
        )
    return None


def _probe_convolution_into() -> None:
    """``_convolution_pointwise_.binary`` adds a convolution into a given buffer."""
    g = torch.Generator().manual_seed(0)
    cl = torch.channels_last_3d
    x = torch.randn(1, 3, 5, 4, 6, generator=g).contiguous(memory_format=cl)
    w = torch.randn(2, 3, 3, 3, 3, generator=g).contiguous(memory_format=cl)
    b = torch.randn(2, generator=g)
    out = torch.ones(1, 2, 5, 4, 6).contiguous(memory_format=cl)
    conv = nn.Conv3d(3, 2, 3, padding=1)
    _conv_into(out, x, w, b, conv, accumulate=True)
    _same(out, 1 + F.conv3d(x, w, b, padding=1), "_convolution_pointwise_.binary")


def _probe_convolution() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, 6, 5, 4, generator=g).contiguous(memory_format=torch.channels_last_3d)
    w = torch.randn(3, 1, 3, 3, 3, generator=g)
    b = torch.randn(3, generator=g)
    got = torch.mkldnn_convolution(x, w, b, (1, 1, 1), (1, 1, 1), (1, 1, 1), 1)
    _same(got, F.conv3d(x, w, b, padding=1), "mkldnn_convolution")


def _probe_linear() -> None:
    g = torch.Generator().manual_seed(2)
    x, w, b = (torch.randn(*s, generator=g) for s in ((2, 5, 8), (3, 8), (3,)))
    got = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    _same(got, F.linear(x, w, b), "_linear_pointwise")


def _same(got: torch.Tensor, want: torch.Tensor, name: str) -> None:
    if tuple(got.shape) != tuple(want.shape) or not torch.allclose(got, want, 1e-4, 1e-4):
        raise ValueError(f"{name} gave another result than the public operator")


PROBES = {
    "torch.ops.mkldnn._convolution_pointwise_.binary": _probe_convolution_into,
    "torch.mkldnn_convolution": _probe_convolution,
    "torch.ops.mkldnn._linear_pointwise": _probe_linear,
}


@functools.cache
def operator_problem() -> str | None:
    """Why a private operator cannot be used (None when every probe passes); once per process."""
    if not torch.backends.mkldnn.is_available():
        return "this torch has no oneDNN (torch.backends.mkldnn)"
    for name, probe in PROBES.items():
        try:
            with torch.inference_mode():
                probe()
        except Exception as exc:  # missing, another signature, or another result
            return f"{name} failed its probe call ({type(exc).__name__}: {exc})"
    return None


def network_problem(net: nn.Module) -> str | None:
    """Why ``net`` is not what the rewrites expect (None when it is): a UNETR whose blocks are
    not the ones MONAI builds. Other networks get only the per-layer rewrites."""
    from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetResBlock
    from monai.networks.blocks.unetr_block import UnetrBasicBlock

    try:
        parts = unetr_parts(net)
    except AttributeError as exc:
        return f"{type(net).__name__} lacks a part of MONAI's UNETR ({exc})"
    if parts is None:
        return None
    vit, encoder1, skips, layers, decoders = parts
    blocks = (UnetResBlock, UnetBasicBlock)
    if type(encoder1) is not UnetrBasicBlock or type(encoder1.layer) not in blocks:
        return f"{type(net).__name__}.encoder1 is a {type(encoder1).__name__}, not MONAI's"
    for i, dec in enumerate(decoders):
        block = getattr(dec, "conv_block", None)
        if type(block) not in blocks or not hasattr(dec, "transp_conv"):
            return f"{type(net).__name__} decoder {i} is not MONAI's UnetrUpBlock"
    if len(skips) != len(layers) or single_transpose(decoders[-1].transp_conv) is None:
        return f"{type(net).__name__}'s skips or last up-sampling are not MONAI's"
    return None


def fastpath_problem(net: nn.Module) -> str | None:
    """Why the fast path may not rewrite ``net`` on this torch (None when it may)."""
    return torch_version_problem() or operator_problem() or network_problem(net)


def rewrite(net: nn.Module) -> nn.Module:
    """``net`` (eval mode, on the CPU, vetted by :func:`fastpath_problem`) rewritten for speed;
    modified in place, and the module to call returned."""
    log.debug("instance norms swapped in %d layers", swap_instance_norms(net, in_place=True))
    log.debug("%d one-channel residual blocks fused", fuse_one_channel_blocks(net))
    net = streamline_unetr(net)
    net.to(memory_format=torch.channels_last_3d)
    log.debug("%d convolutions routed to oneDNN", route_convolutions_to_onednn(net))
    log.debug("%d linear layers routed to oneDNN", route_linears_to_onednn(net))
    log.debug("%d transposed convolutions as products", route_transposes_to_products(net))
    return net


def reuse_freed_memory() -> bool:
    """Keep large freed blocks in the process for reuse (glibc ``mallopt``); True if set.

    By default glibc serves every block over 32 MB by ``mmap`` and returns it on ``free``, so
    each full-resolution activation of every window arrives as fresh pages that the kernel must
    fault in and zero. With ``mmap`` off and trimming rare, the blocks freed by one window serve
    the next; peak memory is then the peak of the live tensors plus fragmentation. Call it after
    the model is loaded and only in a process that does inference. Where the C library is not
    glibc (or refuses), nothing changes and False is returned.
    """
    import ctypes
    import ctypes.util

    try:
        name = ctypes.util.find_library("c")
        mallopt = ctypes.CDLL(name).mallopt if name else None
        if mallopt is None:
            return False
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError, TypeError, ValueError) as exc:  # not glibc
        log.info("freed memory is returned to the system (mallopt unavailable: %s)", exc)
        return False


# ----------------------------------------------------------------------------- the rewrites


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
        leaky_relu_(b.norm1(work), b.lrelu)
        _conv_into(out, work, conv2.weight, conv2.bias, conv2, accumulate=False)
        self._add_residual(x, out)
        return leaky_relu_(out, b.lrelu)

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
        self,
        net: nn.Module,
        vit,
        encoder1,
        skips,
        layers,
        decoders,
        proj_feat,
        out,
        transp,
    ):
        super().__init__()
        self.net = net
        self._parts = (
            vit,
            encoder1,
            list(skips),
            list(layers),
            list(decoders),
            proj_feat,
            out,
        )
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
        cat = empty_channels_last((n, 2 * c, *size), out)
        upsample_into(out, self._last_transp[0], cat[:, :c])
        del out
        cat[:, c:].copy_(encoder1(x))  # encoder1's output lives only until this copy
        return block(cat)

    def _kept_buffers(self, like: torch.Tensor, n: int, c: int, size) -> tuple[torch.Tensor, ...]:
        """This thread's three kept full-resolution buffers (made again for another shape)."""
        shape = (n, c, *size)
        kept = getattr(self._local, "buffers", None)
        if kept is None or tuple(kept[0].shape) != shape or kept[0].dtype != like.dtype:
            self._local.buffers = None  # free the old ones first
            kept = tuple(empty_channels_last(shape, like) for _ in range(3))
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
        leaky_relu_(block.norm1(work), block.lrelu)
        # residual = norm3(conv3([up, other])), a 1x1x1 projection: written over `up`.
        project_into(up, other, w3_up, w3_other, conv3.bias)
        residual = block.norm3(up)
        # out = lrelu(norm2(conv2(h)) + residual), written into `result`.
        _conv_into(result, work, conv2.weight, conv2.bias, conv2, accumulate=False)
        block.norm2(result).add_(residual)
        return leaky_relu_(result, block.lrelu)

    def _up_block(self, dec, inp: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """One of UNETR's lower up-blocks (``UnetrUpBlock``): upsampling, concatenation with
        the skip features and a residual block, computed as :meth:`_pair_block` in three
        buffers (the skip features, which nothing reads afterwards, take the result)."""
        transp = single_transpose(getattr(dec, "transp_conv", None))
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
        up = empty_channels_last(skip.shape, skip)
        upsample_into(inp, transp, up)
        del inp
        work = torch.empty_like(up, memory_format=torch.channels_last_3d)
        return self._pair_block(block, up, skip, work, result=skip)

    def _full_resolution(self, x, out, encoder1, block) -> torch.Tensor:
        n, _, *size = x.shape
        up, work, result = self._kept_buffers(x, n, self._last_transp[0].out_channels, size)
        upsample_into(out, self._last_transp[0], up)
        del out
        # encoder1's result lands in `result`, which ends as this call's output.
        encoder1.forward_into(x, work, result)
        return self._pair_block(block, up, result, work, result=result)


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
    )


def _pair_block_ok(block: nn.Module | None) -> bool:
    """Whether :meth:`StreamlinedUNETR._pair_block` can run ``block``: MONAI's residual block
    with a 1x1x1 projection, in-place norms and a leaky ReLU."""
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


def _conv_into(
    out: torch.Tensor, x: torch.Tensor, weight, bias, conv: nn.Conv3d, accumulate: bool
) -> None:
    """``out (+)= conv(x)`` by oneDNN, written into ``out`` (channels-last, float32)."""
    if not accumulate:
        out.zero_()
    bias = None if bias is None else bias.detach()
    geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
    # (other, input, weight, bias, geometry, binary op, its alpha, unary op, its args, algorithm)
    op = torch.ops.mkldnn._convolution_pointwise_.binary
    op(out, x, weight, bias, *geometry, "add", None, None, [], None)


def unetr_parts(net: nn.Module) -> tuple | None:
    """``(vit, encoder1, skip encoders, their ViT layers, decoders)`` of MONAI's UNETR or
    :class:`thighct.models.PatchUNETR`; None for other networks."""
    from monai.networks.nets import UNETR

    from ..models import PatchUNETR

    if isinstance(net, UNETR):
        return (
            net.vit,
            net.encoder1,
            [net.encoder2, net.encoder3, net.encoder4],
            [3, 6, 9],
            [net.decoder5, net.decoder4, net.decoder3, net.decoder2],
        )
    if isinstance(net, PatchUNETR):
        return (
            net.vit,
            net.encoder1,
            list(net.encoders),
            net.skip_layers,
            list(net.decoders),
        )
    return None


def streamline_unetr(net: nn.Module) -> nn.Module:
    """``net`` wrapped in :class:`StreamlinedUNETR` when it is a UNETR whose last up-block has
    a kernel-2 stride-2 transposed convolution; otherwise ``net`` unchanged."""
    parts = unetr_parts(net)
    transp = None if parts is None else single_transpose(parts[4][-1].transp_conv)
    if transp is None:
        return net
    return StreamlinedUNETR(net, *parts, net.proj_feat, net.out, transp)


def _replace(module: nn.Module, make) -> int:
    """Replace every descendant for which ``make(child, parent)`` gives a module (nothing below
    a replaced one is visited); returns how many."""
    count = 0
    for name, child in module.named_children():
        new = make(child, module)
        if new is not None:
            setattr(module, name, new)
            count += 1
        else:
            count += _replace(child, make)
    return count


def fuse_one_channel_blocks(module: nn.Module) -> int:
    """Replace every ``UnetResBlock`` on a one-channel input by :class:`OneChannelResBlock`.

    Only blocks whose norms were swapped to :class:`InstanceNormAsGroupNorm` and whose residual
    convolution is 1x1x1 with stride 1 qualify. Returns how many.
    """
    from monai.networks.blocks.dynunet_block import UnetResBlock

    def make(child, _):
        if not (isinstance(child, UnetResBlock) and hasattr(child, "conv3")):
            return None
        convs = [m for m in child.conv3.modules() if isinstance(m, nn.Conv3d)]
        norms = (child.norm1, child.norm2, getattr(child, "norm3", None))
        if (
            len(convs) == 1
            and convs[0].in_channels == 1
            and tuple(convs[0].kernel_size) == (1, 1, 1)
            and tuple(convs[0].stride) == (1, 1, 1)
            and all(isinstance(m, InstanceNormAsGroupNorm) for m in norms)
        ):
            return OneChannelResBlock(child, convs[0])
        return None

    return _replace(module, make)


def swap_instance_norms(module: nn.Module, in_place: bool = False) -> int:
    """Replace every instance norm without running statistics by :class:`InstanceNormAsGroupNorm`.

    With ``in_place``, the norms of MONAI's ``UnetResBlock`` / ``UnetBasicBlock`` become
    :class:`InstanceNormInPlace`: their forward passes feed each norm a fresh convolution
    output and keep no other reference to it. Returns how many layers were replaced. Layers
    with running statistics are left alone: in eval mode they normalise with the stored
    statistics, which group norm would not reproduce.
    """
    from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetResBlock

    def make(child, parent):
        if not isinstance(child, nn.modules.instancenorm._InstanceNorm):
            return None
        if child.track_running_stats:
            return None
        here = in_place and isinstance(parent, (UnetResBlock, UnetBasicBlock))
        return (InstanceNormInPlace if here else InstanceNormAsGroupNorm)(child)

    return _replace(module, make)


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

    def make(c, _):
        plain = type(c) is nn.Conv3d and c.padding_mode == "zeros"
        return OneDNNConv3d(c) if plain and not isinstance(c.padding, str) else None

    return _replace(module, make)


def route_transposes_to_products(module: nn.Module) -> int:
    """Wrap every kernel-2 stride-2 ``ConvTranspose3d`` in :class:`StrideTwoTranspose`."""

    def make(t, _):
        single = type(t) is nn.ConvTranspose3d and single_transpose(t) is t
        return StrideTwoTranspose(t) if single else None

    return _replace(module, make)


class OneDNNLinear(nn.Module):
    """A ``Linear`` computed by oneDNN on CPU (float32): UNETR's transformer layers.

    PyTorch sends ``Linear`` to MKL's sgemm, which on AMD processors runs a slower code path
    than oneDNN's (docs/inference.md). Same product, other kernel: results agree to float
    rounding.
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
    """Wrap every ``Linear`` in :class:`OneDNNLinear`; returns how many."""
    return _replace(module, lambda c, _: OneDNNLinear(c) if type(c) is nn.Linear else None)
