"""Benchmark: thighct.metrics against MONAI's metric API and DeepMind's surface-distance, side by side.

One synthetic pair of label maps (default 320 × 320 × 240 voxels, spacing 0.8 × 0.8 × 1.5 mm,
29 touching foreground classes inside a thigh-like elliptic cylinder) is scored for all five
metrics (Dice, HD, HD95, ASSD, RAVD) of every class by each method, each in its own
subprocess with one thread (OMP/MKL/torch threads = 1), so time and peak memory are comparable.

Memory: peak resident set size during the call minus the resident size just before it (Linux
``/proc/self/status`` VmHWM after resetting it through ``/proc/self/clear_refs``), so the inputs
(two uint8 maps, 2 × 23 MiB) are not counted; the whole process peak is printed as well.

    python bench/bench_metrics.py                      # thighct, MONAI, surface-distance
    python bench/bench_metrics.py --methods thighct    # one method
    python bench/bench_metrics.py --methods thighct,medpy --shape 160 160 120

``surface-distance`` (pip ``surface-distance==0.1``) and MedPy are optional; a method whose
package is missing is reported as skipped. No assertion: the script prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_CLASSES = 29  # foreground classes of the benchmark volume (touching), as in the issue


# ----------------------------------------------------------------------------------- data
def voronoi_labels(shape, spacing, seeds, radii, centre):
    """Label map: nearest seed (physical distance) inside an elliptic cylinder along z; 0 outside."""
    sx, sy, sz = spacing
    x = (np.arange(shape[0]) * sx)[:, None]
    y = (np.arange(shape[1]) * sy)[None, :]
    inside = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 <= 1.0
    out = np.zeros(shape, dtype=np.uint8)
    for k in range(shape[2]):
        z = k * sz
        d = (x[None] - seeds[:, 0, None, None]) ** 2 + (y[None] - seeds[:, 1, None, None]) ** 2
        d = d + (z - seeds[:, 2, None, None]) ** 2
        out[:, :, k] = np.where(inside, d.argmin(axis=0) + 1, 0)
    return out


def make_pair(shape, spacing, seed):
    """Ground truth and a plausible prediction: seeds jittered by ~2 mm, a few far false blobs."""
    rng = np.random.default_rng(seed)
    ext = np.array(shape) * np.array(spacing)
    centre = ext[:2] / 2
    radii = ext[:2] * 0.45
    ang = rng.uniform(0, 2 * np.pi, N_CLASSES)
    rad = np.sqrt(rng.uniform(0, 1, N_CLASSES)) * 0.85
    seeds = np.stack(
        [
            centre[0] + radii[0] * rad * np.cos(ang),
            centre[1] + radii[1] * rad * np.sin(ang),
            rng.uniform(0.05, 0.95, N_CLASSES) * ext[2],
        ],
        axis=1,
    )
    truth = voronoi_labels(shape, spacing, seeds, radii, centre)
    pred = voronoi_labels(
        shape, spacing, seeds + rng.normal(0, 2.0, seeds.shape), radii * 1.01, centre
    )
    # Segmentation networks leave small islands far from the structure: three such blobs.
    for cls in rng.choice(np.arange(1, N_CLASSES + 1), 3, replace=False):
        c = (rng.uniform(0.1, 0.9, 3) * np.array(shape)).astype(int)
        pred[c[0] - 3 : c[0] + 3, c[1] - 3 : c[1] + 3, c[2] - 2 : c[2] + 2] = cls
    return pred, truth


# ------------------------------------------------------------------------------- methods
def run_thighct(pred, truth, spacing, ids):
    from thighct.metrics import segmentation_metrics

    df = segmentation_metrics(pred, truth, spacing, ids, workers=1)
    return {m: df[m].tolist() for m in ("dice", "hd_mm", "hd95_mm", "assd_mm", "ravd")}


def run_monai(pred, truth, spacing, ids):
    import torch
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
    )

    torch.set_num_threads(1)
    n = int(max(ids)) + 1

    # The API takes one-hot (B, C, X, Y, Z) tensors: the usual AsDiscrete(to_onehot) output.
    def onehot(a):
        return (
            torch.nn.functional.one_hot(torch.as_tensor(a).long(), n)
            .permute(3, 0, 1, 2)[None]
            .float()
        )

    yp, yg = onehot(pred), onehot(truth)
    kw = {"include_background": False}
    dice = compute_dice(yp, yg, **kw)[0]
    hd = compute_hausdorff_distance(yp, yg, spacing=spacing, **kw)[0]
    hd95 = compute_hausdorff_distance(yp, yg, spacing=spacing, percentile=95, **kw)[0]
    assd = compute_average_surface_distance(yp, yg, spacing=spacing, symmetric=True, **kw)[0]
    vp = yp[0, 1:].sum(dim=(1, 2, 3))
    vg = yg[0, 1:].sum(dim=(1, 2, 3))
    ravd = (vp - vg) / vg
    idx = [i - 1 for i in ids]
    return {
        "dice": dice[idx].tolist(),
        "hd_mm": hd[idx].tolist(),
        "hd95_mm": hd95[idx].tolist(),
        "assd_mm": assd[idx].tolist(),
        "ravd": ravd[idx].tolist(),
    }


def run_surface_distance(pred, truth, spacing, ids):
    import surface_distance as sd

    out = {k: [] for k in ("dice", "hd_mm", "hd95_mm", "assd_mm", "ravd")}
    for c in ids:
        g, p = truth == c, pred == c
        d = sd.compute_surface_distances(g, p, spacing)
        gp, pg = sd.compute_average_surface_distance(d)
        ng, npr = d["surfel_areas_gt"].sum(), d["surfel_areas_pred"].sum()
        out["dice"].append(float(sd.compute_dice_coefficient(g, p)))
        out["hd_mm"].append(float(sd.compute_robust_hausdorff(d, 100)))
        out["hd95_mm"].append(float(sd.compute_robust_hausdorff(d, 95)))
        # The package's ASD is per direction; pooled symmetric mean weighted by surfel area.
        out["assd_mm"].append(float((gp * ng + pg * npr) / (ng + npr)))
        out["ravd"].append(float((p.sum() - g.sum()) / g.sum()))
    return out


def run_medpy(pred, truth, spacing, ids):
    from medpy.metric import binary

    out = {k: [] for k in ("dice", "hd_mm", "hd95_mm", "assd_mm", "ravd")}
    for c in ids:
        g, p = truth == c, pred == c
        out["dice"].append(float(binary.dc(p, g)))
        out["hd_mm"].append(float(binary.hd(p, g, voxelspacing=spacing)))
        out["hd95_mm"].append(float(binary.hd95(p, g, voxelspacing=spacing)))
        out["assd_mm"].append(float(binary.assd(p, g, voxelspacing=spacing)))
        out["ravd"].append(float(binary.ravd(p, g)))
    return out


METHODS = {
    "thighct": run_thighct,
    "monai": run_monai,
    "surface-distance": run_surface_distance,
    "medpy": run_medpy,
}
PACKAGES = {"monai": "monai", "surface-distance": "surface_distance", "medpy": "medpy"}


# ------------------------------------------------------------------------------- harness
def _rss_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def worker(method, data_path, spacing, result_path):
    """Run one method in this (fresh) process and write its timing, memory and values."""
    import importlib

    if method in PACKAGES:
        try:
            importlib.import_module(PACKAGES[method])
        except ImportError as exc:
            Path(result_path).write_text(json.dumps({"skipped": str(exc)}))
            return
    data = np.load(data_path)
    pred, truth = data["pred"], data["truth"]
    ids = list(range(1, N_CLASSES + 1))
    if method == "monai":
        import torch  # noqa: F401  (imported before the measurement starts)
    rss_before = _rss_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    t0, c0 = time.perf_counter(), time.process_time()
    values = METHODS[method](pred, truth, spacing, ids)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    hwm = _rss_kib("VmHWM")
    Path(result_path).write_text(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "peak_extra_mib": (hwm - rss_before) / 1024 if reset else float("nan"),
                "peak_process_mib": hwm / 1024,
                "values": values,
            }
        )
    )


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shape", type=int, nargs=3, default=[320, 320, 240])
    ap.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 1.5])
    ap.add_argument("--methods", default="thighct,monai,surface-distance")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--worker", nargs=3, metavar=("METHOD", "DATA", "RESULT"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    spacing = tuple(args.spacing)
    if args.worker:
        worker(args.worker[0], args.worker[1], spacing, args.worker[2])
        return

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; choose from {sorted(METHODS)}")
    t0 = time.perf_counter()
    pred, truth = make_pair(tuple(args.shape), spacing, args.seed)
    print(
        f"volume {tuple(args.shape)} voxels, spacing {spacing} mm, {N_CLASSES} classes, "
        f"made in {time.perf_counter() - t0:.1f} s; one thread per method"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data_path = Path(tmp) / "pair.npz"
        np.savez(data_path, pred=pred, truth=truth)
        for m in methods:
            out = Path(tmp) / f"{m}.json"
            cmd = [
                sys.executable,
                __file__,
                "--spacing",
                *map(str, spacing),
                "--worker",
                m,
                str(data_path),
                str(out),
            ]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0 or not out.exists():
                results[m] = {
                    "skipped": f"failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
                }
            else:
                results[m] = json.loads(out.read_text())

    ref = results.get("thighct", {})
    print(
        f"\n{'method':<18}{'wall (s)':>10}{'× thighct':>11}{'CPU (s)':>10}{'× thighct':>11}"
        f"{'peak extra (MiB)':>18}{'process peak (MiB)':>20}"
    )
    for m, r in results.items():
        if "skipped" in r:
            print(f"{m:<18}skipped: {r['skipped']}")
            continue
        wall = r["seconds"] / ref["seconds"] if "seconds" in ref else float("nan")
        cpu = r["cpu_seconds"] / ref["cpu_seconds"] if "cpu_seconds" in ref else float("nan")
        print(
            f"{m:<18}{r['seconds']:>10.2f}{wall:>11.1f}{r['cpu_seconds']:>10.2f}{cpu:>11.1f}"
            f"{r['peak_extra_mib']:>18.0f}{r['peak_process_mib']:>20.0f}"
        )
    print(
        "(CPU = process time of the call; wall time also counts waiting for a shared machine's cores)"
    )

    if "values" in ref:
        print(
            "\nlargest |difference| from thighct over the 29 classes (MONAI uses the same boundary definition;"
        )
        print(
            "surface-distance puts surfels on voxel corners; MedPy uses the same boundaries, pooled hd95):"
        )
        for m, r in results.items():
            if m == "thighct" or "values" not in r:
                continue
            diffs = {
                k: float(
                    np.nanmax(np.abs(np.asarray(r["values"][k]) - np.asarray(ref["values"][k])))
                )
                for k in ref["values"]
            }
            print(f"  {m:<18}" + "  ".join(f"{k} {v:.2e}" for k, v in diffs.items()))


if __name__ == "__main__":
    main()
