"""Placing the atlas in one subject's world, and the scan grid around it.

Each track's keyframes are interpolated to the slices it spans, scaled (skeleton, muscle area
factors, tapering ends), posed (leg spread and rotation, body rotation, table position) and
mirrored to the left side. World coordinates are RAS+ mm, z = 0 at the knee joint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ThighctError
from .anatomy import (
    ANATOMY_FILE,
    ATLAS,
    FAT_ALONG_LEG,
    FAT_PATTERN_LEG,
    FAT_PATTERN_TRUNK,
    U_HIP,
    U_POSE_FULL,
    Track,
    femur_axis,
)
from .design import SubjectDesign
from .shapes import band_sd, ellipse_sd, quad_sd

# Muscle cross-sections are drawn a little larger than they look on their own: neighbours
# overlap, the deepest wins and the fascia trims the outside, so muscles pack like in a thigh.
MUSCLE_INFLATE = 1.35
TAPER_MAX_FRACTION = 0.25


@dataclass
class Placed:
    """A track placed in one subject's world (RAS mm), on the slices ``k0:k1``."""

    track: Track
    side: int
    k0: int
    k1: int
    params: dict  # name -> array over the slices k0:k1 (or (n_slices, n_points, 2) for bands)
    class_id: int = 0
    posed: bool = False  # moves with the leg (pose, resting on the table)


