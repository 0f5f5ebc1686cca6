"""The method interface: what a pruning method sees (a view) and what it returns (a selection).

Pure torch. A method is a frozen dataclass of its knobs (hashable, so it can key a cache) with one
`select(view, k)`; the runtime decides where in the forward pass it runs and how its choice is applied.
Most methods start from a tier that writes the rest: `ScoredMethod` (scored.py: only a score per token),
`PreLLMMethod` and `LayeredMethod` (staged.py: cuts before the LLM, or after the method's own layers).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .knobs import knob, knob_fields, knob_problem


class MethodError(ValueError):
    """A method's configuration or budget is invalid; the message is meant for the user."""


class NotApplicable(MethodError):
    """The method cannot run on this model or input (e.g. it needs a [CLS] token the tower lacks); one sentence."""


CONVENTIONS = ("paper", "final")  # how `keep` sets a method's budget; see Method
RANKINGS = ("authors", "per_grid")  # how a multi-grid image (LLaVA-NeXT) is ranked; see Method


@dataclass(frozen=True)
class SegmentView:
    """One image segment (a rectangular token grid) as seen by a method, batch 1, read-only.

    LLaVA-1.5 and Qwen2-VL images are one segment; LLaVA-NeXT images are two (base grid, high-res grid).
    """

    hidden: torch.Tensor  # (n, D) hidden states of the segment's tokens entering the cut layer
    grid: tuple[int, int]  # (h, w) with h * w == n, row-major
    last_hidden: torch.Tensor  # (D,) hidden state of the sequence's last token entering the cut layer
    attention: dict[str, torch.Tensor] = field(default_factory=dict)  # query name -> (n,) head-averaged
    seed: int = 0  # per-segment seed, already offset by image/segment index
    # Optional inputs the runtime fills when a stage names them (runtime/probes.py); None otherwise.
    index: torch.Tensor | None = None  # (n,) original segment index of each row (progressive cuts: survivors)
    normed: torch.Tensor | None = None  # (n, D) hidden after the LM's final norm (DART's similarity space)
    key_norms: torch.Tensor | None = None  # (n,) L1 norm of the keys at layer K-1 (RoPE applied)
    text_hidden: torch.Tensor | None = None  # (T, D) final-norm hidden of the text tokens after the images
    text_embeds: torch.Tensor | None = None  # (T, D) the same text tokens entering the cut layer, no norm
    text_key_norms: torch.Tensor | None = None  # (T,) L1 norm of their keys at layer K-1
    text_attention: torch.Tensor | None = None  # (T, n) attention of each text token to these rows, K-1
    cls_attention: torch.Tensor | None = None  # (n,) vision tower [CLS] -> patch attention, heads averaged
    vision_keys: torch.Tensor | None = None  # (n, d) vision-tower keys at that layer, heads averaged
    cls_feature: torch.Tensor | None = None  # (Dv,) the [CLS] row of that layer's output (projector input space)

    @property
    def n(self) -> int:
        return self.hidden.shape[0]


@dataclass(frozen=True)
class Stage:
    """One cut. `layer`: the decoder layer whose input is cut (0 = the LM's input). `needs`: the named probes and
    view fields the runtime fills for it (runtime/probes.py lists them). `at="projector"`: scored on the vision
    features before the projector (pre-LLM; merges there are formed in vision space); `at="tower"`: merged
    inside the vision tower (runtime/vision_merge.py)."""

    layer: int
    needs: tuple[str, ...] = ()
    at: str = "layer"


