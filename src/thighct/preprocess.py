"""The paper's pre-processing, as MONAI dictionary transforms, and its exact inverse for labels.

Kim et al. (2024), Pre-processing: intensities scaled from -57..164 HU to 0..1 (clipped), gamma
2, crop to the foreground, resampling to 1.5 x 1.5 x 2.0 mm (bilinear image, nearest labels).
Here every value comes from the config's ``preprocess:`` section.

"Foreground" is the body: voxels above ``body_threshold_hu`` in the largest connected
components, after a small opening that detaches the scanner table. Thresholding the scaled
image (> 0) instead would keep the table and much of the air.

The forward pipeline records in ``transform`` (written as transform.json) the ingested grid, the
crop box and the preprocessed grid; ``to_native`` uses it to bring a label map predicted on the
preprocessed grid back onto the ingested grid, exactly (voxel for voxel) when the spacing is
unchanged. Arrays are indexed ``(x, y, z)``; affines map voxels to RAS+ mm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .body import body_mask

TRANSFORM_VERSION = 1
_SLAB = 32  # native z-slices mapped back per step in to_native


@dataclass(frozen=True)
class PreprocessSettings:
    """The ``preprocess:`` section of the config (see workflow/schemas/config.schema.yaml).

    orientation: voxel axis codes after reorientation. Paper - RAS (MONAI default).
    hu_window: HU mapped to 0 and 1, values outside clipped. Paper - [-57, 164].
    gamma: contrast exponent after scaling (MONAI AdjustContrast). Paper - 2.
    spacing_mm: target voxel size (x, y, z) in mm. Paper - [1.5, 1.5, 2.0].
    body_threshold_hu: voxels above this (HU) may be body. Not stated in the paper.
    body_margin_mm: margin (mm) added around the body box, on each side.
    body_opening_mm: radius (mm) of the opening that detaches table and clothing from the body.
    body_min_component_fraction: components at least this fraction of the largest are kept
        (both legs when separate).
    body_coarse_mm: voxel size (mm) at which the body mask is computed (speed; the box is
        rounded outward to full-resolution voxels).
    """

    orientation: str = "RAS"
    hu_window: tuple[float, float] = (-57.0, 164.0)
    gamma: float = 2.0
    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 2.0)
    body_threshold_hu: float = -500.0
    body_margin_mm: float = 5.0
    body_opening_mm: float = 4.0
    body_min_component_fraction: float = 0.1
    body_coarse_mm: float = 4.0

    @classmethod
    def from_config(cls, section: Mapping) -> PreprocessSettings:
        """Build from the config's ``preprocess:`` mapping (missing keys take the defaults)."""
        default = asdict(cls())
        keys = {k: section[k] for k in default if k in section}
        for k in ("hu_window", "spacing_mm"):
            if k in keys:
                keys[k] = tuple(float(v) for v in keys[k])
        return cls(**keys)


@dataclass
class Preprocessed:
    """Result of ``preprocess_volume``: arrays on the preprocessed grid and the transform record."""

    image: np.ndarray
    affine: np.ndarray
    label: np.ndarray | None
    transform: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------- intensities
