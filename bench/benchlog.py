"""Shared by the bench scripts: the machine a run measured, and its section of docs/benchmarks.md.

Each bench script run with ``--markdown`` replaces its own section of ``docs/benchmarks.md``
(between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``), headed by the date, the CPU
model, the thread count and the versions of Python, torch and MONAI, so every measured figure
in the docs says where and when it was measured and which script to rerun.
"""

from __future__ import annotations

import datetime
import platform
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "docs" / "benchmarks.md"
HEAD = """# Benchmarks

Every figure below was written by the bench script named in its section, with the command
shown; rerun it to measure your machine. Compare figures only within one section: each was
measured side by side in one run.
"""


def load_config(*names: str) -> dict:
    """Config files under config/, merged in order as Snakemake merges --configfile."""
    import yaml

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


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(threads: int | None = None, device: str = "cpu") -> str:
    """Date, CPU (or GPU), threads and versions, one line."""
    import monai
    import torch

    where = cpu_model()
    if device.startswith("cuda") and torch.cuda.is_available():
        where = f"{torch.cuda.get_device_name(0)} (host CPU {where})"
    parts = [
        datetime.date.today().isoformat(),
        where,
        f"{threads} thread(s)" if threads else None,
        f"Python {platform.python_version()}",
        f"torch {torch.__version__}",
        f"MONAI {monai.__version__}",
    ]
    return "; ".join(p for p in parts if p)


def write_section(name: str, command: str, machine: str, body: str) -> Path:
    """Replace (or add) section ``name`` of docs/benchmarks.md with ``body`` (markdown)."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEAD
    section = (
        f"<!-- bench:{name} -->\n## {name}\n\n`{command}`\n\n{machine}\n\n{body.strip()}\n"
        f"<!-- /bench:{name} -->\n"
    )
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->\n", re.S
    )
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section
    )
    BENCHMARKS_MD.parent.mkdir(parents=True, exist_ok=True)
    BENCHMARKS_MD.write_text(text)
    return BENCHMARKS_MD


def command_line() -> str:
    """How this script was called, from the repo root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO)
    except ValueError:
        pass
    return " ".join(["python", str(script), *sys.argv[1:]])
