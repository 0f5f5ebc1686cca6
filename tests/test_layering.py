"""Imports go one way (README, Layout): methods (pure torch) -> models -> runtime -> engine -> eval / cli -> ui -> app.

Every `explorer` module is read with `ast`; each import is resolved to the module it names (relative imports
included) and checked edge by edge, by module prefix, against the layer table below.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "explorer"

# The first name under explorer/ -> its layer; a module may import only from its own layer or lower ones.
LAYERS = {
    "methods": 0, "limits": 0, "boxes": 0,  # pure: torch and the standard library
    "models": 1, "images": 1, "settings": 1,  # model families (the only transformers-aware code); defaults
    "runtime": 2, "model_ref": 2,  # applying a method inside the forward pass
    "engine": 3, "results": 3, "resize_input": 3, "breaking": 3,  # runs N methods on one input
    "eval": 4, "toy": 4, "cli": 4,  # sweeps, the toy model's tools, the command line
    "ui": 5,  # Gradio: the page and its handlers
    "app": 6, "__main__": 6, "__init__": 6,  # entry points
    "testing": 9,  # test helpers: nothing in the package imports them
}
NEVER = {"methods": {"transformers"}, "ui": {"transformers", "explorer.models", "explorer.runtime"}}


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module in the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = modules()


def imported(name: str, path: Path) -> set[str]:
    """The modules `name` imports (relative imports resolved; `from pkg import mod` names the module)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module
            subs = {f"{base}.{alias.name}" for alias in node.names} & set(MODULES)
            found |= subs or {base}
    return found


def layer(module: str) -> tuple[str, int]:
    first = module.split(".")[1] if "." in module else "__init__"
    assert first in LAYERS, f"explorer.{first} has no layer: add it to LAYERS in tests/test_layering.py"
    return first, LAYERS[first]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_import_goes_down_the_layers(name):
    own, rank = layer(name)
    for target in sorted(imported(name, MODULES[name])):
        banned = {b for b in NEVER.get(own, ()) if target == b or target.startswith(b + ".")}
        assert not banned, f"{name} imports {target}: {own} never imports {banned.pop()}"
        if target == "explorer" or not target.startswith("explorer."):
            continue
        other, their = layer(target)
        assert their <= rank, f"{name} ({own}, layer {rank}) imports {target} ({other}, layer {their}): upwards"


def test_the_table_is_checked_against_real_edges():
    """The resolver sees the edges that matter (so the test above cannot pass by reading nothing)."""
    assert "explorer.engine" in imported("explorer.ui.compare_runs", MODULES["explorer.ui.compare_runs"])
    assert "explorer.breaking" in imported("explorer.ui.insight_handlers", MODULES["explorer.ui.insight_handlers"])
    assert "explorer.methods.base" in imported("explorer.methods.fastv", MODULES["explorer.methods.fastv"])
    assert {"ui", "methods", "runtime", "engine"} <= {layer(m)[0] for m in MODULES}
