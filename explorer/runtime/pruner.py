"""The runtime: applies any method inside a stock transformers forward pass. A method lists its cuts (stages,
Method.stages: one at layer K unless it says otherwise); the runtime installs the probes the stages name
(probes.py), cuts the sequence at each stage's layer (plan.py decides what survives, cut.py applies it), merges
inside the vision tower or before the projector where a stage says so (vision_merge.py, vision_stage.py), and
cuts the KV cache after prefill where the method asks (`cut_cache`).

Forward pre-hooks only: no eager attention, no layer run twice, the shared per-call tensors (rotary cos/sin,
position ids, mask) sliced for every layer from the first cut on, never resized in place. Layers below a cut
keep their full sequence and KV cache. Every hook is registered inside `try` and removed on exit.

Positions: LLM-side cuts keep the survivors' original positions. A pre-LLM method (its only cut at the LM's
input) renumbers 1-D positions contiguously (0..L'-1, as if the image had fewer tokens, like the methods' own
code) and shifts decode positions to match; Qwen2-VL's 3-D M-RoPE positions are kept as they were.
"""
from __future__ import annotations

import time

import torch

from ..methods import Method, Selection, SegmentView
from ..methods.base import MethodError
from ..models.layout import ImageLayout
from .cut import cut_cache, cut_rows, merged_vectors, replace_hidden, slice_decode_mask, slice_prefill
from .hooks import HookSet
from .plan import CutPlan, Survivors, full_selections, unit_selections
from .probes import VISION, Probes, check_needs
from .spans import TILE_SPANS, select_tiles
from .vision_merge import TowerMerge
from .vision_stage import ProjectorStage


