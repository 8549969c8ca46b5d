"""The code fingerprint ignores docstrings, comments and layout, and follows imports."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO

from thighct import fingerprint, run_settings, train
from thighct.synthetic import anatomy

CODE = '''"""Module docstring."""
import os


def f(x):
    """Docstring."""
    # a comment
    return x + 1


class A:
    """Class docstring."""

    y: int = 2
    """An attribute docstring."""
'''


def _fp(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return fingerprint.source_fingerprint(path)


def test_docstrings_comments_and_layout_leave_the_fingerprint_unchanged(tmp_path):
    base = _fp(tmp_path, "a.py", CODE)
    edited = (
        CODE.replace("Docstring.", "Another docstring, longer.")
        .replace("# a comment", "# another comment\n    # and one more")
        .replace("return x + 1", "return (\n        x\n        + 1\n    )")
        .replace('    """An attribute docstring."""\n', "")
    )
    assert _fp(tmp_path, "b.py", edited) == base
    stripped = CODE.replace('    """Docstring."""\n', "")
    assert _fp(tmp_path, "c.py", stripped) == base


@pytest.mark.parametrize(
    "change",
    [("x + 1", "x + 2"), ("y: int = 2", "y: int = 3"), ("import os", "import sys")],
)
def test_a_code_change_changes_the_fingerprint(tmp_path, change):
    assert _fp(tmp_path, "a.py", CODE) != _fp(tmp_path, "b.py", CODE.replace(*change))


def test_the_closure_follows_imports_through_the_package():
    modules = fingerprint.closure(["train"])
    assert {"thighct.train", "thighct.models", "thighct.io", "thighct.labels"} <= set(modules)
    assert "thighct.stats" not in modules
    plots = fingerprint.closure(["plots/sarcopenia"])
    assert {"thighct.plots", "thighct.plots.style", "thighct.plots.sarcopenia"} <= set(plots)


def test_a_script_fingerprint_covers_what_the_script_imports():
    script = REPO / "workflow" / "scripts" / "train.py"
    assert fingerprint.script_fingerprint(script) == fingerprint.code_fingerprint(
        "runlog", "labels", "train", "run_settings"
    )
    assert fingerprint.script_fingerprint(script) != fingerprint.script_fingerprint(
        REPO / "workflow" / "scripts" / "correlate.py"
    )


def test_run_settings_and_science_split_each_section_without_overlap():
    section = {"lr": 1e-3, "threads": 4, "resources": {"gpu": 1}, "checkpoint_dir": "x"}
    assert run_settings.science("train", section) == {"lr": 1e-3}
    assert set(run_settings.run_only("train", section)) == {
        "threads",
        "resources",
        "checkpoint_dir",
    }
    # The training hash and model.pt's metadata leave out exactly the run settings.
    assert set(train.NON_TRAINING_KEYS) == run_settings.RUN_KEYS["train"]


def test_a_models_own_window_settings_merge_over_the_shared_ones():
    cfg = {"overlap": 0.25, "workers": 1, "by_model": {"unet": {"overlap": 0.5}}, "figure": {}}
    assert run_settings.infer_for_model(cfg, "unet") == {"overlap": 0.5, "workers": 1}
    assert run_settings.infer_for_model(cfg, "unetr") == {"overlap": 0.25, "workers": 1}


SCRIPTS = REPO / "workflow" / "scripts"


def _package_copy(tmp_path: Path, monkeypatch) -> Path:
    """A copy of the thighct package, which the fingerprint reads from now on."""
    copy = tmp_path / "copy" / "thighct"
    shutil.copytree(fingerprint.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprint, "PACKAGE", copy)
    return copy


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_anatomy_module_declares_its_data_file():
    module = fingerprint.module_path("thighct.synthetic.anatomy")
    assert fingerprint.data_files(module) == [anatomy.ANATOMY_FILE]
    assert "thighct.synthetic.anatomy" in fingerprint.closure(["synthetic"])
    assert fingerprint.data_files(fingerprint.module_path("train")) == []


@pytest.mark.parametrize(
    "file, old, new, changes",
    [
        # A number of the anatomy: what the phantoms are made from changed.
        ("synthetic/anatomy.yaml", "[0.93, -8, 52, 7, 5, 30]", "[0.93, -8, 52, 8, 5, 30]", True),
        ("synthetic/anatomy.yaml", "u_top: 0.78", "u_top: 0.77", True),
        # Comments and layout of the anatomy, a comment in the code: nothing changed.
        ("synthetic/anatomy.yaml", "landmarks:\n", "landmarks:  # edited\n\n", False),
        ("synthetic/anatomy.yaml", "[0.93, -8, 52, 7, 5, 30]", "[ 0.93,  -8, 52, 7, 5, 30 ]", False),
        ("synthetic/render.py", "\ndef render(", "\n# a new comment\ndef render(", False),
    ],
)  # fmt: skip
def test_an_anatomy_edit_changes_the_phantom_scripts_fingerprint_a_comment_does_not(
    tmp_path, monkeypatch, file, old, new, changes
):
    scan, train_py = SCRIPTS / "synthetic_scan.py", SCRIPTS / "train.py"
    before = fingerprint.script_fingerprint(scan), fingerprint.script_fingerprint(train_py)
    copy = _package_copy(tmp_path, monkeypatch)
    _replace(copy / file, old, new)  # before the copy is read (fingerprints are cached by path)
    # Where the package lies does not enter the fingerprint; what changed in it may.
    assert (fingerprint.script_fingerprint(scan) != before[0]) is changes
    # Training runs no phantom code: its fingerprint never moves.
    assert fingerprint.script_fingerprint(train_py) == before[1]


@pytest.mark.parametrize(
    "file, old, new",
    [
        ("train/precision.py", "return torch.float16 if settings.amp else None", "return None"),
        ("train/checkpoint.py", "CHECKPOINT_VERSION = 1", "CHECKPOINT_VERSION = 2"),
        ("io/dicom.py", "spacing_tolerance * step", "2 * spacing_tolerance * step"),
    ],
)
def test_a_code_change_in_a_submodule_changes_the_fingerprint_of_a_script_importing_its_package(
    tmp_path, monkeypatch, file, old, new
):
    # The train script imports the package thighct.train, which imports thighct.io; each
    # package's __init__ re-exports its submodules, so the closure reaches every one of them.
    script = SCRIPTS / "train.py"
    package = file.split("/")[0]
    assert f"thighct.{file.removesuffix('.py').replace('/', '.')}" in fingerprint.closure([package])
    before = fingerprint.script_fingerprint(script)
    copy = _package_copy(tmp_path, monkeypatch)
    _replace(copy / file, old, new)
    assert fingerprint.script_fingerprint(script) != before


def test_data_files_are_declared_as_a_literal_naming_existing_files(tmp_path):
    (tmp_path / "table.tsv").write_text("a\tb\n")
    ok = tmp_path / "ok.py"
    ok.write_text('DATA_FILES: tuple[str, ...] = ("table.tsv",)\n')
    assert fingerprint.data_files(ok) == [tmp_path / "table.tsv"]
    computed = tmp_path / "computed.py"
    computed.write_text('NAME = "table.tsv"\nDATA_FILES = (NAME,)\n')
    with pytest.raises(ValueError, match="literal tuple"):
        fingerprint.data_files(computed)
    missing = tmp_path / "missing.py"
    missing.write_text('DATA_FILES = ("gone.yaml",)\n')
    with pytest.raises(ValueError, match="gone.yaml"):
        fingerprint.data_files(missing)
    # Files other than YAML and JSON enter byte for byte.
    first = fingerprint.data_fingerprint(tmp_path / "table.tsv")
    (tmp_path / "table.tsv").write_text("a\tb \n")
    assert fingerprint.data_fingerprint(tmp_path / "table.tsv") != first


def test_every_library_module_s_declaration_of_data_files_is_readable():
    # The fingerprint of a script reaches any module (the fingerprint module itself included).
    for path in (REPO / "src" / "thighct").rglob("*.py"):
        fingerprint.data_files(path)


def test_the_closure_of_a_package_covers_the_submodules_its_init_imports():
    stats_closure = fingerprint.closure(["stats"])
    assert {"thighct.stats.correlation", "thighct.stats.logistic"} <= set(stats_closure)
    assert "thighct.sarcopenia" in stats_closure  # `from ..sarcopenia import` in a submodule
    metrics_closure = fingerprint.closure(["metrics"])
    assert {"thighct.metrics.kernel", "thighct.metrics.icc"} <= set(metrics_closure)
    # A submodule's import inside a function, relative to the package above it (`from ..io`).
    assert "thighct.io" in metrics_closure


@pytest.mark.parametrize(
    "script, file, old, new, changes",
    [
        # `from thighct import stats`: a code change in a submodule of the package.
        ("correlate.py", "stats/correlation.py", "np.ptp(values) == 0", "np.ptp(values) <= 0", True),
        ("correlate.py", "stats/logistic.py", "max_iter: int = 100", "max_iter: int = 101", True),
        ("correlate.py", "stats/correlation.py", "\ndef bootstrap_ci(", "\n# a comment\ndef bootstrap_ci(", False),
        # `from thighct import metrics`: the kernel, which only the package's __init__ imports.
        ("metrics.py", "metrics/kernel.py", "CONFUSION_CHUNK_VOXELS = 1 << 22", "CONFUSION_CHUNK_VOXELS = 1 << 21", True),
        ("metrics.py", "metrics/kernel.py", "\ndef boundary(", "\n# a comment\ndef boundary(", False),
    ],
)  # fmt: skip
def test_a_change_in_a_submodule_changes_the_fingerprint_of_a_script_importing_the_package(
    tmp_path, monkeypatch, script, file, old, new, changes
):
    before = fingerprint.script_fingerprint(SCRIPTS / script)
    copy = _package_copy(tmp_path, monkeypatch)
    _replace(copy / file, old, new)  # before the copy is read (fingerprints are cached by path)
    assert (fingerprint.script_fingerprint(SCRIPTS / script) != before) is changes
