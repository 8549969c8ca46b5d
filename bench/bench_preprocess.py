"""Benchmark: pre-processing one default-scale and one paper-scale scan on 2 cores.

Goals (issue 4): default scale <= 5 s, paper scale <= 30 s for the preprocess rule's work
(image and label through orientation, window, gamma, body crop, resampling), plus the time of
``to_native`` (the inverse used after inference). Prints one line per scale.

    python bench/bench_preprocess.py [--threads 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch

from thighct import preprocess as pp

# (name, shape (x, y, z) voxels, voxel size mm, target spacing mm)
SCALES = [
    ("default (phantom grid)", (136, 104, 90), (3.0, 3.0, 5.0), (3.0, 3.0, 5.0)),
    ("paper (clinical CT)", (512, 512, 450), (0.8, 0.8, 1.0), (1.5, 1.5, 2.0)),
]


def thigh_scan(shape, spacing):
    """Two thighs on a table in air: HU (int16) and a 4-class label, indexed (x, y, z)."""
    sx, sy, _ = spacing
    x = (np.arange(shape[0]) * sx - shape[0] * sx / 2)[:, None]
    y = (np.arange(shape[1]) * sy - shape[1] * sy / 2)[None, :]
    hu2d = np.full(shape[:2], -1000, dtype=np.int16)
    lab2d = np.zeros(shape[:2], dtype=np.uint8)
    for cx in (-0.2 * shape[0] * sx, 0.2 * shape[0] * sx):
        r2 = ((x - cx) / 80.0) ** 2 + (y / 90.0) ** 2
        hu2d[r2 < 1] = -100
        hu2d[r2 < 0.7] = 50
        lab2d[r2 < 0.7] = 3
        hu2d[r2 < 0.08] = 700
        lab2d[r2 < 0.08] = 28
    hu2d[:, : int(0.08 * shape[1])] = np.where(
        np.arange(int(0.08 * shape[1])) > int(0.05 * shape[1]), 100, -1000
    )[None, :]
    noise = np.random.default_rng(0).normal(0, 15, shape).astype(np.float32)
    hu = (hu2d[:, :, None] + noise).astype(np.int16)
    label = np.broadcast_to(lab2d[:, :, None], shape).copy()
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-shape[0] * spacing[0] / 2, -shape[1] * spacing[1] / 2, -800.0]
    return hu, affine, label


def best_of(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pp.preprocess_volume(
        *thigh_scan((40, 40, 10), (3.0, 3.0, 5.0))[:2], pp.PreprocessSettings()
    )  # imports
    print(f"threads={args.threads} repeat={args.repeat} (best time)")
    print(
        f"{'scale':26s} {'input':>16s} {'output':>16s} {'preprocess s':>13s} {'to_native s':>12s}"
    )
    for name, shape, spacing, target in SCALES:
        hu, affine, label = thigh_scan(shape, spacing)
        settings = pp.PreprocessSettings(spacing_mm=target)
        t_pre, result = best_of(
            partial(pp.preprocess_volume, hu, affine, settings, label), args.repeat
        )
        t_back, _ = best_of(partial(pp.to_native, result.label, result.transform), args.repeat)
        print(
            f"{name:26s} {'x'.join(map(str, shape)):>16s} {'x'.join(map(str, result.image.shape)):>16s} "
            f"{t_pre:13.2f} {t_back:12.2f}"
        )


if __name__ == "__main__":
    main()
