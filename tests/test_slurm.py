"""`snakemake --profile slurm` on a real Slurm: the tiny workflow runs, every job through sbatch.

The fixture starts a one-node Slurm cluster on localhost (tests/slurm/up.sh: munged, MariaDB,
slurmdbd, slurmctld, slurmd; one fake A100) and stops every daemon it started, by PID, also when
a test fails. It needs Debian's slurm-wlm, munge, slurmdbd and mariadb-server and root; without
them the Slurm run is skipped with the install command (CI installs them).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY, run_snakemake
from rule_inventory import inventory

PROFILE = REPO / "slurm" / "config.v8+.yaml"
UP = REPO / "tests" / "slurm" / "up.sh"
DOWN = REPO / "tests" / "slurm" / "down.sh"
DAEMONS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd")
INSTALL = "apt-get install -y slurm-wlm munge slurmdbd mariadb-server"
# Rules that ask Slurm for one A100 (sbatch --gpus=a100:1): training always; prediction
# (the chunked predict_* rules) when config infer.resources says so (config/paper.yaml).
TRAIN_RULES = ("train", "train_fold")
# Seconds between the executor's job state checks in the tests (the shipped profile: 20).
STATUS_SECONDS = 2


def may_use_gpu(rule: str) -> bool:
    return rule in TRAIN_RULES or rule.startswith("predict_")


@pytest.fixture(scope="module")
def rules_by_name() -> dict[str, dict]:
    return {r["name"]: r for r in inventory()}


def profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


# --- the profile itself (no Slurm needed) ---


def test_profile_is_found_from_the_repo_root_and_submits_with_slurm():
    # `--profile slurm` resolves to the folder slurm/ and its config.v8+.yaml.
    cfg = profile()
    assert cfg["executor"] == "slurm"
    assert int(cfg["jobs"]) >= 1
    assert {"runtime", "mem_mb"} <= set(cfg["default-resources"])


def test_snakemake_finds_the_profile_from_the_repo_root(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "slurm", "-n", "--directory",
         str(tmp_path), "--configfile", str(TINY)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Using profile slurm" in proc.stderr


def test_the_profile_sets_no_per_rule_resources():
    # The config is the one place for them: a set-resources entry would silently override it.
    assert "set-resources" not in profile()


def test_training_asks_for_the_gpu_and_partition_the_config_names(tmp_path):
    rules = {r["name"]: r for r in inventory()}
    assert rules["train"]["resources"]["gpu"] == 1
    assert rules["train"]["resources"]["gpu_model"] == "a100"
    cpu = tmp_path / "cpu.yaml"
    cpu.write_text(
        yaml.safe_dump(
            {
                "train": {"resources": {"gpu": 0, "partition": "gpu"}},
                "infer": {"resources": {"gpu": 1, "gpu_model": "", "partition": "gpu"}},
            }
        )
    )
    rules = {r["name"]: r for r in inventory((str(TINY), str(cpu)))}
    # No GPU: no GPU type either (the executor would ask for --gpus=a100:0).
    assert rules["train"]["resources"]["gpu"] == 0
    assert rules["train"]["resources"]["gpu_model"] == ""
    assert rules["train"]["resources"]["slurm_partition"] == "gpu"
    predict = [r for name, r in rules.items() if name.startswith("predict_")]
    assert predict and all(r["resources"]["slurm_partition"] == "gpu" for r in predict)
    assert all(r["resources"]["gpu"] == 1 and r["resources"]["gpu_model"] == "" for r in predict)


def test_the_paper_protocol_predicts_on_one_a100():
    # predict_* rules have no fixed name for the profile: their resources come from the config.
    rules = inventory((str(TINY), str(REPO / "config" / "paper.yaml")))
    predict = [r for r in rules if r["name"].startswith("predict_")]
    assert predict
    for rule in predict:
        assert rule["resources"]["gpu"] == 1 and rule["resources"]["gpu_model"] == "a100"


def test_no_workflow_profile_overrides_the_slurm_profile():
    # A workflow profile (profiles/default next to the Snakefile) is loaded after --profile and
    # replaces whole top-level keys (executor, default-resources, set-resources).
    for folder in (REPO / "profiles" / "default", REPO / "workflow" / "profiles" / "default"):
        for path in folder.glob("config*.yaml"):
            keys = set(yaml.safe_load(path.read_text()) or {})
            clash = keys & set(profile())
            assert not clash, f"{path} overrides the slurm profile's {sorted(clash)}"


# --- a real Slurm ---


def _skip_reason() -> str | None:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [d for d in DAEMONS if not shutil.which(d, path=path)]
    if missing:
        return f"Slurm is not installed (missing {', '.join(missing)}): {INSTALL}"
    if os.geteuid() != 0:
        return "the test Slurm cluster runs its daemons as root"
    return None


@pytest.fixture(scope="module")
def slurm():
    """A running one-node Slurm; yields the environment for its client commands."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # Short: Unix socket paths (munge, MariaDB) are limited to 108 bytes.
    state = Path(tempfile.mkdtemp(prefix="thighct-slurm-"))
    env = _client_env(state)
    # SIGTERM (a CI timeout) would end pytest without teardown: turn it into an exception.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        started = time.monotonic()
        up = subprocess.run(["bash", str(UP), str(state)], env=env, capture_output=True, text=True)
        if up.returncode != 0:
            pytest.fail(f"tests/slurm/up.sh failed:\n{up.stdout}\n{up.stderr[-6000:]}")
        print(f"Slurm started in {time.monotonic() - started:.1f} s: {up.stdout.strip()}")
        yield env
    finally:
        subprocess.run(["bash", str(DOWN), str(state)], env=env, capture_output=True, text=True)
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(state, ignore_errors=True)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def test_slurm_fixture_stops_every_daemon_it_started():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    state = Path(tempfile.mkdtemp(prefix="thighct-slurm-"))
    env = _client_env(state)
    pids = []
    try:
        up = subprocess.run(["bash", str(UP), str(state)], env=env, capture_output=True, text=True)
        assert up.returncode == 0, up.stderr[-4000:]
        records = [line.split() for line in (state / "pids").read_text().splitlines()]
        pids = [int(pid) for name, pid in records if name != "link"]
        assert [name for name, _ in records if name != "link"] == [
            "munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd",
        ]  # fmt: skip
        assert all(_alive(pid) for pid in pids)
    finally:
        subprocess.run(["bash", str(DOWN), str(state)], env=env, capture_output=True, text=True)
        shutil.rmtree(state, ignore_errors=True)
    still = [pid for pid in pids if _alive(pid)]
    assert not still, f"daemons still running after down.sh: {still}"
    link = Path("/etc/slurm/slurm.conf")
    assert not (link.is_symlink() and os.readlink(link) == str(state / "slurm.conf"))


