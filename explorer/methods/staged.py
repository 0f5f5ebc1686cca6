"""Base for methods with several cut layers, cuts before the LLM, merges formed from vision features, or a KV
cache cut after prefill (the runtime, runtime/pruner.py, applies every method; a single cut is its one-stage case).

A staged method lists its `Stage`s; at each stage the runtime hands `select_stage` one view per image segment
holding the *current survivors* (rows; `view.index` gives their original segment indices) and a budget, and
applies the returned Selection (kept rows, merged rows). The last stage always ends at the requested budget.
Two bases spare a method the stage plumbing: `PreLLMMethod` (one cut before the LLM) and `LayeredMethod` (a cut
after each of its own `layers`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from .base import Method, MethodError, SegmentView, Stage  # noqa: F401 (Stage: methods import it from here)


@dataclass(frozen=True)
class StagedMethod(Method):
    """A method that lists its own stages, budgets per stage or cache cut (the defaults live in Method)."""

    runtime: ClassVar[str] = "staged"


@dataclass(frozen=True)
class PreLLMMethod(StagedMethod):
    """A method whose one cut is before the LLM: on the projector's output (the LM's input, `scored_on="layer"`)
    or on the vision features before the projector (`scored_on="projector"`). K is not its knob."""

    pre_llm: ClassVar[bool] = True
    probes: ClassVar[tuple[str, ...]] = ()  # what the runtime hands the view at the cut (Stage.needs)
    scored_on: ClassVar[str] = "layer"  # "layer": the LM's input; "projector": vision features before it
    layer: int = field(default=0, init=False)  # the cut is at the LM's input

    def stages(self, n_layers):
        return [Stage(0, self.probes, at=self.scored_on)]


@dataclass(frozen=True)
class LayeredMethod(StagedMethod):
    """A method that cuts after each of its own LLM layers (a `layers` knob each subclass declares with its
    authors' default, `knob(..., increasing=True)`); K is not its knob. `stages_before` are its stages ahead of the
    first LLM cut."""

    stages_before: ClassVar[tuple[Stage, ...]] = ()
    cut_needs: ClassVar[tuple[str, ...]] = ()  # what the runtime probes for each LLM cut (Stage.needs)
    layer: int = field(default=0, init=False)  # unused: the cuts are after `layers`

    def stages(self, n_layers):
        """The stages before the LLM, then one cut at the input of L + 1 for each L in `layers`."""
        return [*self.stages_before, *(Stage(layer + 1, self.cut_needs) for layer in self.layers)]

    def check_layers(self, n_layers: int) -> None:
        if self.layers[-1] + 1 >= n_layers:
            raise MethodError(f"{self.name}: layers {self.layers} go past this {n_layers}-layer model (a cut after "
                              f"L needs L + 1 < {n_layers}); pass smaller layers, or run for_depth({n_layers})")
        super().check_layers(n_layers)

    @property
    def cuts(self) -> int:
        """LLM cuts (stages after `stages_before`)."""
        return len(self.layers)

    def for_depth(self, n_layers: int) -> LayeredMethod:
        """This method with the layers a model of `n_layers` decoder layers can cut after (L + 1 < n_layers) —
        the engine runs that one and reports it; itself when every layer fits. A new object: methods are cache
        keys and never change."""
        fitting = fitting_layers(self.name, self.layers, n_layers)
        return self if len(fitting) == len(self.layers) else dataclasses.replace(self, layers=tuple(fitting))


def fitting_layers(name: str, layers: tuple[int, ...], n_layers: int) -> list[int]:
    """The method's scoring layers that leave a layer after them to cut (L + 1 < depth); the rest are dropped."""
    fitting = [layer for layer in layers if layer + 1 < n_layers]
    if not fitting:
        raise MethodError(f"{name}: no layer of {list(layers)} leaves a layer after it in this "
                          f"{n_layers}-layer model; pass smaller layers")
    return fitting


def probed(view: SegmentView, name: str):
    """A runtime-probed view field; a view without it is a programming error, never silently replaced."""
    value = getattr(view, name)
    if value is None:
        raise MethodError(f"this method needs '{name}' in its view; run it through the engine (the runtime hands it)")
    return value
