"""The conda environments in envs/: each parses, pins what pip installs, has what rules import.

Conda cannot run here (and `--use-conda` never runs in CI), so these tests check the env files
against what the code needs: the rule -> conda env and rule -> script map comes from Snakemake's
own parse of the workflow (tests/rule_inventory.py); a script's needs are the third-party imports
of the script and, transitively, of every thighct module it imports.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml
from rule_inventory import inventory

REPO = Path(__file__).resolve().parents[1]
ENVS = REPO / "envs"
SRC = REPO / "src"

# conda-forge names that differ from the PyPI distribution name.
CONDA_TO_PYPI = {"pytorch": "torch", "py-opencv": "opencv-python"}
# Packages pydicom needs at run time for compressed DICOM, though no module imports them.
DICOM_PLUGINS = {
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "pyjpegls",
}


def normalise(name: str) -> str:
    """A distribution name in PEP 503 normal form (lower case, runs of -_. as one dash)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_pins() -> dict[str, str]:
    """{distribution: version} of every `name==version` in pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += extra
    pins = {}
    for spec in specs:
        name, _, version = spec.partition("==")
        pins[normalise(name)] = version.strip()
    return pins


def env_files() -> list[Path]:
    return sorted(ENVS.glob("*.yaml"))


def env_packages(path: Path) -> dict[str, str]:
    """{distribution (PyPI name): pinned version} of an env file's conda and pip entries."""
    env = yaml.safe_load(path.read_text())
    packages = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for spec in dep.get("pip", []):
                name, _, version = spec.partition("==")
                packages[normalise(name)] = version
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*=?=\s*([0-9][^=\s]*)", dep)
        name, version = (match.group(1), match.group(2)) if match else (dep.strip(), "")
        name = normalise(CONDA_TO_PYPI.get(name, name))
        packages[name] = version
    return packages


@cache
def import_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def imported_modules(path: Path) -> set[str]:
    """Absolute module names a Python file imports, anywhere in the file (lazy imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative, inside the thighct package
                package = path.resolve().relative_to(SRC).parent.parts
                package = package[: len(package) - (node.level - 1)]
                module = ".".join([*package, *([module] if module else [])])
            names.add(module)
            # `from thighct import io` names the submodule thighct.io
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def thighct_file(module: str) -> Path | None:
    parts = module.split(".")
    base = SRC.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def third_party_imports(path: Path) -> frozenset[str]:
    """Top-level third-party modules a file needs, following thighct modules transitively."""
    seen, todo, needed = set(), [path], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for module in imported_modules(current):
            top = module.split(".")[0]
            if top == "thighct":
                # The package __init__ files run on import too.
                parts = module.split(".")
                for i in range(1, len(parts) + 1):
                    found = thighct_file(".".join(parts[:i]))
                    if found:
                        todo.append(found)
            elif top not in sys.stdlib_module_names and top not in ("__future__", "snakemake"):
                needed.add(top)
    return frozenset(needed)


def distributions_for(modules) -> set[str]:
    mapping = import_distributions()
    dists = set()
    for module in modules:
        found = mapping.get(module)
        assert found, f"import {module!r} is not installed in this venv (add it to pyproject.toml)"
        dists.update(normalise(d) for d in found)
    return dists


@pytest.fixture(scope="module")
def rules() -> list[dict]:
    return [r for r in inventory() if not r["norun"]]


@pytest.mark.parametrize("path", env_files(), ids=lambda p: p.name)
def test_env_file_parses_and_pins_every_package_to_the_pip_version(path):
    env = yaml.safe_load(path.read_text())
    assert set(env) >= {"name", "channels", "dependencies"}, path.name
    assert "conda-forge" in env["channels"], path.name
    deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in deps, f"{path.name}: the scripts run with the workflow's Python 3.11"
    pins = pyproject_pins()
    for name, version in env_packages(path).items():
        if name in ("python", "pip"):
            continue
        assert name in pins, f"{path.name}: {name} is not a pinned dependency in pyproject.toml"
        assert version == pins[name], (
            f"{path.name}: {name}={version or '(unpinned)'}, but pyproject.toml pins {pins[name]}"
        )


@pytest.mark.parametrize("path", env_files(), ids=lambda p: p.name)
def test_env_file_has_no_local_pip_paths(path):
    # Snakemake copies an env file to .snakemake/conda/<hash>.yaml before `conda env create`,
    # so a relative path such as `-e ../` would point into .snakemake/. thighct is installed
    # by the env's post-deploy script instead (next test).
    env = yaml.safe_load(path.read_text())
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for spec in dep.get("pip", []):
                assert not spec.startswith(("-e", ".", "/", "file:")), f"{path.name}: {spec}"


@pytest.mark.parametrize("path", env_files(), ids=lambda p: p.name)
def test_each_env_installs_thighct_from_the_repository_that_runs_the_workflow(path, tmp_path):
    # The post-deploy script, run as Snakemake runs it (in the env, THIGHCT_REPO exported by the
    # Snakefile), makes `import thighct` work from the env alone: here a bare venv stands in for
    # the conda env, and the import runs outside the repository with no PYTHONPATH.
    script = path.with_name(path.stem + ".post-deploy.sh")
    assert script.is_file(), f"{path.name} has no post-deploy script"
    assert "THIGHCT_REPO" in (REPO / "Snakefile").read_text()
    if path.name != "base.yaml":  # the same script for every env; install once
        assert script.read_text() == path.with_name("base.post-deploy.sh").read_text()
        return
    venv = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(THIGHCT_REPO=str(REPO), PATH=f"{venv / 'bin'}:{env['PATH']}")
    proc = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import thighct; print(thighct.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True,
    )
    assert where.returncode == 0, where.stderr[-2000:]
    assert where.stdout.strip() == str(REPO / "src" / "thighct" / "__init__.py")


def test_every_rule_has_a_conda_env_from_envs(rules):
    for rule in rules:
        assert rule["conda"], f"rule {rule['name']} has no conda: directive"
        path = Path(rule["conda"])
        assert path.parent == ENVS and path.is_file(), f"rule {rule['name']}: {path}"


def test_every_env_is_used_by_some_rule(rules):
    used = {Path(r["conda"]).name for r in rules if r["conda"]}
    unused = [p.name for p in env_files() if p.name not in used]
    assert not unused, f"env files no rule uses: {unused}"


def test_each_env_lists_the_packages_its_rules_scripts_import(rules):
    missing = []
    for rule in rules:
        if not rule["script"] or not rule["conda"]:
            continue
        needed = distributions_for(third_party_imports(Path(rule["script"])))
        listed = set(env_packages(Path(rule["conda"])))
        if "pydicom" in needed:
            needed |= DICOM_PLUGINS
        for dist in sorted(needed - listed):
            missing.append(f"rule {rule['name']} ({Path(rule['conda']).name}) needs {dist}")
    assert not missing, "\n".join(missing)


def test_the_import_scan_follows_thighct_modules():
    # A script importing only thighct.labels still needs what labels imports (pandas).
    script = REPO / "workflow" / "scripts" / "label_tables.py"
    assert "pandas" in third_party_imports(script)
