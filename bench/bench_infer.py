"""Benchmark: whole-scan inference, a plain MONAI sliding window vs thighct's streamed inference.

On one preprocessed-looking input (default 300 x 133 x 225 voxels, a whole thigh at 1.5 x 1.5
x 2 mm) with a network of random weights and a fixed seed, same ROI and overlap, per method:
seconds per scan, CPU seconds, peak RSS, the peak above the RSS just before the call (the
inference's own working memory) and the share of voxels whose label equals the plain call's.

Methods:
- ``plain``: ``monai.inferers.sliding_window_inference`` and an argmax (the reference);
- ``streamed``: thighct's streamed windows with MONAI's modules (``infer.cpu_fastpath: false``);
- ``fastpath``: the same with the CPU fast path (``thighct.predict.cpu_fastpath``, the default);
- ``fastpath, 2 workers``: two windows at once, one thread each;
- ``compile``: the streamed windows with MONAI's modules compiled by ``torch.compile``
  (inductor, weights frozen as constants, eval mode, inference mode): PyTorch's supported route
  to fused oneDNN kernels. Its compile time (the first window) is timed apart, not in s/scan,
  with an empty inductor cache (as a predict job on a fresh machine).

Each method runs in its own subprocess (so its peak RSS is its own); runs alternate between the
methods so load from other work on the machine hits them alike. Random weights give near-tied
logits, so float rounding flips a few voxels; trained weights flip fewer.

    python bench/bench_infer.py [--threads 2] [--repeat 2] [--shape 300 133 225] [--net paper]
    python bench/bench_infer.py --net default-unetr default-unet --shape 120 80 96 --markdown
    python bench/bench_infer.py --device cuda --methods fastpath   # on a GPU (plain modules)
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlog import command_line, load_config, machine_line, write_section  # noqa: E402

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


def network_config(name: str) -> dict:
    """A bench network (NETWORKS) or the default config's (``default-<network name>``)."""
    if name.startswith("default-"):
        return dict(load_config("config.yaml")["networks"][name.removeprefix("default-")])
    return dict(NETWORKS[name])


NET_CHOICES = sorted(NETWORKS) + ["default-unetr", "default-unet"]

# name -> thighct.predict.InferSettings overrides; "plain" entries are MONAI calls (threads given).
METHODS = {
    "plain": {"plain": True},
    # The noise floor of "same labels": MONAI itself on one thread instead of two.
    "plain, 1 thread": {"plain": True, "threads": 1},
    "streamed": {"cpu_fastpath": False},
    "fastpath": {"cpu_fastpath": True},
    "fastpath, float32 sums": {"cpu_fastpath": True, "accumulate": "float32"},
    "fastpath, 2 workers": {"cpu_fastpath": True, "workers": 2},
    "compile": {"cpu_fastpath": False, "compile": True},
}
DEFAULT_METHODS = ["plain", "streamed", "fastpath", "compile"]


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


def compiled(module, example):
    """``module`` compiled by inductor with its weights frozen (constant-folded, prepacked for
    oneDNN), and the seconds the first call (the compilation) took on ``example``."""
    import torch
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    fn = torch.compile(module, backend="inductor", dynamic=False)
    t0 = time.perf_counter()
    with torch.inference_mode():
        fn(example)
    return fn, time.perf_counter() - t0


def worker(args) -> None:
    import torch

    from thighct import predict
    from thighct.models import build_network

    overrides = dict(METHODS[args.worker])
    plain = overrides.pop("plain", False)
    compile_net = overrides.pop("compile", False)
    threads = overrides.pop("threads", args.threads)
    if plain:
        # MONAI's call is one loop: all the threads go to torch (no window workers).
        overrides["workers"] = 1
    device = torch.device(args.device)
    settings = predict.InferSettings(overlap=args.overlap, device=args.device, **overrides)
    settings = predict.use_cpu_threads(settings, threads, device)
    cfg = network_config(args.net)
    torch.manual_seed(args.seed)
    net = build_network(args.net, cfg, N_CLASSES).eval()
    for module in net.modules():  # trained-looking batch-norm statistics, not the identity
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    roi = tuple(cfg["roi"])
    image = thigh_image(tuple(args.shape), args.seed)
    compile_s = None
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
        seg = predict.prepare_network(net, N_CLASSES, device, settings)
        if compile_net:
            # Made as the streamed windows are (inference tensors of the same strides), so
            # the timed call does not compile again.
            with torch.inference_mode():
                windows = [torch.rand(*roi) for _ in range(settings.sw_batch_size)]
                example = torch.stack(windows)[:, None].to(device).contiguous()
            seg.trunk, compile_s = compiled(seg.trunk, example)

        def run():
            return predict.predict_labels(image, seg, roi, settings)

        predict.keep_freed_memory(seg)
    if device.type == "cuda":
        # A cohort's predict job is warm after its first scan: time a second call.
        run()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = rss_now_mb()
    c0, t0 = time.process_time(), time.perf_counter()
    labels = run()
    predict.synchronise(device)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(args.out, labels)
    out = {"seconds": seconds, "cpu_s": cpu, "peak_mb": peak, "before_mb": before}
    out["compile_s"] = compile_s
    out["torch_threads"] = torch.get_num_threads()
    if device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(out))