class Pruner:
    """Context manager: installs one run's hooks for one prefill + decode of `method`, then removes them and
    completes `plan`.
    `fixed`: replay these selections (segment index, per image and segment) at the method's one cut instead of
    selecting (no probes)."""

    def __init__(self, family, model, method: Method, layouts: list[ImageLayout], prompt_len: int,
                 fixed: list[list[Selection]] | None = None):
        self.family, self.model, self.method = family, model, method
        self.layouts, self.prompt_len, self.fixed = layouts, prompt_len, fixed
        self.layers = family.lm_layers(model)
        self.layer_index = {id(layer): i for i, layer in enumerate(self.layers)}
        self.hooks, self.ms = HookSet(), 0.0  # ms: scoring overhead of the cuts (probes' share added on exit)
        self.orders: dict[int, torch.Tensor] = {}  # cut layer -> (L',) sequence positions surviving it, ascending
        self.cache_orders: list[torch.Tensor] | None = None  # per layer: sequence positions cached after a KV cut
        self.pending: dict[int, list] = {}  # vision-side stage -> per image: [(view, selection)] per segment
        self.vision_index = None  # per image and segment: (n,) vision row of each token, from the processor inputs
        self.tiles = None  # per image and segment: (n,) vision-tower tile of each token (a per-tile LM-input cut)
        self.plan = CutPlan()
        self.stages = method.stages(len(self.layers)) if method.prunes else []
        if not self.stages:
            self.plan.selections = full_selections(layouts)
            self.renumber, self.tower, self.probes = False, None, Probes(self)
            return
        method.check_layers(len(self.layers))
        if fixed is not None and len(self.stages) > 1:
            raise ValueError(f"{method.name}: fixed selections replay a single cut")
        self.stage_at = {s.layer: i for i, s in enumerate(self.stages)}
        self.survivors = Survivors(layouts)
        self.renumber = method.pre_llm and family.positions == "1-D"
        needs = {n for s in self.stages for n in s.needs}
        check_needs(method.name, needs)
        self.uses_vision = bool(needs & VISION) or any(s.at in ("projector", "tower") for s in self.stages)
        if self.uses_vision:
            family.vision_attention(model)  # raises MethodError where the tower has no [CLS] (Qwen2-VL)
        numbering = "renumbered contiguously" if self.renumber else "original"
        self.plan.positions = f"{numbering} ({family.positions})"
        self.plan.where = method.where or f"decoder layer {method.layer}'s input (layers below keep every token)"
        self.plan.counts_per_cut = method.runtime == "staged"  # how the method's results count tokens
        self.probes = Probes(self)
        towers = [i for i, s in enumerate(self.stages) if s.at == "tower"]  # merges inside the vision tower
        self.tower = TowerMerge(self, towers[0]) if towers else None

    # ---- hooks --------------------------------------------------------------------------------------
    def __enter__(self):
        if not self.stages:
            return self
        try:
            self._register(self.hooks)
        except BaseException:
            self.hooks.remove()
            raise
        return self

    def __exit__(self, *exc):
        self.hooks.remove()
        if self.stages:
            self.plan.scoring_ms = self.ms + self.probes.ms
        if self.orders:
            self._fill_plan()

    def _register(self, hooks: HookSet) -> None:
        if self.uses_vision or self._tiles_at_input():
            hooks.pre(self.model, self._on_model, role="observe")
        if self.fixed is None:
            self.probes.register(hooks, self.stages)
        if self.tower:
            self.tower.register(hooks)
        for i, stage in enumerate(self.stages):
            if stage.at == "projector":
                projector = ProjectorStage(self, i)
                hooks.pre(self.family.projector(self.model), lambda m, a, p=projector: p.on_projector(a),
                          with_kwargs=False)
        for layer in self.layers[self.stages[0].layer:]:
            hooks.pre(layer, self._on_layer)
        lm = self.family.language_model(self.model)
        if self.renumber:
            hooks.pre(lm, self._on_lm_decode, role="decode")
        if self.method.cut_cache:
            hooks.post(lm, self._on_lm_done)
        hooks.adopt(self.family.cut_hooks(self.model, self.order_at))  # e.g. Qwen3-VL's DeepStack

    def _on_model(self, module, args, kwargs):
        if self.uses_vision and self.vision_index is None and kwargs.get("pixel_values") is not None:
            self.vision_index = self.family.vision_index(self.model, kwargs, self.layouts)
        if self._tiles_at_input() and self.tiles is None and kwargs.get("pixel_values") is not None:
            self.tiles = self._vision_tiles(kwargs)

    def _vision_tiles(self, inputs):
        """Each token's vision tile, or None where the family maps no tiles (LLaVA-OneVision): then per grid."""
        try:
            return self.family.vision_tiles(self.model, inputs, self.layouts)
        except MethodError:
            self.plan.ranked = "grids"
            return None

    def _tiles_at_input(self) -> bool:
        """A method ranked per vision tile whose one cut is at the LM's input (CDPruner): its cut needs the tiles."""
        return (self.method.unit() in TILE_SPANS and self.method.pre_llm and self.fixed is None
                and any(len(img.segments) > 1 for img in self.layouts) and self.stages[0].at == "layer")

    # ---- public state -----------------------------------------------------------------------------------
    def order_at(self, layer: int) -> torch.Tensor:
        """(L_layer,) sequence positions of the rows entering decoder `layer` (after every cut at or below it)."""
        cut = [c for c in self.orders if c <= layer]
        return self.orders[max(cut)] if cut else torch.arange(self.prompt_len)

    def positions_at(self, layer: int, decoding: bool = False) -> torch.Tensor:
        """(L_layer,) sequence positions of the prompt rows decoder `layer` sees in the prefill, or holds in its
        KV cache while decoding (after a KV-cache cut)."""
        cached = self.cache_orders
        return cached[layer] if decoding and cached else self.order_at(layer)

    @property
    def decode_offset(self) -> int:
        """What decode positions lose to the renumbering of a pre-LLM cut (0 when positions stay original)."""
        final = self.orders.get(0)
        return self.prompt_len - len(final) if self.renumber and final is not None else 0

    def query_positions(self, length: int) -> list[int]:
        """Sequence positions of the queries whose attention rows the method reads (prompt of `length`)."""
        return self.probes.query_positions(length)

    # ---- the cuts ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _on_layer(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # (1, L or L' or 1, D)
        i = self.layer_index[id(module)]
        prefill = hidden.shape[1] > 1
        if prefill and i in self.stage_at and i not in self.orders:
            started = time.perf_counter()
            hidden = self._cut(self.stage_at[i], hidden)
            _sync(hidden)
            self.ms += (time.perf_counter() - started) * 1e3
            args, kwargs = replace_hidden(args, kwargs, hidden)
        if not self.orders:
            return args, kwargs
        if prefill:
            return args, slice_prefill(kwargs, self.order_at(i), self.prompt_len, self.renumber)
        cached = self.cache_orders  # the mask of a decode step was built for layer 0's cache
        base, mine = (cached[0], cached[i]) if cached else (self.order_at(0), self.order_at(i))
        return args, slice_decode_mask(kwargs, base, mine)

    def _cut(self, stage_i: int, hidden: torch.Tensor) -> torch.Tensor:
        """The sequence entering the stage's layer (1, L, D) -> its survivors (1, L', D)."""
        stage = self.stages[stage_i]
        order = self.order_at(stage.layer - 1)  # (L,) sequence position of each row of `hidden`
        keep = torch.zeros(len(order), dtype=torch.bool)  # (L,) rows that survive; image rows set below
        keep[~_image_positions(order, self.layouts)] = True
        merged: dict[int, torch.Tensor] = {}  # sequence position of a group's first member -> (D,) its vector
        for img in self.layouts:
            reps = [self.survivors.reps(img, s) for s in range(len(img.segments))]  # per segment (m,) segment index
            rows = [torch.searchsorted(order, r + img.start + seg.offset)  # per segment (m,) row of `hidden`
                    for r, seg in zip(reps, img.segments)]
            row_of = {img.segments[s].offset + r: row for s in range(len(reps))  # image index -> row of `hidden`
                      for r, row in zip(reps[s].tolist(), rows[s].tolist())}
            for unit, index, sel, vectors in self._choose(stage_i, stage, img, hidden, rows, reps):
                survived = []
                for rep, group in self.survivors.apply(img, unit, sel, index):
                    survived.append(row_of[rep])
                    if group is not None and group < len(vectors):
                        merged[img.start + rep] = vectors[group]
                keep[torch.tensor(survived, dtype=torch.long)] = True
        new = order[keep]  # (L',) sequence positions surviving this cut
        self.orders[stage.layer] = new
        self.survivors.record(stage.layer)
        self.plan.order, self.plan.cuts = new, self.survivors.cuts
        return cut_rows(hidden, keep, new, merged)

    def _choose(self, stage_i, stage, img, hidden, rows, reps) -> list[tuple]:
        """What the stage selects on one image, per ranking unit: (its segments, the image index of its view's rows
        (m,), the selection, the merged vectors). A unit is one segment, or all of NeXT's grids ranked jointly."""
        def image_index(s, view):  # (m,) image index of a segment view's rows
            return img.segments[s].offset + (view.index if view.index is not None else reps[s])

        if stage.at in ("projector", "tower"):  # selected before the projector; merged rows already hold
            return [((s,), image_index(s, view), sel, [])  # projector(merge)
                    for s, (view, sel) in enumerate(self.pending[stage_i][img.index])]
        views = [self._view(stage, img, s, hidden, rows[s], reps[s]) for s in range(len(img.segments))]
        if self.fixed is not None:
            sels = self.fixed[img.index]
        elif self.tiles is not None and len(img.segments) > 1:  # the first cut: view rows = segment index
            sels = select_tiles(self.method, stage_i, img, views, self.tiles[img.index])
        else:
            return [(unit, torch.cat([image_index(s, views[s]) for s in unit]), sel, merged_vectors(sel, view.hidden))
                    for unit, view, sel in unit_selections(self.method, stage_i, img, views)]
        return [((s,), image_index(s, view), sel, merged_vectors(sel, view.hidden))
                for s, (view, sel) in enumerate(zip(views, sels))]

    def _view(self, stage, img, s, hidden, rows, reps) -> SegmentView:
        """Segment s's survivors as the method sees them: hidden states (m, D) at `rows` of `hidden`, the segment
        indices `reps`, and the probed fields the stage needs."""
        seg = img.segments[s]
        extra = self.probes.view_fields(stage, img, s, rows, reps, hidden, self.family.final_norm(self.model))
        return SegmentView(hidden=hidden[0, rows.to(hidden.device)], grid=seg.grid, last_hidden=hidden[0, -1],
                           index=reps, seed=img.index * 1000 + s, **extra)

    def _fill_plan(self) -> None:
        """The selections and per-layer counts, into the plan once the run ends (order and cuts follow each cut)."""
        n, total = len(self.layers), sum(img.count for img in self.layouts)
        self.plan.selections = self.survivors.selections()
        self.plan.seq_per_layer = [len(self.order_at(i)) for i in range(n)]
        self.plan.image_per_layer = [total - (self.prompt_len - m) for m in self.plan.seq_per_layer]

    # ---- decode: renumbered positions, KV-cache cut -------------------------------------------------------
    @torch.no_grad()
    def _on_lm_decode(self, module, args, kwargs):
        pos = kwargs.get("position_ids")
        if isinstance(pos, torch.Tensor) and pos.shape[-1] == 1 and self.decode_offset:
            return args, {**kwargs, "position_ids": pos - self.decode_offset}
        return None

    @torch.no_grad()
    def _on_lm_done(self, module, args, kwargs, output):
        cache = kwargs.get("past_key_values")
        if cache is None or not self.orders or self.cache_orders is not None:
            return None
        final = self.orders[max(self.orders)]
        start = self.method.cache_cut_from(len(self.layers))
        held = [self.order_at(i) for i in range(len(cache.layers))]
        self.cache_orders = [held[i] if i < start else final for i in range(len(cache.layers))]
        cut_cache(cache, held, self.cache_orders)
        return None


def _image_positions(order: torch.Tensor, layouts: list[ImageLayout]) -> torch.Tensor:
    """(L,) bool: which rows (sequence positions `order`) lie in an image's span."""
    inside = torch.zeros(len(order), dtype=torch.bool)
    for img in layouts:
        inside |= (order >= img.start) & (order < img.start + img.count)
    return inside


def _sync(tensor: torch.Tensor) -> None:
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)
