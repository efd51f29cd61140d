"""The house's shape, checked: import-linter's contracts (layers, no cycles) and no module reaching into another
module's ``_private`` names (by ``from mrdkit.x import _y`` or by ``x._y`` on an imported mrdkit module)."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "mrdkit"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_cross_imports(path: Path) -> list[str]:
    """``module: imported name`` for every private name this file takes from another mrdkit module."""
    here, tree = module_name(path), ast.parse(path.read_text(), str(path))
    module_aliases: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mrdkit") and node.module != here:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{here}: from {node.module} import {alias.name}")
                elif (SRC.parent / node.module.replace(".", "/") / f"{alias.name}.py").exists():
                    module_aliases.add(alias.asname or alias.name)  # ``from mrdkit.scoring import engine``
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mrdkit.") and alias.asname:
                    module_aliases.add(alias.asname)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in module_aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{here}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    found = [hit for path in sorted(SRC.rglob("*.py")) for hit in private_cross_imports(path)]
    assert found == []


def test_the_private_name_check_can_fail(tmp_path, monkeypatch):
    """The checker itself: a planted cross-module private import and attribute access are both reported."""
    fake = tmp_path / "mrdkit"
    (fake / "scoring").mkdir(parents=True)
    (fake / "scoring" / "engine.py").write_text("def _hidden():\n    pass\n")
    bad = fake / "bench.py"
    bad.write_text("from mrdkit.scoring.engine import _hidden\nfrom mrdkit.scoring import engine\nengine._hidden()\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    assert private_cross_imports(bad) == ["mrdkit.bench: from mrdkit.scoring.engine import _hidden",
                                         "mrdkit.bench: engine._hidden"]


def test_import_linter_contracts_are_kept():
    """Layers (cli > bench > testbed > evaluation > unlearning > scoring > data|models > core) and no cycles:
    the contracts in pyproject.toml, run by import-linter itself."""
    lint = pytest.importorskip("importlinter.cli", reason="import-linter is part of the test extra")
    root = SRC.parents[1]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert lint.lint_imports(config_filename=str(root / "pyproject.toml")) == 0
    finally:
        os.chdir(cwd)
