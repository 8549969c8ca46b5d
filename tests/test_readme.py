"""Every command the README shows works after the install the README tells the user to do.

The Snakemake commands run on the tiny config in a temporary directory (dry runs, except the
report, which needs a finished run). Commands that need conda channels (--use-conda) or a Slurm
cluster (--profile slurm) are checked elsewhere (tests/test_envs.py, tests/test_slurm.py).
"""

from __future__ import annotations

import re
import shlex
import shutil
from importlib import metadata

import pytest
from conftest import REPO, TINY, run_snakemake
from packaging.requirements import Requirement

README = REPO / "README.md"
ELSEWHERE = ("--use-conda", "--profile")


def readme_commands() -> list[str]:
    """Commands of the README: every line of its bash blocks, and inline `snakemake ...` spans."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = re.split(r"\s+#", line, maxsplit=1)[0].strip()
            if line:
                commands.append(line)
    commands += re.findall(r"(?<!`)`(snakemake [^`]+)`", text)
    return list(dict.fromkeys(commands))


SNAKEMAKE = [c for c in readme_commands() if c.startswith("snakemake ")]


def test_the_readme_opens_with_the_two_set_up_commands_and_ci_runs_the_second():
    first, second = readme_commands()[:2]
    assert first.endswith("pip install -q -e . && snakemake --cores 2")
    assert second.endswith('pip install -q -e ".[dev]" && pytest')
    assert second in (REPO / ".ci" / "run").read_text()


def _closure(names: set[str]) -> set[str]:
    """Distributions installed with ``names`` (their requirements, recursively; no extras)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def test_the_first_install_brings_what_every_readme_command_imports():
    # `snakemake --report` imports jinja2 and pygments, which Snakemake does not require.
    installed = _closure({"thighct"})
    for needed in ("snakemake", "snakemake-executor-plugin-slurm", "jinja2", "pygments"):
        assert needed in installed, f"`pip install -e .` does not install {needed}"


def _as_test_run(command: str, workdir, extra_configs=()) -> tuple[list[str], list[str]]:
    """(arguments, config files) of a README command, run on the tiny config under workdir."""
    args = shlex.split(command)[1:]
    configs, rest, i = [], [], 0
    while i < len(args):
        if args[i] == "--configfile":
            i += 1
            while i < len(args) and not args[i].startswith("-"):
                configs.append(str(REPO / args[i]))
                i += 1
            continue
        if args[i] == "--directory":
            i += 2
            continue
        rest.append("2" if args[i] == "N" else args[i])  # `--cores N` in the prose
        i += 1
    return rest, [*configs, str(TINY), *map(str, extra_configs)]


@pytest.mark.workflow
@pytest.mark.parametrize("command", SNAKEMAKE)
def test_each_readme_snakemake_command_runs(command, tiny_run, tmp_path):
    if any(flag in command for flag in ELSEWHERE):
        pytest.skip("needs conda channels or a Slurm cluster")
    if "--report" in command:
        work = tmp_path / "finished"
        shutil.copytree(tiny_run, work, symlinks=True)
        args, configs = _as_test_run(command, work)
        run_snakemake(work, *args, configfiles=configs)
        assert (work / "results" / "report.html").stat().st_size > 0
        return
    extra = []
    if "config/apply.yaml" in command:
        # The default run's weights, as the README's first command leaves them: here the tiny
        # run's, given by absolute path.
        weights = tmp_path / "weights.yaml"
        models = tiny_run / "results" / "models"
        weights.write_text(
            "networks:\n"
            f"  unetr: {{weights: {models / 'unetr' / 'model.pt'}}}\n"
            f"  unet: {{weights: {models / 'unet' / 'model.pt'}}}\n"
        )
        extra = [weights]
    args, configs = _as_test_run(command, tmp_path, extra)
    if not {"-n", "--summary", "--lint"} & set(args):
        args.append("-n")
    proc = run_snakemake(tmp_path, *args, configfiles=configs)
    assert "Traceback" not in proc.stderr
    if "--lint" in args:
        assert "in a good condition" in proc.stderr, proc.stderr[-2000:]
    elif "--summary" not in args:
        assert "Job stats:" in proc.stdout or "Nothing to be done" in proc.stdout, proc.stdout[-2000:]
