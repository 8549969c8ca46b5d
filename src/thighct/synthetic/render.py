"""Rasterising a placed phantom: label map (uint8) and CT (HU) slab by slab.

A voxel belongs to the muscle it lies deepest inside (a power-diagram partition of
overlapping cross-sections, clipped by the deep fascia), with a thin fat plane along each
boundary between two muscles. CT values mix tissue fractions of each voxel (partial volume from
the signed distances), then get texture and noise drawn slice by slice.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..seeds import subject_rng
from .anatomy import FEMUR_SHAFT
from .design import SLAB_STREAM, SubjectDesign
from .placement import bbox, subject_grid, track_sd
from .shapes import fraction_band, fraction_inside, smin

# Smoothness (mm) of the joins between the legs and the trunk outline and between fasciae.
SKIN_JOIN_MM, FASCIA_JOIN_MM = 25.0, 8.0
BIG = np.float32(1e4)  # "far outside" signed distance (mm)


class _SliceNoise:
    """Unit white noise drawn slice by slice from the subject's own random streams.

    Slice ``k`` always gets the same values (texture and image noise), whatever the slab it
    is rendered in, so the phantom does not depend on ``slab_voxels``.
    """

    def __init__(self, seed: int, subject_id: str, shape2d: tuple[int, int]):
        self.seed, self.subject_id, self.shape2d = seed, subject_id, shape2d

    def _draws(self, k: int, n: int) -> list[np.ndarray]:
        rng = subject_rng(self.seed, self.subject_id, SLAB_STREAM + k)
        return [rng.standard_normal(self.shape2d, dtype=np.float32) for _ in range(n)]

    def texture(self, ks: slice, nz: int, sigma_vox) -> np.ndarray:
        """Smooth unit-SD noise on slices ks (Gaussian sigma in voxels per axis)."""
        halo = int(math.ceil(4 * sigma_vox[2]))
        lo, hi = max(0, ks.start - halo), min(nz, ks.stop + halo)
        white = np.stack([self._draws(k, 1)[0] for k in range(lo, hi)], axis=-1)
        smooth = ndimage.gaussian_filter(white, sigma_vox, mode=("wrap", "wrap", "nearest"))
        norm = 1.0
        for sig in sigma_vox:  # SD of filtered unit white noise: the kernel's L2 norm
            if sig > 0:
                r = int(4 * sig + 0.5)
                w = np.exp(-0.5 * (np.arange(-r, r + 1) / sig) ** 2)
                norm *= float(np.sqrt(((w / w.sum()) ** 2).sum()))
        return smooth[:, :, ks.start - lo : ks.stop - lo] / np.float32(norm)

    def image(self, ks: slice) -> np.ndarray:
        """Unit white noise on slices ks (the image noise)."""
        return np.stack([self._draws(k, 2)[1] for k in range(ks.start, ks.stop)], axis=-1)


def _update_muscles(state, e, cid, sl):
    """Keep, per voxel, the deepest muscle (e1, id1) and the deepest *other* muscle (e2)."""
    e1, e2, id1 = state["e1"][sl], state["e2"][sl], state["id1"][sl]
    same = id1 == cid
    better = e < e1
    state["e2"][sl] = np.where(
        better, np.where(same, e2, e1), np.where(same, e2, np.minimum(e2, e))
    )
    state["e1"][sl] = np.minimum(e1, e)
    state["id1"][sl] = np.where(better, np.uint8(cid), id1)


def _render_slab(placed, grid, ks: slice, design, cfg, table_top, ids, noise, want_ct: bool):
    """CT (float32 HU) and label (uint8) of the slices ``ks`` of ``grid``."""
    xs = grid.x.astype(np.float32)
    ys = grid.y.astype(np.float32)
    shape = (len(xs), len(ys), ks.stop - ks.start)
    h = float(np.mean(grid.spacing[:2]))
    plane = float(cfg["fat_plane_mm"])
    st = {
        "e1": np.full(shape, BIG, np.float32),
        "e2": np.full(shape, BIG, np.float32),
        "id1": np.full(shape, 255, np.uint8),
        "fascia": np.full(shape, BIG, np.float32),
        "skin": np.full(shape, BIG, np.float32),
        "fat": np.full(shape, BIG, np.float32),
        "low": np.full(shape, BIG, np.float32),
        "high": np.full(shape, BIG, np.float32),
        "femur": np.full(shape, BIG, np.float32),
        "iliac": np.full(shape, BIG, np.float32),
        "bone": np.full(shape, BIG, np.float32),
    }
    hu = cfg["hu"]
    low_hu = np.zeros(shape, np.float32)
    high_hu = np.zeros(shape, np.float32)
    gas = np.zeros(shape, bool)
    margin = h + plane
    for pl in placed:
        k0, k1 = max(pl.k0, ks.start), min(pl.k1, ks.stop)
        if k0 >= k1:
            continue
        si, sj = bbox(pl, xs, ys, margin + (60.0 if pl.track.layer == "fascia" else 0.0))
        if si.start >= si.stop or sj.start >= sj.stop:
            continue
        local = slice(k0 - pl.k0, k1 - pl.k0)
        sl = (si, sj, slice(k0 - ks.start, k1 - ks.start))
        X = xs[si][:, None, None]
        Y = ys[sj][None, :, None]
        e = track_sd(pl, X, Y, local)
        layer = pl.track.layer
        if layer in ("muscle", "unlabelled"):
            _update_muscles(st, e, pl.class_id, sl)
        elif layer == "fascia":
            st["fascia"][sl] = smin(st["fascia"][sl], e, FASCIA_JOIN_MM)
            st["skin"][sl] = smin(
                st["skin"][sl], track_sd(pl, X, Y, local, skin=True), SKIN_JOIN_MM
            )
        elif layer == "fat":
            st["fat"][sl] = np.minimum(st["fat"][sl], e)
        elif layer == "soft":
            key, hu_arr = (
                ("low", low_hu) if pl.track.tissue in ("viscera", "bladder") else ("high", high_hu)
            )
            nearer = e < st[key][sl]
            st[key][sl] = np.where(nearer, e, st[key][sl])
            hu_arr[sl] = np.where(nearer, np.float32(hu[pl.track.tissue]), hu_arr[sl])
            if pl.track.gas:
                gas[sl] |= nearer & (e < 0)
            elif key == "low":
                gas[sl] &= ~nearer
        else:
            st[layer][sl] = np.minimum(st[layer][sl], e)

    y_col = ys[None, :, None]
    st["skin"] = np.maximum(st["skin"], np.float32(table_top) - y_col)
    e_m = np.maximum(st["e1"], st["fascia"])
    gap = 0.5 * (st["e2"] - st["e1"])
    fp = fraction_band(-plane / 2, plane / 2, gap, h).astype(np.float32)
    label = np.where((e_m < 0) & (fp <= 0.5) & (st["id1"] < 200), st["id1"], 0).astype(np.uint8)
    label[(st["fat"] < 0) | (st["high"] < 0) | (st["bone"] < 0)] = 0
    label[st["iliac"] < 0] = ids["iliac"]
    label[st["femur"] < 0] = ids["femur"]
    if not want_ct:
        return None, label

    tex_cfg = cfg["texture"]
    sig = [tex_cfg["sigma_mm"] / s for s in grid.spacing]
    tex = noise.texture(ks, len(grid.z), sig)
    fat_hu = hu["fat"] + tex_cfg["fat_hu"] * tex
    body = fraction_inside(st["skin"], h)
    ct = hu["air"] + body * (fat_hu - hu["air"])
    ct += fraction_band(-cfg["skin_mm"], 0.0, st["skin"], h) * (hu["skin"] - fat_hu)
    f_low = fraction_inside(st["low"], h)
    low_val = np.where(
        gas & (tex > tex_cfg["gas_threshold"]),
        np.float32(hu["gas"]),
        low_hu + tex_cfg["muscle_hu"] * tex,
    )
    ct += f_low * (low_val - ct)
    f_m = fraction_inside(e_m, h) * (1.0 - fp)
    ct += f_m * (design.muscle_hu + tex_cfg["muscle_hu"] * tex - ct)
    ct += fraction_inside(st["fat"], h) * (fat_hu - ct)
    ct += fraction_inside(st["high"], h) * (high_hu + tex_cfg["muscle_hu"] * tex - ct)

    u = (grid.z[ks] / design.length_mm).astype(np.float32)[None, None, :]
    bone = cfg["bone"]
    shaft_u, shaft_w = zip(*FEMUR_SHAFT, strict=True)
    shaft = np.interp(u, shaft_u, shaft_w).astype(np.float32)
    cortex_femur = bone["cortex_end_mm"] + shaft * (bone["cortex_shaft_mm"] - bone["cortex_end_mm"])
    inner_femur = hu["cancellous"] + shaft * (hu["marrow"] - hu["cancellous"])
    inner_tex = tex_cfg["bone_hu"] * tex
    for key, cortex, inner in (
        ("bone", bone["cortex_end_mm"], hu["cancellous"]),
        ("iliac", bone["cortex_end_mm"], hu["cancellous"]),
        ("femur", cortex_femur, inner_femur),
    ):
        f_b = fraction_inside(st[key], h)
        shell = np.minimum(fraction_band(-cortex, 0.0, st[key], h), f_b)
        ct = ct * (1.0 - f_b) + shell * hu["cortical"] + (f_b - shell) * (inner + inner_tex)

    tab = cfg["table"]
    y = y_col
    plate, core = tab["plate_mm"], tab["core_mm"]
    f_top = fraction_band(table_top - plate, table_top, y, grid.spacing[1])
    f_core = fraction_band(table_top - plate - core, table_top - plate, y, grid.spacing[1])
    f_bot = fraction_band(
        table_top - 2 * plate - core, table_top - plate - core, y, grid.spacing[1]
    )
    free = 1.0 - body
    ct += free * ((f_top + f_bot) * (hu["table"] - ct) + f_core * (hu["table_core"] - ct))

    ct += design.noise_hu * noise.image(ks)
    return ct, label


def render(design: SubjectDesign, cfg: dict, labels, want_ct: bool = True, seed: int = 0):
    """Rasterise one subject on its RAS grid.

    Returns ``(ct, label, grid)``: ct int16 HU (None if ``want_ct`` is False), label uint8
    class ids, both indexed (x, y, z) with x to the right, y anterior, z superior.
    """
    grid, placed, table_top = subject_grid(design, cfg, labels)
    ids = {"femur": labels.id_of("femur"), "iliac": labels.id_of("iliac")}
    nx, ny, nz = grid.shape
    per_slab = max(1, int(cfg["slab_voxels"]) // (nx * ny))
    ct = np.empty(grid.shape, np.int16) if want_ct else None
    label = np.empty(grid.shape, np.uint8)
    noise = _SliceNoise(seed, design.subject_id, (nx, ny))
    for k0 in range(0, nz, per_slab):
        ks = slice(k0, min(nz, k0 + per_slab))
        c, lab = _render_slab(placed, grid, ks, design, cfg, table_top, ids, noise, want_ct)
        label[:, :, ks] = lab
        if want_ct:
            ct[:, :, ks] = np.clip(np.rint(c), hu_min(cfg), hu_max(cfg)).astype(np.int16)
    return ct, label, grid


def hu_min(cfg) -> int:
    return int(cfg["hu"]["clip"][0])


def hu_max(cfg) -> int:
    return int(cfg["hu"]["clip"][1])
