"""Library code is tracked by what it does: a docstring, comment or layout edit reruns nothing;
a change to code a rule runs reruns exactly that rule and what depends on it.

Each test edits a copy of the repository (never the checkout under test) after a tiny run of
that copy up to the U-Net's model, then asks Snakemake's dry run what it would redo.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY

pytestmark = pytest.mark.workflow

TARGET = "results/models/unet/model.pt"


def _snakemake(repo: Path, work: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile")]
    cmd += ["--directory", str(work), "--configfile", str(TINY), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc.stdout + proc.stderr


def planned(repo: Path, work: Path) -> dict[str, str]:
    """rule -> reason of every job `snakemake -n TARGET` would run."""
    text = _snakemake(repo, work, "-n", TARGET)
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \S+:\n)", text)[1:]:
        name = re.match(r"(?:local)?rule (\S+):", block).group(1)
        reason = re.search(r"^    reason: (.*)$", block, flags=re.M)
        jobs[name] = reason.group(1) if reason else ""
    return jobs


@pytest.fixture(scope="module")
def copied(tmp_path_factory) -> tuple[Path, Path]:
    """(a copy of the repository, a working directory with the tiny run up to TARGET)."""
    base = tmp_path_factory.mktemp("code_tracking")
    repo = base / "repo"
    repo.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".snakemake", "results")
    for part in ("Snakefile", "workflow", "src", "config", "envs"):
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, repo / part, ignore=ignore)
        else:
            shutil.copy2(src, repo / part)
    work = base / "work"
    work.mkdir()
    _snakemake(repo, work, "--cores", "2", TARGET)
    assert planned(repo, work) == {}
    return repo, work


def _edit(path: Path, old: str, new: str) -> str:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
    return text


def test_docstring_comment_and_layout_edits_rerun_nothing(copied):
    repo, work = copied
    io_py = repo / "src" / "thighct" / "io" / "nifti.py"
    original = io_py.read_text()
    try:
        edited = original.replace('"""', '"""Edited docstring. ', 1)  # the module docstring
        edited = edited.replace("\ndef ", "\n# a new comment\n\n\ndef ", 3)
        edited = re.sub(r"\):\n", "):  # trailing comment\n", edited, count=5)
        assert edited != original
        io_py.write_text(edited)
        assert planned(repo, work) == {}
    finally:
        io_py.write_text(original)


def test_a_change_to_code_train_runs_reruns_train_only(copied):
    repo, work = copied
    models_py = repo / "src" / "thighct" / "models.py"  # imported by train, not by preprocess
    original = _edit(models_py, "UNETR_PATCH = 16\n", "UNETR_PATCH = 16 + 0\n")
    try:
        jobs = planned(repo, work)
    finally:
        models_py.write_text(original)
    assert set(jobs) == {"train"}, jobs
    assert jobs["train"].startswith("Params have changed"), jobs


def test_a_change_to_io_reruns_every_rule_that_reads_images(copied):
    repo, work = copied
    io_py = repo / "src" / "thighct" / "io" / "nifti.py"
    original = _edit(
        io_py,
        "from __future__ import annotations\n",
        "from __future__ import annotations\n\n_EDITED = True\n",
    )
    try:
        jobs = planned(repo, work)
    finally:
        io_py.write_text(original)
    direct = {r for r, why in jobs.items() if why.startswith("Params have changed")}
    # Snakemake names one reason per job: the phantoms (which write images) rerun for the
    # code, and every stage after them at least because its inputs are rebuilt.
    assert any(r.startswith("synthetic_scan_chunk") for r in direct), jobs
    for stage in ("ingest_chunk", "preprocess_chunk", "train"):
        assert any(r.startswith(stage) for r in jobs), (stage, jobs)


def test_an_anatomy_edit_reruns_the_phantoms_a_comment_there_nothing(copied):
    repo, work = copied
    anatomy = repo / "src" / "thighct" / "synthetic" / "anatomy.yaml"
    original = _edit(anatomy, "landmarks:\n", "landmarks:  # a comment\n\n")
    try:
        assert planned(repo, work) == {}
    finally:
        anatomy.write_text(original)
    _edit(anatomy, "[0.93, -8, 52, 7, 5, 30]", "[0.93, -8, 52, 8, 5, 30]")  # sartorius
    try:
        jobs = planned(repo, work)
    finally:
        anatomy.write_text(original)
    direct = {r for r, why in jobs.items() if why.startswith("Params have changed")}
    # Only the rules that run phantom code see new code; the rest rerun for their inputs.
    assert any(r.startswith("synthetic_scan_chunk") for r in direct), jobs
    assert all(r.startswith(("synthetic_scan_chunk", "synthetic_rater2")) for r in direct), jobs
    assert "train" in jobs, jobs
