"""Every rule of the workflow as Snakemake itself parsed it, written to a JSON file.

    python tests/rule_inventory.py OUT.json WORKDIR [CONFIGFILE ...]

Run in a subprocess (`inventory()`) by the workflow-convention tests (test_envs, test_lint,
test_slurm): it loads the Snakefile through Snakemake's API (no DAG, no jobs) and
records, per rule, its conda env, script, log, benchmark, threads, resources and wildcards, with
paths resolved to absolute ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "config" / "tiny.yaml"


@cache
def inventory(configfiles: tuple[str, ...] = (str(TINY),)) -> tuple[dict, ...]:
    """The rules (records as below) parsed in a fresh Snakemake process; cached per test session."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rules.json"
        proc = subprocess.run(
            [sys.executable, __file__, str(out), tmp, *configfiles],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the workflow does not parse:\n{proc.stderr[-4000:]}")
        return tuple(json.loads(out.read_text()))


def _resolve(basedir: Path, value) -> str | None:
    if not value:
        return None
    path = Path(str(value))
    return str(path if path.is_absolute() else (basedir / path).resolve())


def _resource(value) -> object:
    from snakemake.resources import Resource

    if isinstance(value, Resource):
        if value.is_evaluable():
            return "<function>"
        value = value.value
    return value if isinstance(value, (int, float, str)) else "<function>"


def _files(io) -> list[str]:
    return [str(f) for f in io] if io else []


def rule_record(rule) -> dict:
    basedir = Path(str(rule.basedir))
    return {
        "name": rule.name,
        "snakefile": str(rule.snakefile),
        "conda": _resolve(basedir, rule.conda_env),
        "script": _resolve(basedir, rule.script),
        "norun": bool(rule.norun),
        "log": _files(rule.log),
        "benchmark": str(rule.benchmark) if rule.benchmark else None,
        "threads": _resource(rule.resources.get("_cores") or 1),
        "resources": {k: _resource(v) for k, v in rule.resources.items() if not k.startswith("_")},
        "wildcards": sorted(rule.wildcard_names),
        "output": _files(rule.output),
        # The regular expressions Snakemake matches requested files against (wildcard
        # constraints included), for outputs with wildcards.
        "output_patterns": [f.regex().pattern for f in rule.output if f.get_wildcard_names()],
        "input": _inputs(rule),
    }


def _inputs(rule) -> list[str]:
    """Input files; input functions are evaluated for rules without wildcards."""
    files = [f for f in _files(rule.input) if "<function" not in f]
    if not rule.wildcard_names:
        from snakemake.iocontainers import Wildcards

        try:
            files = [str(f) for f in rule.expand_input(Wildcards())[0]]
        except Exception:  # an input that needs the DAG (e.g. a checkpoint)
            pass
    return files


def main(out: str, workdir: str, *configfiles: str) -> None:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    settings = ConfigSettings(configfiles=[Path(c).resolve() for c in configfiles])
    with SnakemakeApi(OutputSettings()) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=settings,
            snakefile=REPO / "Snakefile",
            workdir=Path(workdir).resolve(),
        )
        rules = [rule_record(r) for r in workflow_api._workflow.rules]
    Path(out).write_text(json.dumps(rules, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
