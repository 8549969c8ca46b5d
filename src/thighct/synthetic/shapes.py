"""Signed distances (mm, negative inside) to the atlas's shapes, and voxel fractions.

Arrays broadcast as voxel x (ni, 1, 1), voxel y (1, nj, 1) and per-slice shape parameters
(1, 1, nk).
"""

from __future__ import annotations

import numpy as np


def ellipse_sd(X, Y, x, y, a, b, theta):
    """First-order signed distance (mm) to an ellipse; X (ni,1,1), Y (1,nj,1), params (1,1,nk)."""
    dx, dy = X - x, Y - y
    c, s = np.cos(theta), np.sin(theta)
    p = dx * c + dy * s + np.float32(1e-3)
    q = dy * c - dx * s
    ia, ib = 1.0 / (a * a), 1.0 / (b * b)
    r = np.sqrt(p * p * ia + q * q * ib)
    g = np.sqrt(p * p * ia * ia + q * q * ib * ib)
    return ((r - 1.0) * r / g).astype(np.float32)


def quad_sd(X, Y, x, y, lat, med, ant, post, rot, side):
    dx, dy = X - x, Y - y
    c, s = np.cos(rot), np.sin(rot)
    p = dx * c + dy * s + np.float32(1e-3)
    q = dy * c - dx * s
    a = np.where(p * (side if side else 1) > 0, lat, med)
    b = np.where(q > 0, ant, post)
    ia, ib = 1.0 / (a * a), 1.0 / (b * b)
    r = np.sqrt(p * p * ia + q * q * ib)
    g = np.sqrt(p * p * ia * ia + q * q * ib * ib)
    return ((r - 1.0) * r / g).astype(np.float32)


def smin(a, b, k):
    """Smooth minimum (polynomial, width k mm): rounds the join of two outlines."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1.0 - h) + a * h - k * h * (1.0 - h)


def fraction_inside(e, h):
    """Fraction of a voxel of width h (mm) inside a surface at signed distance e (mm)."""
    return np.clip(0.5 - e / h, 0.0, 1.0)


def fraction_band(lo, hi, e, h):
    """Fraction of a voxel (centre e, width h) that lies in the band lo <= s <= hi."""
    return np.clip(np.minimum(hi, e + h / 2) - np.maximum(lo, e - h / 2), 0.0, h) / h


def band_sd(X, Y, pts, w):
    """Distance (mm) to a thick polyline minus its half width; pts (nk, n, 2), w (nk,)."""
    pts = np.asarray(pts, dtype=np.float32)
    out = None
    for i in range(pts.shape[1] - 1):
        x0 = pts[:, i, 0][None, None, :]
        y0 = pts[:, i, 1][None, None, :]
        ddx = (pts[:, i + 1, 0] - pts[:, i, 0])[None, None, :]
        ddy = (pts[:, i + 1, 1] - pts[:, i, 1])[None, None, :]
        L2 = np.maximum(ddx * ddx + ddy * ddy, 1e-6)
        t = np.clip(((X - x0) * ddx + (Y - y0) * ddy) / L2, 0.0, 1.0)
        d2 = (X - x0 - t * ddx) ** 2 + (Y - y0 - t * ddy) ** 2
        out = d2 if out is None else np.minimum(out, d2)
    return (np.sqrt(out) - np.asarray(w, dtype=np.float32)[None, None, :]).astype(np.float32)
