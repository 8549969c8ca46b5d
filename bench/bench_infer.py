"""Benchmark: whole-scan inference, plain MONAI sliding window vs thighct's streamed inference.

Target, on one whole-thigh-sized preprocessed input (300 x 133 x 225 voxels, 1.5 x 1.5
x 2 mm) with the paper-size UNETR (random weights, fixed seed), same ROI and overlap: streamed
inference at least 2x faster than a plain ``monai.inferers.sliding_window_inference`` call
followed by ``argmax``, at most half its peak memory, and the same labels in >= 99.9% of voxels.

Each method runs in its own subprocess (so its peak RSS is its own); runs alternate between the
methods (plain, streamed, plain, streamed, ...) so load from other work on the machine hits both
alike. Printed per method: median wall seconds and CPU seconds (the CPU time is the steadier
figure when other jobs share the cores), peak RSS, the peak above the RSS just before the call
(the inference's own working memory: the model and the torch/MONAI runtime are the same in
both), and the share of voxels whose label equals the plain call's. Random weights give near-tied
logits, so float rounding differences flip a few voxels; trained weights flip fewer. The method
"plain, 1 thread" (not run by default) shows MONAI's own noise floor and how much of a 2-thread
run's time goes to the two threads waiting for each other on a busy machine.

Methods: "streamed, network as is" isolates the streaming (no network changes, float32 sums,
one worker, memory returned to the system as usual); "streamed, 1 worker" is the default: the
network changes of ``thighct.infer.prepare_network`` (in-place up-blocks among them), half-
precision sums and the reuse of freed memory of ``thighct.infer.reuse_freed_memory`` (2 torch
threads on one window); "... float32 sums" and "... memory returned" each undo one of the last
two; "streamed, 2 workers" runs two windows at once, one thread each (a second window's
activations). Timings on a shared machine vary with its load (printed); compare methods within
one run.

    python bench/bench_infer.py [--threads 2] [--repeat 2] [--shape 300 133 225] [--net paper]
    python bench/bench_infer.py --net tiny --shape 120 60 90      # quick check (seconds)
    python bench/bench_infer.py --device cuda --methods "streamed, 1 worker"   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NETWORKS = {
    # The paper's UNETR (Kim et al. 2024: MONAI UNETR, 96^3 crops of 16^3 patches, ViT-base).
    "paper": {
        "arch": "unetr",
        "roi": [96, 96, 96],
        "feature_size": 16,
        "hidden_size": 768,
        "mlp_dim": 3072,
        "num_heads": 12,
        "norm_name": "instance",
        "res_block": True,
        "dropout_rate": 0.0,
    },
    # The default config's CPU-scale UNETR.
    "tiny": {
        "arch": "unetr",
        "roi": [48, 48, 48],
        "feature_size": 8,
        "hidden_size": 96,
        "mlp_dim": 192,
        "num_heads": 4,
        "norm_name": "instance",
        "res_block": True,
        "dropout_rate": 0.0,
    },
}
N_CLASSES = 30

# name -> thighct.infer.InferSettings overrides; "plain" entries are MONAI calls (threads given).
METHODS = {
    "plain": {"plain": True},
    # The noise floor of "same labels": MONAI itself on one thread instead of two.
    "plain, 1 thread": {"plain": True, "threads": 1},
    "streamed, network as is": {
        "sw_batch_size": 1,
        "channels_last": False,
        "fast_norm": False,
        "split_head": False,
        "fuse_blocks": False,
        "reuse_memory": False,
        "workers": 1,
        "accumulate": "float32",
    },
    "streamed, 1 worker": {"sw_batch_size": 1, "workers": 1},
    "streamed, 1 worker, float32 sums": {"sw_batch_size": 1, "workers": 1, "accumulate": "float32"},
    "streamed, 1 worker, memory returned": {
        "sw_batch_size": 1,
        "workers": 1,
        "reuse_memory": False,
    },
    "streamed, 2 workers": {"sw_batch_size": 1, "workers": 2},
}


def thigh_image(shape, seed):
    """A preprocessed-looking input (0..1): two thighs with a bone and fat rim, plus noise."""
    x = np.linspace(-1, 1, shape[0])[:, None]
    y = np.linspace(-1, 1, shape[1])[None, :]
    img = np.zeros(shape[:2], np.float32)
    for cx in (-0.45, 0.45):
        r2 = ((x - cx) / 0.42) ** 2 + (y / 0.9) ** 2
        img[r2 < 1] = 0.15
        img[r2 < 0.8] = 0.6
        img[r2 < 0.05] = 1.0
    rng = np.random.default_rng(seed)
    vol = np.repeat(img[:, :, None], shape[2], axis=2)
    vol += rng.normal(0, 0.05, shape).astype(np.float32)
    return np.clip(vol, 0, 1).astype(np.float32)


def rss_now_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(args) -> None:
    import torch

    from thighct import infer
    from thighct.models import build_network

    overrides = dict(METHODS[args.worker])
    plain = overrides.pop("plain", False)
    threads = overrides.pop("threads", args.threads)
    if plain:
        # MONAI's call is one loop: all the threads go to torch (no window workers).
        overrides["workers"] = 1
    device = torch.device(args.device)
    settings = infer.InferSettings(overlap=args.overlap, device=args.device, **overrides)
    settings = infer.use_cpu_threads(settings, threads, device)
    cfg = NETWORKS[args.net]
    torch.manual_seed(args.seed)
    net = build_network("bench", dict(cfg), N_CLASSES).eval()
    roi = tuple(cfg["roi"])
    image = thigh_image(tuple(args.shape), args.seed)
    if plain:
        from monai.inferers import sliding_window_inference

        net.to(device)

        def run():
            with torch.no_grad():
                x = torch.from_numpy(image)[None, None].to(device)
                out = sliding_window_inference(
                    x, roi, args.plain_sw_batch_size, net, overlap=args.overlap
                )
                return torch.argmax(out, dim=1)[0].to(torch.uint8).cpu().numpy()
    else:
        seg = infer.prepare_network(net, N_CLASSES, device, settings)

        def run():
            return infer.predict_labels(image, seg, roi, settings)

    if not plain and settings.reuse_memory and device.type == "cpu":
        infer.reuse_freed_memory()
    if device.type == "cuda":
        # A cohort's predict job is warm after its first scan: time a second call.
        run()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = rss_now_mb()
    c0, t0 = time.process_time(), time.perf_counter()
    labels = run()
    infer.synchronise(device)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(args.out, labels)
    out = {"seconds": seconds, "cpu_s": cpu, "peak_mb": peak, "before_mb": before}
    out["torch_threads"] = torch.get_num_threads()
    if device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(out))


def run_worker(method, args, out) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--out", str(out)]
    cmd += ["--threads", str(args.threads), "--net", args.net, "--seed", str(args.seed)]
    cmd += ["--overlap", str(args.overlap), "--plain-sw-batch-size", str(args.plain_sw_batch_size)]
    cmd += ["--shape", *map(str, args.shape), "--device", args.device]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"worker {method!r} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="runs per method (median reported)")
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 133, 225])
    parser.add_argument("--net", choices=sorted(NETWORKS), default="paper")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--plain-sw-batch-size", type=int, default=1, help="MONAI's default: 1")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[m for m in METHODS if m != "plain, 1 thread"],
        choices=list(METHODS),
        help="'plain' always runs (the reference)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: every method on the GPU, timed on a second (warm) call; GPU peak printed",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from thighct.infer import count_windows

    methods = ["plain"] + [m for m in args.methods if m != "plain"]
    roi = NETWORKS[args.net]["roi"]
    n_win = count_windows(args.shape, roi, args.overlap)
    print(
        f"input {tuple(args.shape)} voxels, {args.net} UNETR (roi {roi}), {N_CLASSES} classes, "
        f"overlap {args.overlap}, {n_win} windows, threads {args.threads}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
    )
    results: dict[str, list[dict]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for m in methods:
                out = Path(tmp) / f"{len(results[m])}_{methods.index(m)}.npy"
                res = run_worker(m, args, out)
                res["labels"] = out
                results[m].append(res)
                gpu = f"  GPU peak {res['gpu_peak_mb']:6.0f} MB" if "gpu_peak_mb" in res else ""
                print(
                    f"  run {r + 1} {m:26s} {res['seconds']:7.1f} s  cpu {res['cpu_s']:7.1f} s  "
                    f"peak {res['peak_mb']:6.0f} MB  torch threads {res['torch_threads']}{gpu}",
                    flush=True,
                )
        reference = np.load(results["plain"][0]["labels"])
        base = results["plain"]
        base_s = statistics.median(x["seconds"] for x in base)
        base_cpu = statistics.median(x["cpu_s"] for x in base)
        base_peak = statistics.median(x["peak_mb"] for x in base)
        base_work = statistics.median(x["peak_mb"] - x["before_mb"] for x in base)
        print(f"load average {os.getloadavg()[0]:.1f} at end")
        print(
            f"{'method':26s} {'seconds':>8s} {'speed-up':>9s} {'CPU s':>7s} {'speed-up':>9s} "
            f"{'peak MB':>8s} {'x plain':>8s} {'work MB':>8s} {'x plain':>8s} {'same labels':>12s}"
        )
        for m in methods:
            runs = results[m]
            s = statistics.median(x["seconds"] for x in runs)
            cpu = statistics.median(x["cpu_s"] for x in runs)
            peak = statistics.median(x["peak_mb"] for x in runs)
            work = statistics.median(x["peak_mb"] - x["before_mb"] for x in runs)
            same = float((np.load(runs[0]["labels"]) == reference).mean())
            gpu = ""
            if "gpu_peak_mb" in runs[0]:
                gpu = f"  GPU peak {statistics.median(x['gpu_peak_mb'] for x in runs):.0f} MB"
            print(
                f"{m:26s} {s:8.1f} {base_s / s:8.2f}x {cpu:7.1f} {base_cpu / cpu:8.2f}x "
                f"{peak:8.0f} {peak / base_peak:8.2f} "
                f"{work:8.0f} {work / base_work:8.2f} {100 * same:11.3f}%{gpu}"
            )


if __name__ == "__main__":
    main()
