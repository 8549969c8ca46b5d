"""GPU check of the paper protocol in one command (at most about 10 minutes on one GPU).

Three parts, each printed as it finishes:

1. Training: UNETR-base from ``config/paper.yaml`` (96³ ROI, hidden 768, 12 heads, feature
   size 16) takes ``--steps`` optimiser steps on one fixed batch of the paper's size
   (batch_size x crops_per_image crops of 96³) under the paper config's precision (float16
   autocast with loss scaling, ``train.amp``), Dice loss and AdamW as rule train runs them.
   The batch is smooth random intensities whose classes are intensity bands, so a network
   that learns makes the loss fall. Printed: loss at the first and last step, samples per
   second (after two untimed steps) and the GPU's peak memory.
2. Inference: the trained network's streamed sliding-window inference of a paper-size
   preprocessed scan (``--shape``, default 300 x 133 x 225 voxels at 1.5 x 1.5 x 2 mm) with
   the paper config's window settings, on the GPU (a warm second call timed) and on the CPU
   (the CPU fast path); printed: seconds per scan, GPU peak memory, and the share of voxels
   whose labels agree (target >= 99.9 %).
3. The tiny workflow (``tests/config/tiny.yaml``) end to end on CUDA in a temporary folder:
   training and prediction pick the GPU (``infer.device: auto``); printed: wall seconds and
   the devices the model files and timing tables name.

    python bench/gpu_check.py                 # all three parts
    python bench/gpu_check.py --parts train,infer --steps 20
    python bench/gpu_check.py --markdown      # also write docs/benchmarks.md

Exits non-zero when no CUDA device is present or a check fails (loss not lower at the end,
labels agreeing on fewer than 99.9 % of voxels, the tiny workflow failing or not on CUDA).
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from benchlog import command_line, load_config, machine_line, write_section  # noqa: E402

from thighct import predict  # noqa: E402
from thighct.labels import read_labels  # noqa: E402
from thighct.models import build_network, network_roi  # noqa: E402
from thighct.run_settings import infer_for_model, train_for_model  # noqa: E402
from thighct.train import (  # noqa: E402
    TrainSettings,
    autocast_dtype,
    make_loss,
    make_optimizer,
    optimiser_step,
)


def paper_config() -> dict:
    return load_config("config.yaml", "paper.yaml")


def learnable_batch(n: int, roi, n_classes: int, device, seed: int = 0):
    """Smooth random images and labels that are intensity bands of them (learnable)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, *roi, generator=g)
    for _ in range(3):
        x = torch.nn.functional.avg_pool3d(x, 5, stride=1, padding=2)
    x = (x - x.amin()) / (x.amax() - x.amin())
    labels = torch.clamp((x * n_classes).long(), max=n_classes - 1)
    return x.to(device), labels.to(device)


