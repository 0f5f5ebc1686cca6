"""Base for methods with several cut layers, cuts before the LLM, merges formed from vision features, or a KV
cache cut after prefill (the runtime, runtime/pruner.py, applies every method; a single cut is its one-stage case).

A staged method lists its `Stage`s; at each stage the runtime hands `select_stage` one view per image segment
holding the *current survivors* (rows; `view.index` gives their original segment indices) and a budget, and
applies the returned Selection (kept rows, merged rows). The last stage always ends at the requested budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Method, MethodError, SegmentView, Stage  # noqa: F401 (Stage: methods import it from here)


@dataclass(frozen=True)
class StagedMethod(Method):
    """A method that lists its own stages, budgets per stage or cache cut (the defaults live in Method)."""

    runtime: ClassVar[str] = "staged"


def fitting_layers(name: str, layers: tuple[int, ...], n_layers: int) -> list[int]:
    """The method's scoring layers that leave a layer after them to cut (L + 1 < depth); the rest are skipped."""
    fitting = [layer for layer in layers if layer + 1 < n_layers]
    if not fitting:
        raise MethodError(f"{name}: no layer of {list(layers)} leaves a layer after it in this "
                          f"{n_layers}-layer model; pass smaller layers")
    return fitting


def probed(view: SegmentView, name: str):
    """A runtime-probed view field; a view without it is a programming error, never silently replaced."""
    value = getattr(view, name)
    if value is None:
        raise MethodError(f"this method needs '{name}' in its view; run it through the engine's staged runtime")
    return value
