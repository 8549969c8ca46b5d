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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from benchlog import command_line, load_config, machine_line, write_section  # noqa: E402

from thighct.labels import read_labels  # noqa: E402
from thighct.models import build_network, count_parameters, network_roi  # noqa: E402
from thighct.run_settings import train_for_model  # noqa: E402
from thighct.train import (  # noqa: E402
    TrainSettings,
    autocast_dtype,
    cpu_has_native_bf16,
    make_loss,
    make_optimizer,
    optimiser_step,
)


def time_steps(model, net_cfg, train_cfg, n_classes, crops, steps, warmup, device) -> dict:
    """Median seconds of one optimiser step on ``crops`` random crops, run as rule train runs
    it (``train.precision`` and ``train.channels_last`` of ``train_cfg``)."""
    torch.manual_seed(0)
    settings = TrainSettings.from_config(train_cfg)
    fmt = torch.channels_last_3d if settings.channels_last else torch.contiguous_format
    net = build_network(model, net_cfg, n_classes).to(device).to(memory_format=fmt).train()
    optimizer = make_optimizer(net, settings)
    loss_fn = make_loss(settings.loss)
    dtype = autocast_dtype(settings, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    roi = network_roi(net_cfg)
    images = torch.rand(crops, 1, *roi, device=device).contiguous(memory_format=fmt)
    labels = torch.randint(0, n_classes, (crops, 1, *roi), device=device)
    times, cpu = [], []
    for k in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        optimiser_step(net, images, labels, loss_fn, optimizer, scaler, dtype)
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
        "precision": str(dtype).removeprefix("torch.") if dtype else "float32",
    }


#: Variants measured side by side: (name, train.precision, train.channels_last).
VARIANTS = {
    "float32": ("float32", False),
    "bfloat16": ("bfloat16", False),
    "float32+cl": ("float32", True),
    "bfloat16+cl": ("bfloat16", True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="unetr,unet")
    parser.add_argument("--sizes", default="default,paper")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="of " + ", ".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round (default size)")
    parser.add_argument("--paper-steps", type=int, default=2, help="timed steps per round (paper)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the variants")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--paper-crops", type=int, default=None, help="crops per paper step (CPU default 2)"
    )
    parser.add_argument("--markdown", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n_classes = read_labels(REPO / "config" / "labels.tsv").n_classes
    configs = {
        "default": load_config("config.yaml"),
        "paper": load_config("config.yaml", "paper.yaml"),
    }
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    machine = machine_line(args.threads, args.device)
    native = cpu_has_native_bf16()
    print(f"# bench_train: {machine}; native bfloat16: {native}")
    header = (
        "| model | size | variant | ran in | crops/step | s/step | samples/s | CPU s/step "
        "| vs float32 | GPU GiB | note |"
    )
    lines = [header, "|" + "---|" * 11]
    print(header)
    print(lines[1])
    for size in args.sizes.split(","):
        cfg = configs[size]
        steps = args.paper_steps if size == "paper" else args.steps
        for model in args.models.split(","):
            model_train = train_for_model(cfg["train"], model)
            per_step = model_train["batch_size"] * model_train["crops_per_image"]
            crops, note = per_step, ""
            if size == "paper" and (device.type == "cpu" or args.paper_crops):
                crops = min(args.paper_crops or 2, per_step)
                note = f"projected from {crops} crops/step" if crops != per_step else ""
            runs: dict[str, list[dict]] = {v: [] for v in variants}
            for _ in range(args.rounds):  # variants alternate, so load hits all alike
                for v in variants:
                    precision, channels_last = VARIANTS[v]
                    train_cfg = {
                        **model_train,
                        "epochs": 1,  # only the step is timed
                        "precision": precision,
                        "channels_last": channels_last,
                    }
                    runs[v].append(
                        time_steps(
                            model,
                            cfg["networks"][model],
                            train_cfg,
                            n_classes,
                            crops,
                            steps,
                            args.warmup,
                            device,
                        )
                    )
            base = None
            for v in variants:
                r = runs[v][0]
                seconds = statistics.median(x["seconds"] for x in runs[v]) * per_step / crops
                cpu_s = statistics.median(x["cpu_seconds"] for x in runs[v]) * per_step / crops
                base = seconds if v == "float32" else base
                ratio = f"{base / seconds:.2f}x" if base else ""
                roi = "x".join(map(str, r["roi"]))
                gpu = "-" if r["gpu_gib"] != r["gpu_gib"] else f"{r['gpu_gib']:.2f}"  # NaN on CPU
                line = (
                    f"| {model} | {size} ({roi}) | {v} | {r['precision']} | {per_step} "
                    f"| {seconds:.3f} | {per_step / seconds:.2f} | {cpu_s:.3f} | {ratio} "
                    f"| {gpu} | {note} |"
                )
                lines.append(line)
                print(line, flush=True)
    if args.markdown:
        body = (
            "One optimiser step of rule train (forward, loss, backward, AdamW) on random crops, "
            f'median of {args.rounds} rounds in which the variants alternate; "vs float32" is '
            'the float32 step time over the variant\'s. "ran in" is the precision that really '
            "ran (bfloat16 falls back to float32 on a CPU without native bfloat16). "
            f"Native bfloat16 on this CPU: {native}.\n\n" + "\n".join(lines)
        )
        path = write_section("Training step (bench_train.py)", command_line(), machine, body)
        print(f"# wrote {path}")


if __name__ == "__main__":
    main()