def _interp(keys: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.stack([np.interp(u, keys[:, 0], keys[:, c]) for c in range(1, keys.shape[1])], axis=1)


def _taper(u, u0, u1, taper_u):
    """Ellipsoidal end caps: 1 in the middle, falling to 0 at both ends over taper_u (at most
    a quarter of the muscle's length, so short muscles keep a full-size middle)."""
    length = min(taper_u, TAPER_MAX_FRACTION * (u1 - u0))
    t = np.clip(np.minimum(u - u0, u1 - u) / max(length, 1e-6), 0.0, 1.0)
    return np.sqrt(1.0 - (1.0 - t) ** 2)


class _Pose:
    """Reference side frame -> world (RAS mm) for one subject and one side (or the midline)."""

    def __init__(self, design: SubjectDesign, side: int):
        self.d = design
        self.side = side
        sd = design.sides[0 if side >= 0 else 1]
        self.spread = sd.spread_mm if side else 0.0
        self.rot = math.radians(sd.rotation_deg) if side else 0.0
        self.alpha = math.radians(design.body_rotation_deg)
        self.t = design.position_mm

    def pos_scale(self, u):
        """In-plane scale of offsets from the femur: muscles in the thigh, skeleton in the pelvis."""
        w = np.clip((u - (U_POSE_FULL + 0.1)) / (U_HIP - U_POSE_FULL - 0.1), 0.0, 1.0)
        return self.d.muscle_scale * (1 - w) + self.d.bone_scale * w

    def leg_weight(self, u):
        return np.clip((U_HIP - u) / (U_HIP - U_POSE_FULL), 0.0, 1.0)

    def place(self, x, y, u, how: str):
        """Map reference points (x, y; arrays over slices, or (slices, n)) to world x, y.

        ``how``: "soft" (offsets from the femur scale like muscle spacing), "bone" (skeleton
        scale), "pelvis" (skeleton scale, no leg pose). Returns x, y and the in-plane rotation
        angle (radians) the point's neighbourhood turned by.
        """
        b = self.d.bone_scale
        ushape = u if np.ndim(x) == 1 else u[:, None]
        fx, fy = femur_axis(ushape)
        if how == "soft":
            s = self.pos_scale(ushape)
            x, y = fx * b + (x - fx) * s, fy * b + (y - fy) * s
        else:
            x, y = x * b, y * b
        psi = np.zeros_like(ushape, dtype=float)
        if self.side and how != "pelvis":
            w = self.leg_weight(ushape)
            psi = -self.rot * w  # external rotation turns the front of the leg laterally
            cx, cy = fx * b, fy * b
            c, s_ = np.cos(psi), np.sin(psi)
            x, y = cx + c * (x - cx) - s_ * (y - cy), cy + s_ * (x - cx) + c * (y - cy)
            x = x + self.spread * np.clip((U_HIP - ushape) / U_HIP, 0.0, 1.0)
        if self.side < 0:
            x = -x
            psi = -psi
        ca, sa = math.cos(self.alpha), math.sin(self.alpha)
        xw = ca * x - sa * y + self.t[0]
        yw = sa * x + ca * y + self.t[1]
        return xw, yw, psi + self.alpha


def _mirror_angle(theta, side):
    return theta if side >= 0 else np.pi - theta


def place_tracks(design: SubjectDesign, cfg: dict, z: np.ndarray, labels) -> list[Placed]:
    """Place every atlas track of one subject on the slices at world heights ``z`` (mm).

    The knee joint is at z = 0 and the iliac crest at ``design.length_mm``.
    """
    u = np.asarray(z, dtype=float) / design.length_mm
    taper_u = float(cfg["taper_mm"]) / design.length_mm
    name_to_id = labels.name_to_id
    placed: list[Placed] = []
    unlabelled_id = 200
    for track in ATLAS:
        keys = np.asarray(track.keys, dtype=float)
        keys = keys[np.argsort(keys[:, 0], kind="stable")]
        inside = np.flatnonzero((u >= keys[0, 0]) & (u <= keys[-1, 0]))
        if inside.size == 0:
            continue
        k0, k1 = int(inside[0]), int(inside[-1]) + 1
        uu = u[k0:k1]
        vals = _interp(keys, uu)
        class_id = 0
        if track.layer == "muscle":
            if track.name not in name_to_id:
                raise ThighctError(
                    f"the label table has no class {track.name!r} for the phantom",
                    path=ANATOMY_FILE,
                    fix="use config/labels.tsv, or name the muscle tracks by its classes",
                )
            class_id = name_to_id[track.name]
        elif track.layer == "unlabelled":
            unlabelled_id += 1
            class_id = unlabelled_id
        elif track.layer in ("femur", "iliac"):
            class_id = name_to_id[track.layer]
        elif track.layer == "soft" and track.tissue not in cfg["hu"]:
            raise ThighctError(
                f"the phantom's {track.name} is {track.tissue!r}, a tissue without an HU value",
                path=ANATOMY_FILE,
                fix=f"give it a tissue that config synthetic.hu lists: {', '.join(cfg['hu'])}",
            )
        for side in (+1, -1) if track.side else (0,):
            pose = _Pose(design, side)
            sd = design.sides[0 if side >= 0 else 1]
            p = {}
            if track.kind == "band":
                w = vals[:, 0]
                pts = vals[:, 1:].reshape(len(uu), -1, 2)
                xw, yw, _ = pose.place(pts[..., 0], pts[..., 1], uu, "pelvis")
                p["points"] = np.stack([xw, yw], axis=-1)
                p["w"] = w * design.bone_scale
            else:
                x, y = vals[:, 0], vals[:, 1]
                if track.frame == "femur":
                    fx, fy = femur_axis(uu)
                    x, y = x + fx, y + fy
                if track.layer in ("femur", "bone"):
                    how, r_scale = ("pelvis" if not track.side else "bone"), design.bone_scale
                elif track.layer in ("fat", "soft"):
                    how, r_scale = ("soft" if track.side else "pelvis"), design.bone_scale
                elif track.layer == "fascia":
                    how = "soft" if track.side else "pelvis"
                    r_scale = design.muscle_scale if track.side else design.bone_scale
                else:  # muscles
                    how = "soft"
                    # Labelled muscles take their own area factor; the others the subject's.
                    area = (
                        sd.area[track.name] if track.layer == "muscle" else design.muscle_scale**2
                    )
                    r_scale = (
                        MUSCLE_INFLATE
                        * math.sqrt(area)
                        * _taper(uu, keys[0, 0], keys[-1, 0], taper_u)
                    )
                xw, yw, rot = pose.place(x, y, uu, how)
                p["x"], p["y"] = xw, yw
                if track.kind == "ellipse":
                    p["a"] = np.maximum(vals[:, 2] * r_scale, 0.3)
                    p["b"] = np.maximum(vals[:, 3] * r_scale, 0.3)
                    p["theta"] = _mirror_angle(np.radians(vals[:, 4]), side) + rot
                else:  # quad: lateral, medial, anterior, posterior; the skin lies outside
                    pattern = FAT_PATTERN_LEG if track.side else FAT_PATTERN_TRUNK
                    along = np.asarray(FAT_ALONG_LEG)
                    fat = design.fat_mm * np.interp(uu, along[:, 0], along[:, 1])
                    for i, name in enumerate(("lat", "med", "ant", "post")):
                        p[name] = vals[:, 2 + i] * r_scale
                        p["skin_" + name] = p[name] + fat * pattern[i]
                    p["rot"] = np.broadcast_to(rot, uu.shape).astype(float)
            posed = bool(side) and track.kind != "band"
            placed.append(Placed(track, side, k0, k1, p, class_id, posed))
    return placed


def bbox(pl: Placed, xs, ys, margin):
    p = pl.params
    if pl.track.kind == "band":
        px, py = p["points"][..., 0], p["points"][..., 1]
        w = p["w"][:, None]
        lo_x, hi_x = (px - w).min(), (px + w).max()
        lo_y, hi_y = (py - w).min(), (py + w).max()
    elif pl.track.kind == "ellipse":
        r = np.maximum(p["a"], p["b"])
        lo_x, hi_x = (p["x"] - r).min(), (p["x"] + r).max()
        lo_y, hi_y = (p["y"] - r).min(), (p["y"] + r).max()
    else:
        r = np.maximum.reduce([p["lat"], p["med"], p["ant"], p["post"]])
        lo_x, hi_x = (p["x"] - r).min(), (p["x"] + r).max()
        lo_y, hi_y = (p["y"] - r).min(), (p["y"] + r).max()
    i0 = int(np.searchsorted(xs, lo_x - margin))
    i1 = int(np.searchsorted(xs, hi_x + margin))
    j0 = int(np.searchsorted(ys, lo_y - margin))
    j1 = int(np.searchsorted(ys, hi_y + margin))
    return slice(i0, i1), slice(j0, j1)


def track_sd(pl: Placed, X, Y, ks: slice, skin: bool = False):
    """Signed distance (mm) of a placed track on its slices ``ks`` (indices from ``pl.k0``).

    ``skin``: for a fascia, the distance to the skin outside it instead.
    """
    p = pl.params
    if pl.track.kind == "band":
        return band_sd(X, Y, p["points"][ks], p["w"][ks])

    def g(name):
        return np.asarray(p[name][ks], dtype=np.float32)[None, None, :]

    if pl.track.kind == "ellipse":
        return ellipse_sd(X, Y, g("x"), g("y"), g("a"), g("b"), g("theta"))
    pre = "skin_" if skin else ""
    return quad_sd(
        X,
        Y,
        g("x"),
        g("y"),
        g(pre + "lat"),
        g(pre + "med"),
        g(pre + "ant"),
        g(pre + "post"),
        g("rot"),
        pl.side,
    )


def expected_z_ranges(design: SubjectDesign, labels) -> dict[int, tuple[float, float]]:
    """World z range (mm, knee joint at 0) each foreground class spans in a subject's phantom.

    Muscles shrink to nothing at both ends of their range, over ``taper_mm`` or a quarter of
    their length if that is shorter.
    """
    out: dict[int, tuple[float, float]] = {}
    for track in ATLAS:
        if track.layer not in ("muscle", "femur", "iliac"):
            continue
        cid = labels.id_of(track.name if track.layer == "muscle" else track.layer)
        u = np.asarray(track.keys, dtype=float)[:, 0]
        lo, hi = u.min() * design.length_mm, u.max() * design.length_mm
        if cid in out:
            lo, hi = min(lo, out[cid][0]), max(hi, out[cid][1])
        out[cid] = (float(lo), float(hi))
    return out


# ----------------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class Grid:
    """Voxel centres in RAS+ world mm along x, y, z (increasing), and the voxel size (mm)."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    spacing: tuple

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.x), len(self.y), len(self.z))

    @property
    def affine(self) -> np.ndarray:
        """Voxel (i, j, k) -> RAS+ mm."""
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = (self.x[0], self.y[0], self.z[0])
        return aff


def _axis(lo, hi, step):
    n = max(int(math.ceil((hi - lo) / step)), 1)
    return (lo + step * np.arange(n)).astype(np.float64)


def _skin_extent(placed: list[Placed]):
    """World x-min, x-max, y-min, y-max (mm) of the body outline (from the skin quads)."""
    lo_x = lo_y = np.inf
    hi_x = hi_y = -np.inf
    for pl in placed:
        if pl.track.layer != "fascia":
            continue
        p = pl.params
        r = np.maximum.reduce([p["skin_lat"], p["skin_med"], p["skin_ant"], p["skin_post"]])
        lo_x, hi_x = min(lo_x, (p["x"] - r).min()), max(hi_x, (p["x"] + r).max())
        # Anterior and posterior reach, with the outline's small rotation.
        ant = p["y"] + p["skin_ant"] / np.maximum(np.cos(p["rot"]), 0.5)
        post = p["y"] - p["skin_post"] / np.maximum(np.cos(p["rot"]), 0.5)
        lo_y, hi_y = min(lo_y, post.min()), max(hi_y, ant.max())
    return lo_x, hi_x, lo_y, hi_y


def _rest_legs_on_table(placed: list[Placed], u: np.ndarray) -> None:
    """Lower the thighs (in place) until their back rests at the level of the buttocks.

    A supine patient's thighs lie on the table as the pelvis does; the shift grows from 0 at
    the hip joint to full at mid-thigh, so the femur stays one smooth bone.
    """
    post = np.full(len(u), np.inf)
    lowest = np.inf
    for pl in placed:
        if pl.track.layer != "fascia":
            continue
        p = pl.params
        back = p["y"] - p["skin_post"] / np.maximum(np.cos(p["rot"]), 0.5)
        lowest = min(lowest, back.min())
        if pl.posed and pl.track.name == "leg":
            post[pl.k0 : pl.k1] = np.minimum(post[pl.k0 : pl.k1], back)
    if not np.isfinite(lowest):
        return
    below = (u <= U_POSE_FULL) & np.isfinite(post)
    if not below.any():
        return
    # A straight thigh: the drop that brings its lowest point (not every slice) to the table.
    drop = min(lowest - post[below].min(), 0.0)
    shift = drop * np.clip((U_HIP - u) / (U_HIP - U_POSE_FULL), 0.0, 1.0)
    for pl in placed:
        if pl.posed:
            pl.params["y"] = pl.params["y"] + shift[pl.k0 : pl.k1]


def subject_grid(design: SubjectDesign, cfg: dict, labels) -> tuple[Grid, list[Placed], float]:
    """The subject's scan grid (field of view around the body and table) and placed tracks.

    Returns ``(grid, placed, table_top_y)``; z = 0 is the knee joint.
    """
    sx, sy, sz = (float(v) for v in cfg["spacing_mm"])
    m = design.margins_mm
    z = _axis(-m["below"], design.length_mm + m["above"] + sz, sz)
    z = z[z <= design.length_mm + m["above"]]
    placed = place_tracks(design, cfg, z, labels)
    _rest_legs_on_table(placed, z / design.length_mm)
    lo_x, hi_x, lo_y, hi_y = _skin_extent(placed)
    # The body rests on the table and is flattened against it by press_mm.
    table_top = lo_y + float(cfg["table"]["press_mm"])
    x = _axis(lo_x - m["side"], hi_x + m["side"], sx)
    y = _axis(table_top - m["table"], hi_y + m["anterior"], sy)
    return Grid(x=x, y=y, z=z, spacing=(sx, sy, sz)), placed, table_top