def _client_env(state: Path) -> dict:
    env = {**os.environ, "SLURM_CONF": str(state / "slurm.conf")}
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    return env


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _test_profile(tmp: Path) -> Path:
    """The shipped profile as a user edits it (account, partition), plus test-only speed-ups."""
    cfg = profile()
    cfg["default-resources"] = {
        **cfg["default-resources"],
        "slurm_account": "thighct",
        "slurm_partition": "debug",
    }
    # For speed only: the status interval (and the wait before the first check).
    cfg["slurm-init-seconds-before-status-checks"] = 1
    cfg["seconds-between-status-checks"] = STATUS_SECONDS
    folder = tmp / "profile"
    folder.mkdir()
    (folder / "config.v8+.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return folder


def _sacct(env, *fields: str) -> list[dict]:
    out = subprocess.run(
        ["sacct", "-a", "-X", "-P", "-n", "-S", "now-1days", "-o", ",".join(fields)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [dict(zip(fields, line.split("|"), strict=False)) for line in out.splitlines() if line]


@pytest.mark.slurm
@pytest.mark.workflow
def test_tiny_workflow_runs_every_job_through_slurm_and_trains_on_a_gpu(slurm, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    started = time.monotonic()
    proc = run_snakemake(
        work,
        "--profile",
        str(_test_profile(tmp_path)),
        configfiles=[TINY],
        check=False,
        timeout=3000,
        env=slurm,
    )
    elapsed = time.monotonic() - started
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake --profile slurm failed:\n{log[-8000:]}"
    print(f"tiny workflow on Slurm: {elapsed:.0f} s")

    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))
    planned = _planned_jobs(log)
    assert len(submitted) == planned, f"{planned} jobs planned, {len(submitted)} sent to sbatch"

    jobs = {
        j["JobID"]: j
        for j in _sacct(
            slurm, "JobID", "JobName", "State", "ElapsedRaw", "Comment", "ReqTRES", "SubmitLine"
        )
        if j["JobName"] == run_id
    }
    assert set(jobs) == set(submitted.values()), "sacct does not list every submitted job"
    assert {j["State"] for j in jobs.values()} == {"COMPLETED"}
    busy = sum(int(j["ElapsedRaw"]) for j in jobs.values())
    print(f"{len(jobs)} Slurm jobs, {busy} job-seconds in {elapsed:.0f} s of wall time")

    rules = {
        jid: j["Comment"].removeprefix("rule_").split("_wildcards_")[0] for jid, j in jobs.items()
    }
    trained = [jid for jid, rule in rules.items() if rule in TRAIN_RULES]
    assert trained, f"no training job among {sorted(set(rules.values()))}"
    for jid in trained:
        assert "gres/gpu:a100=1" in jobs[jid]["ReqTRES"], jobs[jid]
        assert "--gpus=a100:1" in jobs[jid]["SubmitLine"], jobs[jid]
    for jid, rule in rules.items():
        if not may_use_gpu(rule):
            assert "gres/gpu" not in jobs[jid]["ReqTRES"], f"{rule} asked for a GPU"
    assert (work / "results" / "figures" / "fig1_flow.png").is_file()


TRAIN_TARGET = "results/models/unet/model.pt"


def _train_job(env, run_id: str) -> dict | None:
    """The run's train job as squeue lists it (JobID, Comment, State) while it is queued or
    running (sacct stores a job's comment only once the job has ended)."""
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i|%j|%k|%T"], env=env, capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        job_id, name, comment, state = line.split("|", 3)
        if name == run_id and comment.startswith("rule_train_"):
            return {"JobID": job_id, "Comment": comment, "State": state}
    return None


def _alive_processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


def _status_check_gap(seconds_running: float, first: float = 1, cap: float = 180) -> float:
    """The longest wait for the Slurm plugin's next status check once jobs have run this long.

    The plugin (2.8.0) checks first after ``slurm-init-seconds-before-status-checks`` (1 s in
    the test profile) and adds 10 s to the wait after every check that finds no job finished,
    up to 180 s; a job cancelled now is seen at the latest one such wait later.
    """
    gap, elapsed = first, 0.0
    while elapsed + gap < seconds_running:
        elapsed += gap
        gap = min(gap + 10, cap)
    return gap


@pytest.mark.slurm
@pytest.mark.workflow
@pytest.mark.parametrize("how", ["scancel", "time limit"])
def test_a_cancelled_or_timed_out_job_fails_the_run_fast_and_a_rerun_resumes(slurm, tmp_path, how):
    """A train job that ends CANCELLED (scancel) or TIMEOUT fails the run at the plugin's next
    status checks, naming the rule and the Slurm job; its processes are gone; a rerun resumes."""
    work = tmp_path / "work"
    work.mkdir()
    profile_dir = _test_profile(tmp_path)
    # Enough epochs that training is still running when it is cancelled or times out.
    long = tmp_path / "long.yaml"
    runtime = 1 if how == "time limit" else 60
    # No GPU and a partition of its own for training, from the config alone.
    resources = {"gpu": 0, "runtime": runtime, "partition": "debug"}
    # Past the 1-minute limit even on a fast machine (a tiny epoch takes a fraction of a second).
    epochs = 800 if how == "time limit" else 400
    long.write_text(yaml.safe_dump({"train": {"epochs": epochs, "resources": resources}}))
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
        str(work), "--profile", str(profile_dir), TRAIN_TARGET, "--configfile", str(TINY),
        str(long),
    ]  # fmt: skip
    log_path = tmp_path / "snakemake.log"
    started = time.monotonic()
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=slurm)
        try:
            job, deadline = None, time.monotonic() + 900
            while time.monotonic() < deadline and proc.poll() is None:
                text = log_path.read_text()
                run = re.search(r"SLURM run ID: (\S+)", text)
                job = run and _train_job(slurm, run.group(1))
                if job and job["State"] == "RUNNING":
                    break
                time.sleep(1)
            assert job and job["State"] == "RUNNING", log_path.read_text()[-4000:]
            # A few epochs first, so there is a checkpoint to resume from.
            train_log = work / "logs" / "train" / "unet.log"
            while time.monotonic() < deadline and proc.poll() is None:
                if train_log.exists() and "unet epoch 3/" in train_log.read_text():
                    break
                time.sleep(0.5)
            ended = time.monotonic()
            if how == "scancel":
                subprocess.run(["scancel", job["JobID"]], env=slurm, check=True)
            limit = (
                _status_check_gap(ended - started)
                + 2 * STATUS_SECONDS
                + 30
                + (120 if how == "time limit" else 0)
            )
            proc.wait(timeout=limit + 60)
            waited = time.monotonic() - ended
        finally:
            if proc.poll() is None:
                proc.kill()
    log = log_path.read_text()
    assert proc.returncode != 0, log[-4000:]
    assert waited <= limit, f"the run took {waited:.0f} s to fail:\n{log[-4000:]}"
    state = {"scancel": "CANCELLED", "time limit": "TIMEOUT"}[how]
    assert job["JobID"] in log and state in log, log[-4000:]
    assert "Error in rule train" in log, log[-4000:]
    submitted = {j["JobID"]: j for j in _sacct(slurm, "JobID", "SubmitLine")}[job["JobID"]]
    assert "--gpus" not in submitted["SubmitLine"], submitted
    assert re.search(r"(-p|--partition)[ =]'?debug", submitted["SubmitLine"]), submitted
    # Slurm killed the job's processes (no training left running on the node).
    assert not _alive_processes(str(work)), _alive_processes(str(work))
    # A rerun with a generous time limit resumes the killed training and finishes it.
    resources["runtime"] = 60
    long.write_text(yaml.safe_dump({"train": {"epochs": epochs, "resources": resources}}))
    rerun = run_snakemake(
        work,
        "--profile",
        str(profile_dir),
        TRAIN_TARGET,
        configfiles=[TINY, long],
        check=False,
        timeout=1800,
        env=slurm,
    )
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-6000:]
    train_log = (work / "logs" / "train" / "unet.log").read_text()
    assert "resuming unet from" in train_log, train_log[-3000:]