def scale_hu(hu: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """HU -> [0, 1]: ``window[0]`` maps to 0, ``window[1]`` to 1, values outside clipped (float32)."""
    lo, hi = (float(v) for v in window)
    return np.clip((np.asarray(hu, np.float32) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def apply_gamma(scaled: np.ndarray, gamma: float) -> np.ndarray:
    """Gamma contrast of a [0, 1] image, as MONAI's AdjustContrast does it (range-normalised)."""
    scaled = np.asarray(scaled, np.float32)
    lo = float(scaled.min())
    rng = float(scaled.max()) - lo
    # MONAI's epsilon, so the figure shows exactly what the network gets.
    return (((scaled - lo) / (rng + 1e-7)) ** gamma * rng + lo).astype(np.float32)


# ------------------------------------------------------------------------------- body crop
def body_box(
    hu: np.ndarray,
    affine: np.ndarray,
    settings: PreprocessSettings,
) -> tuple[list[int], list[int]]:
    """Voxel box ``(start, end)`` (end exclusive) of the body plus margin, clipped to the volume.

    A volume with no voxel above the threshold keeps its full extent.
    """
    from .io import spacing_from_affine

    shape = np.asarray(hu.shape)
    mask, step = body_mask(
        hu,
        affine,
        settings.body_threshold_hu,
        settings.body_opening_mm,
        settings.body_min_component_fraction,
        settings.body_coarse_mm,
    )
    if not mask.any():
        return [0, 0, 0], [int(s) for s in shape]
    idx = np.argwhere(mask)
    step = np.asarray(step)
    # A coarse voxel stands for `step` full-resolution voxels; round the box outward.
    lo = idx.min(axis=0) * step
    hi = (idx.max(axis=0) + 1) * step
    margin = np.ceil(settings.body_margin_mm / np.asarray(spacing_from_affine(affine))).astype(int)
    start = np.maximum(lo - margin, 0)
    end = np.minimum(hi + margin, shape)
    return [int(v) for v in start], [int(v) for v in end]


# ------------------------------------------------------------------------------- pipeline
def _meta_tensor(array: np.ndarray, affine: np.ndarray):
    import torch
    from monai.data import MetaTensor

    return MetaTensor(
        torch.from_numpy(np.ascontiguousarray(array[None], dtype=np.float32)),
        affine=torch.as_tensor(np.asarray(affine, dtype=np.float64)),
    )


def _affine_of(tensor) -> np.ndarray:
    return np.asarray(tensor.affine.detach().cpu().numpy(), dtype=np.float64)


def orientation_transform(settings: PreprocessSettings, keys: Sequence[str]):
    from monai.transforms import Orientationd

    # Explicit labels: RAS+ world (NIfTI), as nibabel; silences MONAI's changed-default warning.
    return Orientationd(
        keys=list(keys), axcodes=settings.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S"))
    )


def pipeline(settings: PreprocessSettings, keys: Sequence[str], start, end):
    """The MONAI transforms after reorientation, in the paper's order: scale, gamma, crop, resample.

    ``keys`` holds ``"image"`` and optionally ``"label"``; intensity steps touch the image only.
    """
    from monai.transforms import (
        AdjustContrastd,
        Compose,
        ScaleIntensityRanged,
        Spacingd,
        SpatialCropd,
    )

    keys = list(keys)
    modes = ["bilinear" if k == "image" else "nearest" for k in keys]
    lo, hi = settings.hu_window
    return Compose(
        [
            ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True),
            AdjustContrastd(keys="image", gamma=settings.gamma),
            SpatialCropd(keys=keys, roi_start=start, roi_end=end),
            Spacingd(
                keys=keys,
                pixdim=settings.spacing_mm,
                mode=modes,
                padding_mode="border",
                dtype=np.float32,
            ),
        ]
    )


def preprocess_volume(
    hu: np.ndarray,
    affine: np.ndarray,
    settings: PreprocessSettings,
    label: np.ndarray | None = None,
) -> Preprocessed:
    """Run the pre-processing on an ingested scan (HU, ``(x, y, z)``) and optionally its label.

    Returns the image (float32, 0..1) and label (uint8) on the preprocessed grid, its affine,
    and the transform record that ``to_native`` inverts (all JSON-serialisable).
    """
    keys = ["image"] if label is None else ["image", "label"]
    data = {"image": _meta_tensor(np.asarray(hu), affine)}
    if label is not None:
        data["label"] = _meta_tensor(np.asarray(label), affine)
    data = orientation_transform(settings, keys)(data)
    oriented_hu = data["image"][0].numpy()
    oriented_affine = _affine_of(data["image"])
    start, end = body_box(oriented_hu, oriented_affine, settings)
    cropped_affine = oriented_affine.copy()
    cropped_affine[:3, 3] = (oriented_affine @ np.array([*start, 1.0]))[:3]
    data = pipeline(settings, keys, start, end)(data)

    image = data["image"][0].numpy().astype(np.float32)
    out_affine = _affine_of(data["image"])
    out_label = None
    if label is not None:
        out_label = np.rint(data["label"][0].numpy()).astype(np.uint8)
    from .io import spacing_from_affine

    transform = {
        "version": TRANSFORM_VERSION,
        "ingested": {"shape": list(np.shape(hu)), "affine": np.asarray(affine, float).tolist()},
        "oriented": {"shape": list(oriented_hu.shape), "affine": oriented_affine.tolist()},
        "crop": {
            "start": start,
            "end": end,
            "shape": [e - s for s, e in zip(start, end, strict=True)],
            "affine": cropped_affine.tolist(),
        },
        "preprocessed": {
            "shape": list(image.shape),
            "affine": out_affine.tolist(),
            "spacing_mm": [float(s) for s in spacing_from_affine(out_affine)],
        },
        "settings": {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()
        },
        "interpolation": {"image": "bilinear", "label": "nearest"},
    }
    return Preprocessed(image=image, affine=out_affine, label=out_label, transform=transform)


def preprocess_label(label: np.ndarray, transform: Mapping) -> np.ndarray:
    """Apply a recorded transform to a label map on the ingested grid (nearest neighbour).

    Gives the same label as ``preprocess_volume(..., label=label)`` for the scan the transform
    was made from; used when labels are processed after the image (rule preprocess_label).
    """
    from monai.transforms import Compose

    settings = PreprocessSettings.from_config(transform["settings"])
    shape, affine = native_grid(transform)
    if tuple(np.shape(label)) != shape:
        raise ValueError(f"label shape {np.shape(label)} is not the ingested image's shape {shape}")
    data = {"label": _meta_tensor(np.asarray(label), affine)}
    data = orientation_transform(settings, ["label"])(data)
    start, end = transform["crop"]["start"], transform["crop"]["end"]
    steps = pipeline(settings, ["label"], start, end).transforms
    geometric = [t for t in steps if "label" in getattr(t, "keys", ())]
    data = Compose(geometric)(data)
    out = np.rint(data["label"][0].numpy()).astype(np.uint8)
    expected = tuple(transform["preprocessed"]["shape"])
    if out.shape != expected or not np.allclose(
        _affine_of(data["label"]), np.asarray(transform["preprocessed"]["affine"]), atol=1e-4
    ):
        raise ValueError(
            f"label grid {out.shape} does not match the preprocessed image grid {expected}; "
            "the label and transform.json come from different scans"
        )
    return out


# ------------------------------------------------------------------------------- inverse
def native_grid(transform: Mapping) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the ingested grid that ``to_native`` returns arrays on."""
    ingested = transform["ingested"]
    return tuple(int(s) for s in ingested["shape"]), np.asarray(ingested["affine"], float)


def to_native(label: np.ndarray, transform: Mapping, *, fill: int = 0) -> np.ndarray:
    """Map a label map from the preprocessed grid back onto the ingested grid (nearest neighbour).

    ``label``: class ids indexed ``(x, y, z)`` on the preprocessed grid (a leading channel axis
    of size 1 is dropped). ``transform``: the dict of transform.json. Each ingested voxel takes
    the label of the preprocessed voxel nearest to its centre in world (RAS+ mm) coordinates;
    voxels outside the preprocessed field of view (cropped away: outside the body) get ``fill``.
    With unchanged spacing this is an exact voxel-for-voxel copy. Returns the ingested shape,
    the input's dtype.
    """
    label = np.asarray(label)
    if label.ndim == 4 and label.shape[0] == 1:
        label = label[0]
    pre_shape = tuple(int(s) for s in transform["preprocessed"]["shape"])
    if label.shape != pre_shape:
        raise ValueError(f"label shape {label.shape} is not the preprocessed shape {pre_shape}")
    shape, native_affine = native_grid(transform)
    pre_affine = np.asarray(transform["preprocessed"]["affine"], float)
    # native voxel -> preprocessed voxel
    matrix = np.linalg.solve(pre_affine, native_affine)

    # Only the native voxels that can land inside the preprocessed grid need work.
    pre_corners = np.array(
        [
            [i, j, k, 1.0]
            for i in (-0.5, pre_shape[0] - 0.5)
            for j in (-0.5, pre_shape[1] - 0.5)
            for k in (-0.5, pre_shape[2] - 0.5)
        ]
    ).T
    back = np.linalg.solve(matrix, pre_corners)[:3]
    lo = np.clip(np.floor(back.min(axis=1)).astype(int) - 1, 0, shape)
    hi = np.clip(np.ceil(back.max(axis=1)).astype(int) + 2, 0, shape)
    out = np.full(shape, fill, dtype=label.dtype)
    if np.any(hi <= lo):
        return out
    linear = matrix[:3, :3]
    if np.all(np.abs(linear - np.diag(np.diag(linear))) < 1e-9):
        return _to_native_axis_aligned(label, out, matrix, lo, hi, pre_shape)
    # Slabs along z bound the memory of the index arrays on oblique (non-diagonal) grids.
    for z0 in range(int(lo[2]), int(hi[2]), _SLAB):
        z1 = min(z0 + _SLAB, int(hi[2]))
        origin = np.array([lo[0], lo[1], z0])
        sub_shape = (int(hi[0] - lo[0]), int(hi[1] - lo[1]), z1 - z0)
        coords = _nearest_indices(linear, linear @ origin + matrix[:3, 3], sub_shape, pre_shape)
        inside = np.ones((1, 1, 1), dtype=bool)
        for axis, c in enumerate(coords):
            inside = inside & (c >= 0) & (c < pre_shape[axis])
        clipped = tuple(np.clip(c, 0, pre_shape[axis] - 1) for axis, c in enumerate(coords))
        values = np.where(inside, label[clipped], fill)
        out[lo[0] : hi[0], lo[1] : hi[1], z0:z1] = np.broadcast_to(values, sub_shape)
    return out


def _to_native_axis_aligned(label, out, matrix, lo, hi, pre_shape) -> np.ndarray:
    """``to_native`` when voxel axes of both grids are parallel: one index vector per axis."""
    offset = matrix[:3, :3] @ lo + matrix[:3, 3]
    index, valid = [], []
    for axis in range(3):
        scale = _snap(matrix[axis, axis], 1e-9)
        c = scale * np.arange(hi[axis] - lo[axis]) + _snap(offset[axis], 1e-6)
        r = _round_index(c, pre_shape[axis])
        index.append(r)
        valid.append((r >= 0) & (r < pre_shape[axis]))
    if not all(v.any() for v in valid):
        return out
    target = np.ix_(*[lo[a] + np.flatnonzero(valid[a]) for a in range(3)])
    out[target] = label[np.ix_(*[index[a][valid[a]] for a in range(3)])]
    return out


def _snap(value, tol):
    """Near-integer values to the integer, so an exact grid shift stays exact despite float error."""
    value = np.asarray(value, dtype=float)
    return np.where(np.abs(value - np.round(value)) < tol, np.round(value), value)


def _round_index(c: np.ndarray, n: int) -> np.ndarray:
    """Nearest voxel index of continuous coordinates ``c`` on an axis of ``n`` voxels.

    floor(c + 0.5): ties go up, the same on every platform. A native centre exactly on the far
    edge of the preprocessed grid (c = n - 0.5) goes to the last voxel: MONAI's Spacing ends
    its grid half a voxel short of the input's last centre when the extent is not a multiple
    of the new spacing.
    """
    r = np.floor(c + 0.5).astype(np.int64)
    return np.where((r == n) & (c <= n - 0.5 + 1e-6), n - 1, r)


def _nearest_indices(linear: np.ndarray, offset: np.ndarray, shape, pre_shape):
    """Rounded preprocessed indices of every voxel of a native sub-grid (broadcast, int64)."""
    linear, offset = _snap(linear, 1e-9), _snap(offset, 1e-6)
    i, j, k = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return [
        _round_index(
            linear[axis, 0] * i + linear[axis, 1] * j + linear[axis, 2] * k + offset[axis],
            pre_shape[axis],
        )
        for axis in range(3)
    ]
