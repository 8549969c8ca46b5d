"""Benchmark: training seconds per step and samples (crops) per second, UNETR and 3D U-Net,
at the default (CPU-scale, config/config.yaml) and the paper's size (config/paper.yaml).

A step is what rule train does per optimiser step: forward, Dice loss, backward and AdamW
update on ``batch_size x crops_per_image`` crops of the network's ROI (default: 2 x 4 crops;
paper: 2 x 4 crops of 96³). Crops are random intensities with random labels: the arithmetic is
the same as on real data. Steps after ``--warmup`` untimed ones are timed, and the median is
printed with samples per second = crops per step / seconds per step. "CPU s/step" is the
process's CPU time per step (all threads): on a shared machine it shows the work a step needs
when wall-clock time is inflated by other processes.

On a CPU the paper's step (8 crops of 96³ through UNETR-base) needs tens of GB and minutes,
so ``--paper-crops`` (default 2 on CPU) crops are run per step there and the time of a full
step is projected linearly (marked "projected"). On CUDA the full step runs with mixed precision.

    python bench/bench_train.py                        # both models, default and paper size
    python bench/bench_train.py --sizes default --steps 10 --threads 1
    python bench/bench_train.py --device cuda          # on a GPU

No assertion: the script prints figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from thighct.labels import read_labels  # noqa: E402
from thighct.models import build_network, count_parameters, network_roi  # noqa: E402
from thighct.train import TrainSettings, make_loss, make_optimizer  # noqa: E402


def load_config(*names: str) -> dict:
    cfg: dict = {}
    for name in names:
        with open(REPO / "config" / name) as fh:
            _merge(cfg, yaml.safe_load(fh) or {})
    return cfg


def _merge(base: dict, over: dict) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def time_steps(model, net_cfg, train_cfg, n_classes, crops, steps, warmup, device) -> dict:
    """Median seconds of one optimiser step on ``crops`` random crops."""
    torch.manual_seed(0)
    settings = TrainSettings.from_config(train_cfg)
    net = build_network(model, net_cfg, n_classes).to(device).train()
    optimizer = make_optimizer(net, settings)
    loss_fn = make_loss(settings.loss)
    amp = device.type == "cuda" and settings.amp
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    roi = network_roi(net_cfg)
    images = torch.rand(crops, 1, *roi, device=device)
    labels = torch.randint(0, n_classes, (crops, 1, *roi), device=device)
    times, cpu = [], []
    for k in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            loss = loss_fn(net(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    )
    return {
        "params": count_parameters(net),
        "roi": roi,
        "seconds": statistics.median(times),
        "cpu_seconds": statistics.median(cpu),
        "gpu_gib": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="unetr,unet")
    parser.add_argument("--sizes", default="default,paper")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default size)")
    parser.add_argument("--paper-steps", type=int, default=2, help="timed steps (paper size)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--paper-crops", type=int, default=None, help="crops per paper step (CPU default 2)"
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n_classes = read_labels(REPO / "config" / "labels.tsv").n_classes
    configs = {
        "default": load_config("config.yaml"),
        "paper": load_config("config.yaml", "paper.yaml"),
    }
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {args.threads} thread(s)"
    )
    print(f"# bench_train on {where}; torch {torch.__version__}; {n_classes} classes")
    print(
        f"{'model':6s} {'size':8s} {'params':>11s} {'roi':>12s} {'crops/step':>10s} "
        f"{'s/step':>9s} {'samples/s':>10s} {'CPU s/step':>10s} {'GPU GiB':>8s}  note"
    )
    for size in args.sizes.split(","):
        cfg = configs[size]
        per_step = cfg["train"]["batch_size"] * cfg["train"]["crops_per_image"]
        crops, note = per_step, ""
        if size == "paper" and device.type == "cpu":
            crops = args.paper_crops or 2
            note = f"projected from {crops} crops/step" if crops != per_step else ""
        elif size == "paper" and args.paper_crops:
            crops = args.paper_crops
            note = f"projected from {crops} crops/step" if crops != per_step else ""
        steps = args.paper_steps if size == "paper" else args.steps
        for model in args.models.split(","):
            r = time_steps(
                model,
                cfg["networks"][model],
                {**cfg["train"], "epochs": 1},  # only the step is timed
                n_classes,
                crops,
                steps,
                args.warmup,
                device,
            )
            seconds = r["seconds"] * per_step / crops
            cpu_seconds = r["cpu_seconds"] * per_step / crops
            roi = "x".join(map(str, r["roi"]))
            print(
                f"{model:6s} {size:8s} {r['params']:>11,d} {roi:>12s} {per_step:>10d} "
                f"{seconds:>9.3f} {per_step / seconds:>10.2f} {cpu_seconds:>10.3f} "
                f"{r['gpu_gib']:>8.2f}  {note}",
                flush=True,
            )


if __name__ == "__main__":
    main()