def run_worker(method, net, args, out) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--out", str(out)]
    cmd += ["--threads", str(args.threads), "--net", net, "--seed", str(args.seed)]
    cmd += ["--overlap", str(args.overlap), "--plain-sw-batch-size", str(args.plain_sw_batch_size)]
    cmd += ["--shape", *map(str, args.shape), "--device", args.device]
    # A fresh inductor cache per run: each compilation is a predict job's on a fresh machine.
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(out).with_suffix(".inductor"))}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        sys.exit(f"worker {method!r} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="runs per method (median reported)")
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 133, 225])
    parser.add_argument("--net", nargs="+", choices=NET_CHOICES, default=["paper"])
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--plain-sw-batch-size", type=int, default=1, help="MONAI's default: 1")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=DEFAULT_METHODS,
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
    parser.add_argument("--markdown", action="store_true", help="write docs/benchmarks.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.net = args.net[0]
        worker(args)
        return

    from thighct.predict import count_windows

    methods = ["plain"] + [m for m in args.methods if m != "plain"]
    machine = machine_line(args.threads, args.device)
    print(f"# bench_infer: {machine}; {os.cpu_count()} CPUs")
    header = (
        "| network | roi | windows | method | s/scan | vs plain | CPU s | CPU vs plain "
        "| compile s | peak MB | work MB | same labels |"
    )
    lines = [header, "|" + "---|" * 12]
    loads = [os.getloadavg()[0]]
    for net in args.net:
        roi = network_config(net)["roi"]
        n_win = count_windows(args.shape, roi, args.overlap)
        rows = bench_network(net, methods, args)
        base = rows["plain"]
        for m in methods:
            r = rows[m]
            comp = "-" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
            line = (
                f"| {net} | {'x'.join(map(str, roi))} | {n_win} | {m} | {r['seconds']:.2f} "
                f"| {base['seconds'] / r['seconds']:.2f}x | {r['cpu_s']:.2f} "
                f"| {base['cpu_s'] / r['cpu_s']:.2f}x | {comp} "
                f"| {r['peak_mb']:.0f} | {r['work_mb']:.0f} | {100 * r['same']:.3f} % |"
            )
            lines.append(line)
    loads.append(os.getloadavg()[0])
    print("\n".join(lines))
    if args.markdown:
        body = (
            f"Whole-scan inference of a {' x '.join(map(str, args.shape))}-voxel thigh-like input, "
            f"{N_CLASSES} classes, overlap {args.overlap}, random weights (seed {args.seed}); "
            f"medians of {args.repeat} runs per method, the methods alternating, each in its own "
            "process. plain: MONAI's sliding_window_inference and an argmax; streamed: thighct's "
            "streamed windows with MONAI's modules (cpu_fastpath off); fastpath: the same with "
            "the CPU fast path (the default); compile: the streamed windows with MONAI's modules "
            "compiled by torch.compile (inductor, frozen weights), its compilation (the first "
            "window, inductor's cache empty) timed apart in 'compile s'. 'CPU s' (all "
            "threads) is the steadier figure on a shared machine. 'work MB' is the peak above "
            "the process's size before the call; 'same labels' the share of voxels labelled as "
            "by plain. Load "
            f"average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end.\n\n"
            + "\n".join(lines)
        )
        name = f"Inference, {' + '.join(args.net)} (bench_infer.py)"
        path = write_section(name, command_line(), machine, body)
        print(f"# wrote {path}")


def bench_network(net: str, methods: list[str], args) -> dict[str, dict]:
    """Medians per method for one network, and the share of labels equal to plain's."""
    results: dict[str, list[dict]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for m in methods:
                out = Path(tmp) / f"{len(results[m])}_{methods.index(m)}.npy"
                res = run_worker(m, net, args, out)
                res["labels"] = out
                results[m].append(res)
                print(
                    f"  {net} run {r + 1} {m:24s} {res['seconds']:7.2f} s  cpu "
                    f"{res['cpu_s']:7.2f} s  peak {res['peak_mb']:6.0f} MB",
                    flush=True,
                )
        reference = np.load(results["plain"][0]["labels"])
        rows = {}
        for m, runs in results.items():
            compile_s = [x["compile_s"] for x in runs if x["compile_s"] is not None]
            rows[m] = {
                "seconds": statistics.median(x["seconds"] for x in runs),
                "cpu_s": statistics.median(x["cpu_s"] for x in runs),
                "peak_mb": statistics.median(x["peak_mb"] for x in runs),
                "work_mb": statistics.median(x["peak_mb"] - x["before_mb"] for x in runs),
                "compile_s": statistics.median(compile_s) if compile_s else None,
                "same": float((np.load(runs[0]["labels"]) == reference).mean()),
            }
    return rows


if __name__ == "__main__":
    main()
