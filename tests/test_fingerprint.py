"""The code fingerprint ignores docstrings, comments and layout, and follows imports."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from thighct import fingerprint, run_settings, train

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
