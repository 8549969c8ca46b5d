"""Fingerprints of the library code a rule runs, blind to comments, docstrings and formatting.

Snakemake tracks a rule's script, not the library modules the script imports. Declaring the
modules as inputs would rerun jobs whenever a file is saved (mtime), even for a comment. Instead
each rule carries, as a param, the fingerprint of the thighct modules its script imports, with
everything those import in turn: the SHA-256 of their syntax trees with every docstring and bare
string statement removed. Editing a comment or docstring or reformatting leaves it unchanged; a
change to the code changes it, and Snakemake reruns exactly the jobs whose code changed.

Package data a module reads at run time (the phantoms' anatomy) is code too: a module lists
those files, relative to its own folder, in a module-level literal ``DATA_FILES = ("x.yaml",)``
and every fingerprint that covers the module covers their content. YAML and JSON files enter as
their parsed data, so a comment or layout edit there reruns nothing either; other files enter
byte for byte.

What a fingerprint cannot see: third-party packages (their versions are pinned in
pyproject.toml and envs/), and Python versions whose syntax trees differ (a new Python may
rerun jobs once).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path

import yaml

#: Root of the thighct package.
PACKAGE = Path(__file__).resolve().parent
NAME = "thighct"
#: The module-level name under which a module lists the package data files it reads.
DECLARATION = "DATA_FILES"


def module_path(module: str) -> Path | None:
    """The file of ``thighct[.sub].module`` ('plots.style', 'plots/style' or 'thighct.io')."""
    parts = [p for p in module.replace("/", ".").split(".") if p]
    if parts and parts[0] == NAME:
        parts = parts[1:]
    base = PACKAGE.joinpath(*parts) if parts else PACKAGE
    if base.is_dir() and (base / "__init__.py").is_file():
        return base / "__init__.py"
    file = base.with_suffix(".py")
    return file if file.is_file() else None


def _dotted(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([NAME, *parts])


def _package_of(path: Path) -> list[str]:
    """The package a module file belongs to, as name parts (``thighct.plots`` for plots/x.py)."""
    dotted = _dotted(path).split(".")
    return dotted if path.name == "__init__.py" else dotted[:-1]


def imported_modules(tree: ast.AST, path: Path | None = None) -> set[str]:
    """The thighct modules that ``tree`` imports (absolute, or relative to ``path``)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == NAME)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if path is None:
                    continue
                package = _package_of(path)
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != NAME:
                continue
            found.add(base)
            # `from thighct import io` imports the submodule io.
            found.update(f"{base}.{a.name}" for a in node.names if module_path(f"{base}.{a.name}"))
    return {m for m in found if module_path(m) is not None}


def _with_parents(module: str) -> set[str]:
    """A module and the packages above it (importing a submodule runs their __init__)."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


@functools.cache
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def closure(modules: set[str] | list[str]) -> list[str]:
    """``modules`` and every thighct module they import, directly or not (sorted)."""
    todo = set()
    for m in modules:
        todo |= _with_parents(m if m.split(".")[0] == NAME else f"{NAME}.{m.replace('/', '.')}")
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = module_path(module)
        if path is None:
            raise ValueError(f"no thighct module {module!r} under {PACKAGE}")
        seen.add(module)
        for found in imported_modules(_parsed(path), path):
            todo |= _with_parents(found) - seen
    return sorted(seen)


class _StripStrings(ast.NodeTransformer):
    """Remove docstrings and every other statement that is only a string constant."""

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
                continue
            kept = [
                s
                for s in body
                if not (
                    isinstance(s, ast.Expr)
                    and isinstance(s.value, ast.Constant)
                    and isinstance(s.value.value, str)
                )
            ]
            setattr(node, field, kept or [ast.Pass()])
        return node


@functools.cache
def source_fingerprint(path: Path) -> str:
    """SHA-256 of one file's syntax tree without docstrings (comments and layout never enter)."""
    tree = _StripStrings().visit(ast.parse(Path(path).read_text(), filename=str(path)))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def data_files(path: Path) -> list[Path]:
    """The package data files a module declares in ``DATA_FILES`` (next to the module)."""
    found = []
    for node in _parsed(Path(path)).body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        if not any(isinstance(t, ast.Name) and t.id == DECLARATION for t in targets):
            continue
        try:
            names = ast.literal_eval(node.value)
        except ValueError:
            names = None
        if not isinstance(names, tuple | list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{path}: {DECLARATION} must be a literal tuple of file names")
        found = [Path(path).parent / n for n in names]
    for file in found:
        if not file.is_file():
            raise ValueError(
                f"{path}: {DECLARATION} names {file.name}, which is not in {file.parent}"
            )
    return found


def data_fingerprint(path: Path) -> str:
    """SHA-256 of a data file: YAML and JSON by their parsed content, other files by bytes."""
    stat = Path(path).stat()
    return _data_fingerprint(Path(path), stat.st_mtime_ns, stat.st_size)


@functools.cache
def _data_fingerprint(path: Path, mtime_ns: int, size: int) -> str:
    # mtime and size key the cache, so an edited file is read again.
    if path.suffix in (".yaml", ".yml", ".json"):
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    else:
        text = path.read_bytes()
    return hashlib.sha256(text).hexdigest()


def code_fingerprint(*modules: str) -> str:
    """Fingerprint of ``modules`` and everything they import from thighct, with the data
    files they declare (16 hex digits)."""
    digest = hashlib.sha256()
    for module in closure(list(modules)):
        path = module_path(module)
        digest.update(f"{module}:{source_fingerprint(path)}\n".encode())
        for file in data_files(path):
            digest.update(f"{module}:{file.name}:{data_fingerprint(file)}\n".encode())
    return digest.hexdigest()[:16]


def script_fingerprint(script: str | Path) -> str:
    """Fingerprint of the thighct code a rule's script imports (the script itself excluded:
    Snakemake tracks it)."""
    path = Path(script)
    modules = imported_modules(_parsed(path.resolve()))
    return code_fingerprint(*sorted(modules)) if modules else ""
