"""The layer contracts in pyproject.toml hold, and breaking one fails the check CI runs.

`lint-imports` (import-linter) reads the contracts from pyproject.toml. Each
violation below is written into a copy of the tree, so the check is shown to
fail on the kinds of arrows the architecture forbids: the core importing Ray,
a backend importing the core, the actor shells importing the HTTP edge, the
edge importing a face, and a cycle made only by function-level imports.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("dwray", "actors", "serve_apps")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(command), "--no-cache"], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_hold_on_this_tree() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + "\n" + text + "\n")


VIOLATIONS = {
    "core imports ray": ("dwray/core/names.py", "import ray", "dwray.core is not allowed to import ray"),
    "backend imports the core": ("dwray/backends/memory.py", "from dwray.core import names",
                                 "dwray.backends is not allowed to import dwray.core"),
    "actors import the edge": ("actors/gateway_coordinator.py", "import serve_apps.metrics",
                               "actors is not allowed to import serve_apps"),
    "edge imports a face": ("serve_apps/admin.py",
                            "def _face():\n    from dwray.client import connect\n    return connect",
                            "serve_apps is not allowed to import dwray.client"),
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_a_wrong_arrow_fails_the_check(tree: Path, name: str) -> None:
    module, line, message = VIOLATIONS[name]
    append(tree / module, line)
    result = lint_imports(tree)
    assert result.returncode != 0
    assert message in result.stdout, result.stdout


def test_a_cycle_of_function_level_imports_fails_the_check(tree: Path) -> None:
    # frames is imported by pipeline; a function in frames importing pipeline closes a circle.
    append(tree / "dwray/core/frames.py", "def _late():\n    from dwray.core import pipeline\n    return pipeline")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "No import cycles" in result.stdout and "BROKEN" in result.stdout, result.stdout