def _planned_jobs(log: str) -> int:
    """Jobs Snakemake sends to the executor: the first 'Job stats' total minus target-only rules."""
    table = log.split("Job stats:", 1)[1].split("total", 1)
    counts = dict(re.findall(r"^(\S+)\s+(\d+)\s*$", table[0], flags=re.M))
    total = int(table[1].split()[0])
    return total - int(counts.get("all", 0))


# --- the fix for the Slurm plugin's state matching (no Slurm needed) ---


def _slurm_compat():
    sys.path.insert(0, str(REPO / "workflow"))
    import slurm_compat

    return slurm_compat


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("CANCELLED by 0", "CANCELLED"),
        ("CANCELLED by 1234", "CANCELLED"),
        ("CANCELLED+", "CANCELLED"),
        ("TIMEOUT", "TIMEOUT"),
        ("OUT_OF_MEMORY", "OUT_OF_MEMORY"),
        ("NODE_FAIL", "NODE_FAIL"),
        (" RUNNING ", "RUNNING"),
    ],
)
def test_a_slurm_state_is_reduced_to_the_word_the_plugin_matches(state, expected):
    assert _slurm_compat().normalise_state(state) == expected


def test_the_plugins_status_query_reports_normalised_states(monkeypatch):
    import asyncio

    import snakemake_executor_plugin_slurm as plugin

    compat = _slurm_compat()

    async def fake_query(command, logger):
        return {"11": "CANCELLED by 0", "12": "COMPLETED", "13": "TIMEOUT"}, 0.01

    monkeypatch.setattr(plugin, "query_job_status", fake_query)
    assert compat.apply()
    assert compat.apply()  # applying twice wraps once
    states, _ = asyncio.run(plugin.query_job_status("sacct ...", None))
    assert states == {"11": "CANCELLED", "12": "COMPLETED", "13": "TIMEOUT"}
    # Every failed state the plugin knows is matched after the fix.
    source = Path(plugin.__file__).read_text()
    assert '"CANCELLED",' in source and '"TIMEOUT",' in source
