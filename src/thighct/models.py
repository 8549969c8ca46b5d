"""Segmentation networks built from config, and their saved form on disk.

A network is described by one entry of ``config["networks"]``::

    unetr: {arch: unetr, roi: [96, 96, 96], feature_size: 16, hidden_size: 768, ...}
    unet:  {arch: unet,  roi: [96, 96, 96], channels: [16, 32, 64, 128, 256], ...}

``arch`` picks the MONAI class, ``roi`` is the (x, y, z) input patch in voxels (UNETR's
``img_size``; also the crop size for training and the sliding-window size for inference), and
every other key is passed to the MONAI constructor unchanged. Networks take a (batch, 1, x, y, z)
float tensor and return (batch, n_classes, x, y, z) logits.

A saved model (``model.pt``) is described in :mod:`thighct.model_file`: weights plus what using
them needs (label table, network config, pre-processing), so loading it against another label
table or network config is an error rather than a silent mis-labelling.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import torch
from monai.networks.nets import UNETR, DynUNet, UNet

from .errors import ThighctError
from .io_tables import atomic_path
from .labels import LabelTable
from .model_file import check_labels, check_network, normalise_config, read_model_file


class PatchUNETR(torch.nn.Module):
    """MONAI's UNETR with a smaller patch than its fixed 16 voxels (8 or 4; 2 ** k).

    Same parts and wiring as ``monai.networks.nets.UNETR`` (ViT encoder; a convolutional
    block on the input; skip features projected from transformer layers spaced evenly through
    the 12 and brought up to their level by transposed convolutions; a decoder of up-blocks),
    with one level per factor of two in the patch: k - 1 skips from layers ``12 j / k`` (for
    k = 4 these are MONAI's layers 3, 6 and 9, and the blocks are MONAI's own). Used only when
    ``patch_size`` is not 16; at 16 thighct builds MONAI's class itself.

    Why: a patch is the finest detail the transformer sees. On a coarse CPU-scale grid
    (3 x 3 x 5 mm) a 16-voxel patch is 48 x 48 x 80 mm, several muscles; an 8-voxel patch is
    24 x 24 x 40 mm, about the paper's 16 x (1.5 x 1.5 x 2) mm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        img_size,
        patch_size: int = 8,
        feature_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_heads: int = 12,
        proj_type: str = "conv",
        norm_name="instance",
        conv_block: bool = True,
        res_block: bool = True,
        dropout_rate: float = 0.0,
        spatial_dims: int = 3,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        from monai.networks.blocks import (
            UnetOutBlock,
            UnetrBasicBlock,
            UnetrPrUpBlock,
            UnetrUpBlock,
        )
        from monai.networks.nets import ViT

        levels = int(patch_size).bit_length() - 1
        if patch_size < 2 or 2**levels != patch_size:
            raise ValueError(f"patch_size must be a power of two >= 2, got {patch_size}")
        if hidden_size % num_heads:
            raise ValueError("hidden_size should be divisible by num_heads.")
        img_size = tuple(int(s) for s in img_size)
        self.levels = levels
        self.feat_size = tuple(s // patch_size for s in img_size)
        self.hidden_size = hidden_size
        self.vit = ViT(
            in_channels=in_channels,
            img_size=img_size,
            patch_size=(patch_size,) * spatial_dims,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=12,
            num_heads=num_heads,
            proj_type=proj_type,
            classification=False,
            dropout_rate=dropout_rate,
            spatial_dims=spatial_dims,
            qkv_bias=qkv_bias,
        )
        blocks = {"spatial_dims": spatial_dims, "norm_name": norm_name, "res_block": res_block}
        self.encoder1 = UnetrBasicBlock(
            in_channels=in_channels, out_channels=feature_size, kernel_size=3, stride=1, **blocks
        )
        # Skip j (1 .. levels-1) sits at 1 / 2**j of the input: levels - j upsamplings.
        self.skip_layers = [12 * j // levels for j in range(1, levels)]
        self.encoders = torch.nn.ModuleList(
            UnetrPrUpBlock(
                in_channels=hidden_size,
                out_channels=feature_size * 2**j,
                num_layer=levels - j - 1,
                kernel_size=3,
                stride=1,
                upsample_kernel_size=2,
                conv_block=conv_block,
                **blocks,
            )
            for j in range(1, levels)
        )
        self.decoders = torch.nn.ModuleList(
            UnetrUpBlock(
                in_channels=hidden_size if j == levels - 1 else feature_size * 2 ** (j + 1),
                out_channels=feature_size * 2**j,
                kernel_size=3,
                upsample_kernel_size=2,
                **blocks,
            )
            for j in reversed(range(levels))
        )
        self.out = UnetOutBlock(
            spatial_dims=spatial_dims, in_channels=feature_size, out_channels=out_channels
        )

    def proj_feat(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], *self.feat_size, self.hidden_size)
        return x.permute(0, x.ndim - 1, *range(1, x.ndim - 1)).contiguous()

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        x, hidden = self.vit(x_in)
        skips = [self.encoder1(x_in)]
        skips += [
            enc(self.proj_feat(hidden[layer]))
            for enc, layer in zip(self.encoders, self.skip_layers, strict=True)
        ]
        out = self.proj_feat(x)
        for dec, skip in zip(self.decoders, reversed(skips), strict=True):
            out = dec(out, skip)
        return self.out(out)


#: arch name -> MONAI class. Keys are what ``networks.<name>.arch`` may say.
ARCHITECTURES = {"unetr": UNETR, "unet": UNet, "dynunet": DynUNet}
#: Config keys that are not constructor arguments.
META_KEYS = ("arch", "roi", "patch_size")
#: MONAI's UNETR embeds fixed 16-voxel patches (ViT with patch_size 16, as in the paper);
#: smaller patches build :class:`PatchUNETR`, the same network with more levels of tokens.
UNETR_PATCH = 16
UNETR_PATCHES = (16, 8, 4)
def network_roi(net_cfg: dict) -> tuple[int, int, int]:
    """Input patch size (x, y, z) in voxels: crop size, UNETR ``img_size`` and sliding window."""
    roi = net_cfg.get("roi")
    if isinstance(roi, int):
        roi = [roi] * 3
    if roi is None or len(roi) != 3 or any(int(r) <= 0 for r in roi):
        raise ThighctError(
            f"network roi must be three positive voxel counts, got {roi!r}",
            fix="set networks.<name>.roi to e.g. [96, 96, 96] in the config",
        )
    return tuple(int(r) for r in roi)


def _check_divisible(model_name: str, roi: tuple[int, ...], factor: int, why: str) -> None:
    if any(r % factor for r in roi):
        raise ThighctError(
            f"network '{model_name}': roi {list(roi)} is not divisible by {factor} ({why})",
            fix=f"choose networks.{model_name}.roi as multiples of {factor}",
        )


def _constructor_kwargs(model_name: str, arch, net_cfg: dict) -> dict:
    kwargs = {k: v for k, v in net_cfg.items() if k not in META_KEYS}
    allowed = set(inspect.signature(arch.__init__).parameters) - {
        "self",
        "in_channels",
        "out_channels",
        "spatial_dims",
        "img_size",
    }
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ThighctError(
            f"network '{model_name}' ({arch.__name__}) does not take {unknown}",
            fix=f"use only arch, roi and these keys in networks.{model_name}: {sorted(allowed)}",
        )
    # YAML gives lists; MONAI wants tuples for things like norm=("instance", {...}).
    return {
        k: tuple(v) if isinstance(v, list) and k.startswith("norm") else v
        for k, v in kwargs.items()
    }


def build_network(model_name: str, net_cfg: dict, n_classes: int) -> torch.nn.Module:
    """Build the MONAI network that ``networks.<model_name>`` describes.

    Parameters
    ----------
    model_name: the key in ``config["networks"]`` (used in error messages).
    net_cfg: ``{"arch": "unetr" | "unet" | "dynunet", "roi": [x, y, z], **constructor kwargs}``.
    n_classes: output channels, background included (30 in the paper).

    Returns a network mapping (batch, 1, x, y, z) images to (batch, n_classes, x, y, z) logits.
    """
    arch_name = str(net_cfg.get("arch", "")).lower()
    if arch_name not in ARCHITECTURES:
        raise ThighctError(
            f"network '{model_name}' has arch {net_cfg.get('arch')!r}",
            fix=f"set networks.{model_name}.arch to one of {sorted(ARCHITECTURES)}",
        )
    arch = ARCHITECTURES[arch_name]
    roi = network_roi(net_cfg)
    kwargs = _constructor_kwargs(model_name, arch, net_cfg)
    common = {"in_channels": 1, "out_channels": int(n_classes)}
    if arch is UNETR:
        patch = net_cfg.get("patch_size", UNETR_PATCH)
        if patch not in UNETR_PATCHES:
            raise ThighctError(
                f"network '{model_name}': UNETR patch_size must be one of {list(UNETR_PATCHES)}, "
                f"got {patch!r}",
                fix=f"set networks.{model_name}.patch_size to 16 (MONAI's UNETR, the paper's) "
                "or 8 or 4 (the same network with finer patches)",
            )
        _check_divisible(model_name, roi, patch, "UNETR's patch size")
        if patch == UNETR_PATCH:
            return UNETR(img_size=roi, spatial_dims=3, **common, **kwargs)
        return PatchUNETR(img_size=roi, patch_size=patch, spatial_dims=3, **common, **kwargs)
    if arch is UNet:
        factor = 1
        for s in kwargs.get("strides", ()):
            factor *= int(s)
        _check_divisible(model_name, roi, factor, "the product of the U-Net strides")
        return UNet(spatial_dims=3, **common, **kwargs)
    return DynUNet(spatial_dims=3, **common, **kwargs)


def count_parameters(net: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` through :func:`thighct.io_tables.atomic_path`: never a half-written file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_model(path: str | Path, net: torch.nn.Module, meta: dict) -> None:
    """Write weights (state dict on CPU) and ``meta`` (see :func:`thighct.model_file.model_meta`) atomically."""
    for key in ("network", "labels", "n_classes"):
        if key not in meta:
            raise ValueError(f"model meta lacks '{key}'; build it with model_meta()")
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    atomic_torch_save({"state_dict": state, "meta": normalise_config(meta)}, path)


def load_model(
    path: str | Path,
    labels: LabelTable | None = None,
    device: str | torch.device = "cpu",
    net_cfg: dict | None = None,
) -> tuple[torch.nn.Module, dict]:
    """Rebuild the network stored in ``path`` and load its weights; returns (net in eval mode, meta).

    ``labels`` and ``net_cfg``, when given, must match what the model was trained with, otherwise
    a ThighctError names the file and the fix. ``meta["network"]["roi"]`` is the sliding-window
    size to use at inference.
    """
    blob = read_model_file(path)
    meta = blob["meta"]
    if labels is not None:
        check_labels(meta, labels, path)
    if net_cfg is not None:
        check_network(meta, net_cfg, path)
    net = build_network(
        meta.get("model", "model"), copy.deepcopy(meta["network"]), meta["n_classes"]
    )
    try:
        net.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise ThighctError(
            f"weights do not fit the stored network config: {exc}",
            path=path,
            fix="the file is damaged or from another thighct version; retrain (rule train)",
        ) from exc
    net.to(device).eval()
    return net, meta
