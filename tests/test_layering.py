"""Imports go one way: methods (pure torch) -> runtime -> engine -> ui / eval / cli."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "explorer"


def imports(folder: str) -> set[str]:
    found = set()
    for path in (PACKAGE / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                found.add(("." * node.level) + (node.module or ""))
    return found


def test_methods_are_pure_torch():
    bad = {m for m in imports("methods") if m.startswith(("transformers", "..", "explorer"))}
    assert not bad


def test_runtime_does_not_reach_up():
    assert not {m for m in imports("runtime") if "engine" in m or "ui" in m or "cli" in m}


def test_ui_never_touches_model_classes():
    if (PACKAGE / "ui").exists():
        assert not {m for m in imports("ui") if m.startswith("transformers") or "runtime" in m}