def check_training(cfg: dict, n_classes: int, steps: int, device) -> tuple[dict, torch.nn.Module]:
    net_cfg = cfg["networks"]["unetr"]
    settings = TrainSettings.from_config({**train_for_model(cfg["train"], "unetr"), "epochs": 1})
    roi = network_roi(net_cfg)
    crops = settings.batch_size * settings.crops_per_image
    torch.manual_seed(0)
    net = build_network("unetr", net_cfg, n_classes).to(device).train()
    optimizer = make_optimizer(net, settings)
    loss_fn = make_loss(settings.loss)
    dtype = autocast_dtype(settings, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    images, labels = learnable_batch(crops, roi, n_classes, device)
    torch.cuda.reset_peak_memory_stats(device)
    losses, times = [], []
    for step in range(steps + 2):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        loss = optimiser_step(net, images, labels, loss_fn, optimizer, scaler, dtype)
        torch.cuda.synchronize(device)
        if step >= 2:
            times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    result = {
        "crops/step": crops,
        "roi": "x".join(map(str, roi)),
        "precision": str(dtype).removeprefix("torch.") if dtype else "float32",
        "loss first": round(losses[0], 4),
        "loss last": round(losses[-1], 4),
        "samples/s": round(crops / float(np.median(times)), 2),
        "GPU peak GiB": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
        "ok": losses[-1] < losses[0],
    }
    return result, net.eval()


def check_inference(cfg: dict, net, n_classes: int, shape, device) -> dict:
    roi = network_roi(cfg["networks"]["unetr"])
    rng = np.random.default_rng(0)
    image = rng.random(shape, dtype=np.float32)
    image = torch.nn.functional.avg_pool3d(torch.from_numpy(image)[None, None], 5, 1, 2)[0, 0]
    image = image.numpy()
    out = {}
    labels = {}
    for dev in (device, torch.device("cpu")):
        settings = predict.InferSettings.from_config(
            {**infer_section(cfg), "device": dev.type, "threads": torch.get_num_threads()}
        )
        seg = predict.prepare_network(copy.deepcopy(net).to(dev), n_classes, dev, settings)
        calls = 2 if dev.type == "cuda" else 1
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(calls):  # the GPU's second call is warm
            t0 = time.perf_counter()
            labels[dev.type] = predict.predict_labels(image, seg, roi, settings)
            predict.synchronise(dev)
            seconds = time.perf_counter() - t0
        out[f"{dev.type} s/scan"] = round(seconds, 2)
        if dev.type == "cuda":
            out["GPU peak GiB"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    same = float((labels["cuda"] == labels["cpu"]).mean())
    out["shape"] = "x".join(map(str, shape))
    out["labels equal"] = f"{100 * same:.3f} %"
    out["ok"] = same >= 0.999
    return out


def infer_section(cfg: dict) -> dict:
    section = infer_for_model(cfg["infer"], "unetr")
    section.pop("resources", None)
    return section


def check_workflow() -> dict:
    with tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
        cmd += ["--directory", work, "--cores", "4", "--configfile"]
        cmd += [str(REPO / "tests" / "config" / "tiny.yaml")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr[-4000:])
            return {"seconds": round(seconds, 1), "ok": False}
        devices = set()
        for model in Path(work, "results", "models").glob("*/model.pt"):
            meta = torch.load(model, map_location="cpu", weights_only=True)["meta"]
            devices.add(f"train {model.parent.name}: {meta.get('device')}")
        for timing in Path(work, "results", "predictions").glob("*/timing/*.tsv"):
            text = timing.read_text()
            devices.add(f"predict {timing.parts[-3]}: {'cuda' if 'cuda' in text else 'cpu'}")
        on_cuda = all("cuda" in d for d in devices) and devices
        return {"seconds": round(seconds, 1), "devices": sorted(devices), "ok": bool(on_cuda)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="train,infer,workflow")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps")
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 133, 225])
    parser.add_argument("--markdown", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device (torch.cuda.is_available() is False)")
    device = torch.device("cuda")
    cfg = paper_config()
    n_classes = read_labels(REPO / "config" / "labels.tsv").n_classes
    parts = args.parts.split(",")
    machine = machine_line(torch.get_num_threads(), "cuda")
    print(f"# gpu_check: {machine}")
    results: dict[str, dict] = {}
    net = None
    if "train" in parts or "infer" in parts:
        results["training, UNETR-base"], net = check_training(cfg, n_classes, args.steps, device)
        print("training:", results["training, UNETR-base"], flush=True)
    if "infer" in parts:
        results["inference, paper-size scan"] = check_inference(
            cfg, net, n_classes, tuple(args.shape), device
        )
        print("inference:", results["inference, paper-size scan"], flush=True)
    if "workflow" in parts:
        results["tiny workflow on CUDA"] = check_workflow()
        print("workflow:", results["tiny workflow on CUDA"], flush=True)
    ok = all(r["ok"] for r in results.values())
    if args.markdown:
        lines = ["| check | figures |", "|---|---|"]
        for name, r in results.items():
            figures = ", ".join(f"{k} {v}" for k, v in r.items())
            lines.append(f"| {name} | {figures} |")
        write_section("GPU check (gpu_check.py)", command_line(), machine, "\n".join(lines))
    print("gpu_check:", "all checks passed" if ok else "a check FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
