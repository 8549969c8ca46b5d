"""A run killed mid-job (SIGKILL: power cut, OOM killer, a cluster's hard limit) resumes with
`--rerun-incomplete` and ends with the same results; a failing job's error names its log file."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TINY, run_snakemake

pytestmark = pytest.mark.workflow

# A job that runs long enough to be killed in the middle: training the U-Net.
TARGET = "results/models/unet/train_log.tsv"
OUTPUTS = ("results/models/unet/model.pt", "results/models/unet/train_log.tsv")
JOB_LOG = "logs/train/unet.log"


def _copy_run(tiny_run: Path, dest: Path) -> Path:
    shutil.copytree(tiny_run, dest, symlinks=True)
    return dest


def _start(work: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
           str(work), "--configfile", str(TINY), "--cores", "1", *args]  # fmt: skip
    # Own process group: SIGKILL reaches Snakemake and the job's script at once.
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _incomplete_markers(work: Path) -> list[Path]:
    folder = work / ".snakemake" / "incomplete"
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _train_log(path: Path) -> str:
    # The per-epoch table, without wall-clock columns.
    lines = path.read_text().splitlines()
    header = lines[0].split("\t") if lines else []
    keep = [i for i, h in enumerate(header) if "time" not in h and "second" not in h]
    return "\n".join("\t".join(row.split("\t")[i] for i in keep) for row in lines)


def test_a_killed_run_resumes_with_rerun_incomplete_to_the_same_results(tiny_run, tmp_path):
    work = _copy_run(tiny_run, tmp_path / "work")
    reference = _train_log(tiny_run / TARGET)
    (work / JOB_LOG).unlink()
    proc = _start(work, "--forcerun", "train", TARGET)
    try:
        # Mid-job: the training script has logged its first epoch (and checkpointed it).
        _wait_for(
            lambda: (work / JOB_LOG).exists() and "epoch 1/" in (work / JOB_LOG).read_text(),
            timeout=300,
            what="the first training epoch",
        )
        assert proc.poll() is None, proc.stdout.read()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert _incomplete_markers(work), "Snakemake forgot which job was running"

    # Snakemake removed the outputs when the job started; the model was never written.
    assert not (work / OUTPUTS[0]).exists()
    # Without the flag Snakemake refuses partial outputs, or reruns the job if none exists.
    dry = run_snakemake(work, "-n", TARGET, configfiles=[TINY], check=False)
    text = dry.stdout + dry.stderr
    assert "IncompleteFilesException" in text or re.search(r"rule train:", text), text[-3000:]

    # The killed Snakemake left its lock; the error says how to remove it.
    locked = run_snakemake(work, "--cores", "2", "--rerun-incomplete", TARGET, configfiles=[TINY],
                           check=False)  # fmt: skip
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    run_snakemake(work, "--unlock", configfiles=[TINY])
    run_snakemake(work, "--cores", "2", "--rerun-incomplete", TARGET, configfiles=[TINY])
    assert not _incomplete_markers(work)
    assert _train_log(work / TARGET) == reference
    _assert_same_weights(work / OUTPUTS[0], tiny_run / OUTPUTS[0])
    done = run_snakemake(work, "-n", TARGET, configfiles=[TINY])
    assert "Nothing to be done" in done.stdout + done.stderr


def _assert_same_weights(path: Path, reference: Path) -> None:
    import torch

    got = torch.load(path, map_location="cpu", weights_only=True)
    want = torch.load(reference, map_location="cpu", weights_only=True)
    got = got.get("state_dict", got) if isinstance(got, dict) else got
    want = want.get("state_dict", want) if isinstance(want, dict) else want
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), f"weights differ after the resumed run: {key}"


def test_a_failing_job_names_its_log_file_and_the_log_holds_the_error(tiny_run, tmp_path):
    work = _copy_run(tiny_run, tmp_path / "work")
    ingested = sorted((work / "results" / "ingested").glob("*/image.nii.gz"))[0]
    subject = ingested.parent.name
    source = next((work / "results" / "synthetic").glob(f"{subject}/ct.nii.gz"), None)
    assert source is not None, f"no synthetic scan for {subject}"
    # A damaged scan: valid gzip, not a NIfTI image.
    source.unlink()
    with gzip.open(source, "wb") as fh:
        fh.write(b"this is not a NIfTI image")
    proc = run_snakemake(
        work, "--cores", "1", str(ingested.relative_to(work)), configfiles=[TINY], check=False
    )
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    # Ingestion runs in chunks of subjects (config `chunks`): the error names the chunk's log.
    found = re.search(
        r"log: \S*?(logs/ingest/\S+\.log)\S* \(check log file\(s\) for error details\)", text
    )
    assert found, text[-3000:]
    content = (work / found.group(1)).read_text()
    assert subject in content or str(source.relative_to(work)) in content, content
    assert "Error" in content, content
    assert not ingested.exists(), "a failed job left its output behind"
