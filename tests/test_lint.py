"""The workflow's conventions: Snakemake's linter, snakefmt and ruff are clean; every rule has a
log, a conda env, threads and resources; heavy rules a benchmark; wildcards are constrained."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY
from rule_inventory import inventory

# Rules that run a network or touch every voxel of a scan: each writes a benchmark TSV.
HEAVY = re.compile(
    r"^(ingest|preprocess|train|train_fold|predict_\w+|synthetic_scan)(_chunk\d+|_fold\d+)?$"
)


def _run(*cmd: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_snakemake_lint_reports_nothing(tmp_path):
    proc = _run(
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
        "--directory", str(tmp_path), "--configfile", str(TINY), "--lint",
    )  # fmt: skip
    assert proc.returncode == 0, f"snakemake --lint:\n{proc.stdout}\n{proc.stderr[-6000:]}"


def test_snakefmt_leaves_every_snakefile_unchanged():
    proc = _run(sys.executable, "-m", "snakefmt", "--check", ".")
    assert proc.returncode == 0, f"snakefmt --check .:\n{proc.stderr[-6000:]}"


def test_ruff_check_is_clean():
    proc = _run(sys.executable, "-m", "ruff", "check", ".")
    assert proc.returncode == 0, f"ruff check .:\n{proc.stdout[-6000:]}"


@pytest.fixture(scope="module")
def rules() -> list[dict]:
    return [r for r in inventory() if not r["norun"]]


def test_every_rule_logs_to_logs(rules):
    missing = [r["name"] for r in rules if not r["log"]]
    assert not missing, f"rules without log: {missing}"
    outside = [r["name"] for r in rules if not all(p.startswith("logs/") for p in r["log"])]
    assert not outside, f"rules logging outside logs/: {outside}"


def test_heavy_rules_write_a_benchmark(rules):
    heavy = [r for r in rules if HEAVY.match(r["name"])]
    assert heavy, "no heavy rule found: update HEAVY to the rule names"
    missing = [r["name"] for r in heavy if not (r["benchmark"] or "").startswith("benchmarks/")]
    assert not missing, f"heavy rules without benchmark: {missing}"


def test_every_rule_declares_threads_memory_and_runtime(rules):
    for rule in rules:
        assert rule["threads"] == "<function>" or int(rule["threads"]) >= 1, rule["name"]
        assert {"mem_mb", "runtime"} <= set(rule["resources"]), (
            f"rule {rule['name']} declares no mem_mb/runtime: {rule['resources']}"
        )


def test_every_rule_runs_a_script_named_after_it(rules):
    # Rule `preprocess` runs workflow/scripts/preprocess.py (chunked rules share their stage's).
    for rule in rules:
        assert rule["script"], f"rule {rule['name']} has no script"
        script = Path(rule["script"])
        assert script.parent == REPO / "workflow" / "scripts", rule["name"]


def test_subject_and_model_wildcards_are_constrained():
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    block = common.split("wildcard_constraints:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"^\s+subject=", block, re.M) and re.search(r"^\s+model=", block, re.M)


def _schema_keys(schema: dict, prefix: str = "") -> list[str]:
    """Dotted names of every key the config schema defines (nested objects included)."""
    keys = []
    for name, sub in schema.get("properties", {}).items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        keys += _schema_keys(sub, f"{dotted}.")
    return keys


def test_config_readme_describes_every_config_key_and_the_cohort_table():
    import yaml

    readme = (REPO / "config" / "README.md").read_text()
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    missing = [k for k in _schema_keys(schema) if f"`{k}`" not in readme]
    assert not missing, f"config/README.md does not describe: {missing}"
    cohort = yaml.safe_load((REPO / "workflow" / "schemas" / "cohort.schema.yaml").read_text())
    missing = [c for c in cohort["properties"] if f"`{c}`" not in readme]
    assert not missing, f"config/README.md does not describe cohort columns: {missing}"


def test_config_readme_is_up_to_date_with_the_schemas_and_configs():
    sys.path.insert(0, str(REPO / "config"))
    try:
        from make_readme import render
    finally:
        sys.path.pop(0)
    assert (REPO / "config" / "README.md").read_text() == render(), (
        "config/README.md is stale: run `python config/make_readme.py`"
    )