@dataclass(frozen=True)
class Selection:
    """What survives of one segment: unchanged tokens plus optional merged tokens.

    `kept` are sorted unique indices into the segment; `merge` rows (one per merged token) are weights over
    the segment's tokens that sum to 1; `parts` are named score components a UI may re-combine.
    """

    kept: torch.Tensor  # (k_kept,) long, sorted, unique
    scores: torch.Tensor | None = None  # (n,) higher = more likely kept
    merge: torch.Tensor | None = None  # (g, n) merge weights, rows sum to 1
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (n,)
    merged: torch.Tensor | None = None  # (g, D) merged vectors when they are not `merge @ hidden` (VisionZip)

    @property
    def size(self) -> int:
        return int(self.kept.numel()) + (0 if self.merge is None else int(self.merge.shape[0]))

    def groups(self) -> list[list[int]]:
        """Original token indices each merged token came from (non-zero weights)."""
        if self.merge is None:
            return []
        return [torch.nonzero(row > 0).flatten().tolist() for row in self.merge]


@dataclass(frozen=True)
class Method:
    """Base knobs shared by every method. Subclasses add their own knobs (`knob(...)` fields) and implement `select`.

    A subclass names itself in its class line and describes itself in its docstring, which becomes its `note`:
    `class FastV(ScoredMethod, name="fastv", label="FastV (last-token attention)", span="joint"):`.

    Budget: exactly one of `keep` (tokens per image) or `ratio` (fraction of each image's tokens).
    `convention`: "paper" = the budget the authors' code sets for the setting named `keep` (e.g. SparseVLM's
    per-layer lists, DART's pivots + 8-multiple, VisionZip's [CLS]); "final" = exactly `keep` tokens after the
    last cut. Methods whose authors keep exactly `keep` behave the same under both.
    `ranking` (images of several grids only, LLaVA-NeXT): "authors" ranks the image span as the method's authors'
    code does (`span`: "joint" = one ranking over base + high-res grids, newline tokens candidates like any
    token; "tiles_no_newlines" = one ranking per vision-tower tile, newlines dropped; "grids" = per grid);
    "per_grid" = each grid ranked on its own with the budget split by grid size.
    `layer` is K, the decoder layer whose input is cut (attention scores come from layer K-1); a method that
    cuts elsewhere fixes it (init=False) and has its own knobs for where it cuts.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    prunes: ClassVar[bool] = True  # False only for the unpruned reference
    runtime: ClassVar[str] = "single"  # results count tokens: "single" (at K), "staged" (per cut and per layer)
    queries: ClassVar[tuple[str, ...]] = ()  # attention rows needed at K-1: "last", "last_visual", "all"
    requires: ClassVar[tuple[str, ...]] = ()  # model capabilities checked before any model work (Family.lacks)
    note: ClassVar[str] = ""  # one paragraph: what the authors' code does / what this implementation does
    span: ClassVar[str] = "grids"  # the authors' unit on a multi-grid image (see `ranking` above)
    span_differs: ClassVar[str] = ""  # where `span` is not the authors' unit: why (shown instead of "as the authors")
    # What the runtime reads about where and how a method cuts (one runtime; a single cut is the one-stage case):
    pre_llm: ClassVar[bool] = False  # the only cut is before the LLM: 1-D positions are renumbered 0..L'-1
    cut_cache: ClassVar[bool] = False  # after prefill, KV caches from `cache_cut_from` keep only the final survivors
    where: ClassVar[str] = ""  # one sentence for the result: where the cut happens ("" = the runtime says it)

    keep: int | None = knob(None, "image tokens kept per image", range=(1, None))
    ratio: float | None = knob(None, "fraction of each image's tokens kept, in (0, 1]", range=(0.0, 1.0))
    layer: int = knob(2, "K: the decoder layer whose input is cut", range=(0, None))
    convention: str = knob("paper", "what keep means: each method as its authors, or exactly keep",
                           choices=CONVENTIONS)
    ranking: str = knob("authors", "LLaVA-NeXT: rank the image span as the authors (one ranking, or per tile) or "
                                   "each grid separately with the budget split by size", choices=RANKINGS)

    def __init_subclass__(cls, name: str | None = None, label: str | None = None, span: str | None = None,
                          **kwargs) -> None:
        """A registered method's identity from its class line; its docstring (one paragraph) is its `note`."""
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name, cls.label, cls.note = name, label or name, " ".join((cls.__doc__ or "").split())
        if span is not None:
            cls.span = span

    def __post_init__(self) -> None:
        """Every knob checked against its field's type, range and choices (one line saying which and why), then
        the rules that tie knobs together."""
        for f in knob_fields(type(self)):
            problem = knob_problem(type(self), f, getattr(self, f.name))
            if problem:
                raise MethodError(problem)
        if self.keep is not None and self.ratio is not None:
            raise MethodError("give either keep or ratio, not both")
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise MethodError(f"ratio must be in (0, 1], got {self.ratio!r}")
        if self.needs() and self.layer < 1:
            raise MethodError(f"{self.name} scores with attention at layer K-1, so K must be >= 1")

    @classmethod
    def knobs(cls) -> tuple[dataclasses.Field, ...]:
        """The fields a caller may set, each with its default and `metadata` (help, range, choices)."""
        return knob_fields(cls)

    def needs(self) -> tuple[str, ...]:
        """Attention rows the runtime must probe at layer K-1 for this configuration."""
        return self.queries

    def unit(self) -> str:
        """How this configuration ranks a multi-grid image: its `span` under "authors", else "grids"."""
        return self.span if self.ranking == "authors" else "grids"

    def for_depth(self, n_layers: int) -> Method:
        """This method as a model of `n_layers` decoder layers runs it (see StagedMethod); itself here."""
        return self

    def budget(self, n: int) -> int:
        """Tokens to keep out of `n` image tokens (per image)."""
        if not self.prunes or (self.keep is None and self.ratio is None):
            return n
        if self.keep is not None:
            if self.keep > n:
                raise MethodError(f"keep={self.keep} is more than the image's {n} tokens")
            return self.keep
        return max(1, math.floor(n * self.ratio))

    def select(self, view: SegmentView, k: int) -> Selection:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- stages: one cut at K unless a method lists several (methods/staged.py) ---------------------------
    def stages(self, n_layers: int) -> list[Stage]:
        """The cuts, in forward order; by default one at layer K scored on the attention rows `needs()` names."""
        return [Stage(self.layer, self.needs())]

    def stage_budget(self, stage: int, n: int, k: int) -> int:
        """Tokens of a segment of n tokens left after `stage` when the method ends at k (last stage: k)."""
        return k

    def select_stage(self, stage: int, view: SegmentView, k: int) -> Selection:
        return self.select(view, k)

    def check_layers(self, n_layers: int) -> None:
        layers = [s.layer for s in self.stages(n_layers)]
        if layers != sorted(set(layers)) or layers[-1] >= n_layers:
            raise MethodError(f"{self.name}: cut layers {layers} must be increasing and below the model's "
                              f"{n_layers} layers (layer K out of range)")
        for s in self.stages(n_layers):
            if s.layer == 0 and any(need in ("keys", "text_attention") for need in s.needs):
                raise MethodError(f"{self.name}: attention is read at layer K-1, so K must be >= 1")

    def cache_cut_from(self, n_layers: int) -> int:
        """First layer whose KV cache is cut to the final survivors after prefill (where `cut_cache`)."""
        return 0

    def choose_raters(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(T,) bool: the text tokens whose attention rows rate the image (for a stage that needs "raters")."""
        raise MethodError(f"{self.name} asks for text raters but does not say how to choose them")

    def from_scores(self, scores: torch.Tensor | None, parts: dict[str, torch.Tensor], k: int) -> Selection | None:
        """This configuration's selection of k tokens re-derived from a run's reported `scores` (n,) and score
        `parts` (name -> (n,)), or None where its choice is not a function of them (re-selection without a run)."""
        return None

    def config(self) -> dict:
        """Every knob (the fields a caller may set), JSON-serialisable, with the registry name."""
        return {"method": self.name, **{f.name: getattr(self, f.name) for f in knob_fields(type(self))}}
