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


# A rule's variants keep their stage's name: per chunk of subjects (ingest_chunk001,
# predict_unet_chunk001, volumes_ground_truth_chunk002), per fold (train_fold, metrics_fold,
# predict_unet_fold0) and per volume source (correlate_by_source).
VARIANT = re.compile(r"^(?:(?:[a-z0-9_]+_)?(?:chunk\d+|fold\d*)|by_source)$")


def _stage_of(rule: dict) -> str:
    return Path(rule["script"]).stem


def test_every_rule_runs_a_script_named_after_it(rules):
    # Rule `preprocess` runs workflow/scripts/preprocess.py; its variants share that script.
    for rule in rules:
        assert rule["script"], f"rule {rule['name']} has no script"
        script = Path(rule["script"])
        assert script.parent == REPO / "workflow" / "scripts", rule["name"]
        stage, name = script.stem, rule["name"]
        suffix = name[len(stage) + 1 :] if name.startswith(stage + "_") else None
        assert name == stage or (suffix and VARIANT.match(suffix)), (
            f"rule {name} runs {script.name}: name the script after the rule"
        )


def test_every_rule_logs_under_its_own_name(rules):
    for rule in rules:
        stage = _stage_of(rule)
        for log in rule["log"]:
            assert log == f"logs/{stage}.log" or log.startswith(f"logs/{stage}/"), (
                f"rule {rule['name']} (script {stage}.py) logs to {log}"
            )


def test_a_stage_s_rules_live_in_the_rule_file_named_after_it(rules):
    # Rules of stage `predict` (script predict.py) are in predict.smk, and so on; rule files
    # hold rules only (input functions live in common.smk).
    for rule in rules:
        stage = _stage_of(rule)
        if (REPO / "workflow" / "rules" / f"{stage}.smk").exists():
            assert Path(rule["snakefile"]).stem == stage, (rule["name"], rule["snakefile"])
    stages = {Path(r["snakefile"]).stem for r in rules}
    assert {"predict", "volumes", "metrics", "train", "preprocess"} <= stages
    assert not (REPO / "workflow" / "rules" / "functions.smk").exists()


def test_subject_and_model_wildcards_are_constrained(rules):
    # Snakemake's own matching patterns: no {subject} or {model} matches anything (".+").
    checked = 0
    for rule in rules:
        for pattern in rule["output_patterns"]:
            for wildcard in ("subject", "model", "source"):
                if f"(?P<{wildcard}>" in pattern:
                    checked += 1
                    assert f"(?P<{wildcard}>.+)" not in pattern, (
                        f"rule {rule['name']}: {{{wildcard}}} is unconstrained in {pattern}"
                    )
    assert checked, "no rule output with a {subject}, {model} or {source} wildcard found"


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
