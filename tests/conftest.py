"""Shared fixtures: the repository, its configs, and a helper to run Snakemake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def load_config(*extra: str | Path) -> dict:
    """config/config.yaml merged (recursively, like Snakemake) with extra config files."""
    with open(REPO / "config" / "config.yaml") as fh:
        cfg = yaml.safe_load(fh)
    for path in extra:
        with open(path) as fh:
            _merge(cfg, yaml.safe_load(fh) or {})
    return cfg


def _merge(base: dict, over: dict) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def run_snakemake(workdir: Path, *args: str, configfiles=(), check=True, timeout=3600, env=None):
    """Run the workflow's Snakefile in ``workdir``; returns the CompletedProcess."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
    ]
    cmd += list(args)
    if configfiles:  # last: --configfile takes every value after it, targets included
        cmd += ["--configfile", *map(str, configfiles)]
    full_env = {**os.environ, "PYTHONHASHSEED": "0", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def default_config() -> dict:
    return load_config()


@pytest.fixture(scope="session")
def tiny_config() -> dict:
    return load_config(REPO / "tests" / "config" / "tiny.yaml")


TINY = REPO / "tests" / "config" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The whole tiny workflow run once (2 cores) in a temporary working directory.

    Shared by every test that needs finished outputs, so CI pays for one run.
    """
    work = tmp_path_factory.mktemp("tiny_run")
    run_snakemake(work, "--cores", "2", configfiles=[TINY])
    return work
