"""The staged runtime: cuts at several decoder layers (progressive methods), cuts before the LLM (vision-side
scores, merges formed in vision space), and a KV cache cut after prefill. Same rules as pruner.py: forward
pre-hooks only, attention rows recomputed in a pre-hook (no eager attention, no layer run twice), shared
per-call tensors sliced, never resized in place; every hook is removed on exit.

Positions: LLM-side cuts keep the survivors' original positions. A pre-LLM cut (the method's only stage at
layer 0) renumbers 1-D positions contiguously (0..L'-1, as if the image had fewer tokens, like the methods'
own code) and shifts decode positions to match; Qwen2-VL's 3-D M-RoPE positions are kept as they were.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from ..methods import SegmentView, Selection
from ..methods.base import MethodError
from .hooks import HookSet
from .probe import attention_rows, qk_norm
from .pruner import CutPlan
from .spans import image_budget, select_units, take_rows, tile_quotas, unit_budgets, units
from .vision_merge import TowerMerge


class StagedPruner:
    def __init__(self, family, model, method, layouts, prompt_len, fixed=None):
        self.family, self.model, self.method, self.layouts, self.prompt_len = family, model, method, layouts, prompt_len
        self.layers = family.lm_layers(model)
        n_layers = len(self.layers)
        method.check_layers(n_layers)
        self.stages = method.stages(n_layers)
        self.stage_at = {s.layer: i for i, s in enumerate(self.stages)}
        self.layer_index = {id(layer): i for i, layer in enumerate(self.layers)}
        self.renumber = method.pre_llm and family.positions == "1-D"
        self.orders: dict[int, torch.Tensor] = {}  # cut layer -> original positions of the sequence from there on
        self.alive = [[{i: [i] for i in range(seg.count)} for seg in img.segments] for img in layouts]
        self.first_scores = [[None for _ in img.segments] for img in layouts]
        self.weights: dict[tuple, torch.Tensor] = {}  # (image, segment, rep) -> merge weights over the segment
        self.pending: dict[int, list] = {}  # stage -> selections made before the projector
        self.probed: dict[int, dict] = {}  # layer -> {"keys": (L,), "rows": (T, L)}
        self.vision: dict[str, torch.Tensor] = {}
        last_image = max(img.start + img.count for img in layouts)
        self.text_positions = torch.arange(last_image, prompt_len)  # the text after the images (question)
        self.rater_positions = self.text_positions  # text queries whose attention rows are probed
        numbering = "renumbered contiguously" if self.renumber else "original"
        self.plan = CutPlan(counts_per_cut=True, positions=f"{numbering} ({family.positions})", where=method.where)
        needs = {n for s in self.stages for n in s.needs}
        self.uses_vision = bool(needs & {"cls", "vision_keys"}) or any(s.at == "projector" for s in self.stages)
        if self.uses_vision:
            family.vision_attention(model)  # raises MethodError where the tower has no [CLS] (Qwen2-VL)
        self.vision_index = None  # per image and segment, built from the prefill's processor inputs
        towers = [i for i, s in enumerate(self.stages) if s.at == "tower"]  # merges inside the vision tower
        self.tower = TowerMerge(self, towers[0]) if towers else None
        self.hooks, self._ms = HookSet(), 0.0
        self.cache_orders: list[torch.Tensor] | None = None  # per layer: sequence positions cached after a KV cut

    # ---- hooks --------------------------------------------------------------------------------------
    def __enter__(self):
        try:
            self._register(self.hooks)
        except BaseException:
            self.hooks.remove()
            raise
        return self

    def _register(self, hooks: HookSet) -> None:
        needs = {n for s in self.stages for n in s.needs}
        if self.uses_vision or self.tower:
            hooks.pre(self.model, self._on_model, role="observe")
        if self.uses_vision:
            hooks.pre(self.family.vision_attention(self.model), self._on_vision, role="observe")
        if "cls_feature" in needs:
            hooks.post(self.family.vision_feature_layer(self.model), self._on_vision_output, role="observe",
                       with_kwargs=False)
        if self.tower:
            self.tower.register(hooks)
        for i, stage in enumerate(self.stages):
            if stage.at == "projector":
                hooks.pre(self.family.projector(self.model), lambda m, a, i=i: self._on_projector(i, a),
                          with_kwargs=False)
            elif stage.layer >= 1 and set(stage.needs) & {"keys", "text_attention"}:
                hooks.pre(self.layers[stage.layer - 1].self_attn,
                          lambda m, a, kw, layer=stage.layer: self._on_probe(layer, m, a, kw), role="observe")
        if "raters" in needs:  # text raters chosen on the LM's input (the method's choose_raters rule)
            hooks.pre(self.layers[0], self._on_raters, role="observe")
        for layer in self.layers[self.stages[0].layer:]:
            hooks.pre(layer, self._on_layer)
        lm = self.family.language_model(self.model)
        if self.renumber:
            hooks.pre(lm, self._on_lm_decode)
        if self.method.cut_cache:
            hooks.post(lm, self._on_lm_done)
        hooks.adopt(self.family.cut_hooks(self.model, self._order))  # e.g. Qwen3-VL's DeepStack

    def __exit__(self, *exc):
        self.hooks.remove()
        self.plan.scoring_ms = self._ms  # every stage's share, the last cut's included

    def _on_model(self, module, args, kwargs):
        if self.vision_index is None and kwargs.get("pixel_values") is not None:
            self.vision_index = self.family.vision_index(self.model, kwargs, self.layouts)

    @torch.no_grad()
    def _on_raters(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # (1, L, D) the LM's input embeddings
        if hidden.shape[1] != self.prompt_len:
            return None
        started = time.perf_counter()
        image = torch.cat([torch.arange(img.start, img.start + img.count) for img in self.layouts])
        chosen = self.method.choose_raters(hidden[0, image].cpu(), hidden[0, self.text_positions].cpu())
        if chosen.any():
            self.rater_positions = self.text_positions[chosen]
        self.plan.raters = self.rater_positions.tolist()
        self._ms += (time.perf_counter() - started) * 1e3
        return None

    @torch.no_grad()
    def _on_vision(self, module, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (B, 1 + P, Dv)
        started = time.perf_counter()
        b, length, _ = hidden.shape
        q = module.q_proj(hidden[:, :1]).view(b, 1, -1, module.head_dim).transpose(1, 2)  # (B, H, 1, d)
        k = module.k_proj(hidden).view(b, length, -1, module.head_dim).transpose(1, 2)  # (B, H, L, d)
        attn = ((q.float() @ k.float().transpose(-1, -2)) * module.scale).softmax(-1)  # (B, H, 1, L)
        self.vision["cls"] = attn.mean(1)[:, 0, 1:]  # (B, P) [CLS] -> patches, heads averaged
        self.vision["keys"] = k.float().mean(1)[:, 1:]  # (B, P, d) keys, heads averaged (VisionZip's metric)
        self._ms += (time.perf_counter() - started) * 1e3

    @torch.no_grad()
    def _on_vision_output(self, module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output  # (B, 1 + P, Dv) the projector's input layer
        self.vision["cls_feature"] = hidden[:, 0].clone()  # (B, Dv) [CLS] row per image / tile

    @torch.no_grad()
    def _on_probe(self, layer, module, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (1, L, D)
        if hidden.shape[1] == 1 or layer in self.probed:
            return None
        started = time.perf_counter()
        cos, sin = kwargs["position_embeddings"]
        order = self._order(layer - 1)
        rows = torch.searchsorted(order, self.rater_positions).tolist()
        need = set(self.stages[self.stage_at[layer]].needs)
        out = {}
        if "text_attention" in need:
            out["rows"] = attention_rows(module, self.family.apply_rotary, hidden, (cos, sin), rows)  # (T, L)
        if "keys" in need:
            k = module.k_proj(hidden).view(1, hidden.shape[1], -1, module.head_dim)
            k = qk_norm(module, None, k)[1].transpose(1, 2)  # (1, Hkv, L, d); Qwen3's k_norm where it has one
            _, k = self.family.apply_rotary(k, k, cos, sin)
            out["keys"] = k.float().abs().sum(dim=(1, 3))[0]  # (L,) L1 norm over all KV heads
        self.probed[layer] = out
        self._ms += (time.perf_counter() - started) * 1e3
        return None

    @torch.no_grad()
    def _on_projector(self, stage, args):
        if stage in self.pending:
            return None
        started = time.perf_counter()
        feats = args[0]  # (B, P, Dv) vision features, [CLS] already dropped
        flat = feats.reshape(-1, feats.shape[-1]).clone()
        chosen = []
        for img, segs in zip(self.layouts, self.vision_index):
            views = [self._vision_view(img, s, seg, vidx, flat, feats.shape[1])
                     for s, (seg, vidx) in enumerate(zip(img.segments, segs))]
            if self.method.unit() == "tiles" and len(img.segments) > 1:
                views, sels = self._select_tiles(stage, img, views, feats.shape[1])
            else:
                sels = self._select(stage, img, views)
            for view, sel, vidx in zip(views, sels, segs):
                for vec, weights in zip(*_merged_vectors(sel, view.hidden)):
                    flat[view_src_first(view, weights, vidx)] = vec
            chosen.append(list(zip(views, sels)))
        self.pending[stage] = chosen
        self._ms += (time.perf_counter() - started) * 1e3
        return (flat.view_as(feats), *args[1:])

    @torch.no_grad()
    def _on_lm_decode(self, module, args, kwargs):
        pos = kwargs.get("position_ids")
        final = self.orders.get(0)
        if isinstance(pos, torch.Tensor) and pos.shape[-1] == 1 and final is not None:
            return args, {**kwargs, "position_ids": pos - (self.prompt_len - len(final))}
        return None

    @torch.no_grad()
    def _on_lm_done(self, module, args, kwargs, output):
        cache = kwargs.get("past_key_values")
        if cache is None or not self.orders or self.cache_orders is not None:
            return None
        final = self.orders[max(self.orders)]
        start = getattr(self.method, "cache_cut_from", lambda n: 0)(len(self.layers))
        self.cache_orders = [self._order(i) if i < start else final for i in range(len(cache.layers))]
        for i, layer in enumerate(cache.layers):
            index = torch.searchsorted(self._order(i), self.cache_orders[i]).to(layer.keys.device)
            layer.keys, layer.values = layer.keys[:, :, index], layer.values[:, :, index]
        return None

    def positions_at(self, layer: int, decoding: bool = False) -> torch.Tensor:
        """(L_layer,) sequence positions of the prompt rows decoder `layer` sees in the prefill, or holds in its
        KV cache while decoding (after a KV-cache cut)."""
        cached = self.cache_orders
        return cached[layer] if decoding and cached else self._order(layer)

    # ---- the cuts ---------------------------------------------------------------------------------
    def _order(self, layer: int) -> torch.Tensor:
        """Original positions of the sequence entering `layer` (after every cut at or before it)."""
        cut = [c for c in self.orders if c <= layer]
        return self.orders[max(cut)] if cut else torch.arange(self.prompt_len)

    def _segment_budget(self, stage, img, s, available):
        """Segment s's share of the image's budget after `stage` when each grid is ranked on its own."""
        per_grid = [(i,) for i in range(len(img.segments))]
        return min(available, unit_budgets(image_budget(self.method, img, stage), img, per_grid)[s])

    def _select(self, stage: int, img, views: list[SegmentView]) -> list[Selection]:
        """One selection per segment; the segments of one ranking unit (NeXT's joint ranking) together, each
        unit with its share of the image's budget after this stage (at most its current survivors)."""
        unit_list = units(self.method, img)
        shares = unit_budgets(image_budget(self.method, img, stage), img, unit_list)
        budgets = [min(k, sum(views[s].n for s in unit)) for unit, k in zip(unit_list, shares)]
        return select_units(lambda view, k: self.method.select_stage(stage, view, k), views, unit_list, budgets)

    def _vision_view(self, img, s, seg, vidx, flat, patches) -> SegmentView:
        """A segment's tokens that have a vision row (not NeXT's newlines), as vision features + [CLS] scores."""
        rows = torch.nonzero(vidx >= 0).flatten()  # segment indices; LLaVA-NeXT's newline tokens have no vision row
        src = vidx[rows]
        return SegmentView(hidden=flat[src], grid=seg.grid, last_hidden=flat[src][-1], index=rows,
                           cls_attention=self.vision["cls"].flatten()[src],
                           vision_keys=self.vision["keys"].flatten(0, 1)[src], seed=img.index * 1000 + s,
                           cls_feature=(self.vision["cls_feature"][int(src[0]) // patches]
                                        if "cls_feature" in self.vision else None))

    def _select_tiles(self, stage, img, views, patches):
        """FasterVLM's rule on LLaVA-NeXT: an even share of the budget per vision-tower tile (base image and each
        high-res crop), ranked inside the tile, and every newline token kept. Returns per segment a view of all
        its tokens and the selection ("paper": the image's budget over the tiles, newlines on top; "final": the
        budget minus the newlines over the tiles, so exactly the budget survives)."""
        tiles = {}  # tile -> (segment, view rows)
        for s, (view, vidx) in enumerate(zip(views, self.vision_index[img.index])):
            for t in torch.unique(vidx[view.index] // patches).tolist():
                tiles[t] = (s, torch.nonzero(vidx[view.index] // patches == t).flatten())
        newlines = sum(seg.count - view.n for seg, view in zip(img.segments, views))
        k = image_budget(self.method, img, stage)
        paper = self.method.convention == "paper"
        if not paper and k < newlines:
            raise MethodError(f"{self.method.name} keeps every newline token of LLaVA-NeXT's high-res grid "
                              f"({newlines} here), so 'final' needs keep >= {newlines}")
        order = sorted(tiles)
        quotas = tile_quotas(k if paper else k - newlines, [tiles[t][1].numel() for t in order], fill=not paper)
        picked = [list(torch.nonzero(torch.tensor(seg.is_newline())).flatten().tolist()) for seg in img.segments]
        scores = [torch.zeros(seg.count) for seg in img.segments]
        for t, quota in zip(order, quotas):
            s, rows = tiles[t]
            sel = self.method.select_stage(stage, take_rows(views[s], rows), quota)
            picked[s] += views[s].index[rows[sel.kept]].tolist()
            if sel.scores is not None:
                scores[s][views[s].index[rows]] = sel.scores.float()
        full, sels = [], []
        for s, (seg, view) in enumerate(zip(img.segments, views)):
            hidden = view.hidden.new_zeros(seg.count, view.hidden.shape[-1])  # (n, Dv) newline rows stay zero
            hidden[view.index] = view.hidden
            full.append(dataclasses.replace(view, hidden=hidden, index=torch.arange(seg.count), cls_attention=None,
                                            vision_keys=None))
            sels.append(Selection(kept=torch.tensor(sorted(picked[s]), dtype=torch.long), scores=scores[s]))
        return full, sels

    @torch.no_grad()
    def _on_layer(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        i = self.layer_index[id(module)]
        if hidden.shape[1] > 1 and i in self.stage_at and i not in self.orders:
            started = time.perf_counter()
            hidden = self._cut(self.stage_at[i], hidden)
            self._ms += (time.perf_counter() - started) * 1e3
            args, kwargs = ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})
        return args, self._slice_shared(kwargs, i, hidden.shape[1] > 1)

    def _cut(self, stage_i: int, hidden: torch.Tensor) -> torch.Tensor:
        stage = self.stages[stage_i]
        order = self._order(stage.layer - 1) if stage.layer else torch.arange(self.prompt_len)
        merged, keep = {}, torch.ones(len(order), dtype=torch.bool)
        probed = self.probed.get(stage.layer, {})
        text_rows = torch.searchsorted(order, self.text_positions)
        norm = self.family.final_norm(self.model)
        for img, segs in zip(self.layouts, self.alive):
            reps = [torch.tensor(sorted(alive)) for alive in segs]  # per segment: surviving segment indices
            rows = [torch.searchsorted(order, r + img.start + seg.offset) for r, seg in zip(reps, img.segments)]
            for r in rows:
                keep[r] = False
            if stage.at in ("projector", "tower"):
                chosen = self.pending[stage_i][img.index]  # merged rows already hold projector(merged features)
                vectors = [{} for _ in chosen]
            else:
                views = [self._view(stage, img, s, seg, hidden, rows[s], reps[s], probed, text_rows, norm)
                         for s, seg in enumerate(img.segments)]
                chosen = list(zip(views, self._select(stage_i, img, views)))
                vectors = [dict(enumerate(_merged_vectors(sel, view.hidden)[0])) for view, sel in chosen]
            for s, ((view, sel), alive) in enumerate(zip(chosen, segs)):
                segs[s] = self._apply(sel, view, alive, reps[s], rows[s], keep, merged, vectors[s], img, s)
        new = order[keep]
        self.orders[stage.layer] = new
        out = hidden[:, torch.nonzero(keep).flatten().to(hidden.device)].clone()
        for pos, vec in merged.items():
            out[0, int(torch.searchsorted(new, pos))] = vec.to(out)
        self._record(stage.layer)
        return out

    def _view(self, stage, img, s, seg, hidden, rows, reps, probed, text_rows, norm) -> SegmentView:
        h = hidden[0, rows.to(hidden.device)]
        extra = {}
        if "normed" in stage.needs:
            extra["normed"] = norm(h).float().cpu()
        if "text_hidden" in stage.needs:
            extra["text_hidden"] = norm(hidden[0, text_rows.to(hidden.device)]).float().cpu()
        if "text_embeds" in stage.needs:  # at layer 0: the text's input embeddings (CDPruner's instruction)
            extra["text_embeds"] = hidden[0, text_rows.to(hidden.device)].float().cpu()
        if "keys" in probed:
            extra["key_norms"] = probed["keys"][rows].cpu()
            extra["text_key_norms"] = probed["keys"][text_rows].cpu()
        if "rows" in probed:
            extra["text_attention"] = probed["rows"][:, rows].cpu()
        if "key_set" in stage.needs and self.tower:  # MustDrop: [CLS] attention of the key set, 0 elsewhere
            extra["cls_attention"] = self.tower.key_attention(img.index, s)[reps]
        return SegmentView(hidden=h, grid=seg.grid, last_hidden=hidden[0, -1], index=reps,
                           seed=img.index * 1000 + s, **extra)

    def _apply(self, sel, view, alive, reps, rows, keep, merged, vectors, img, s) -> dict:
        index = view.index if view.index is not None else reps
        base = img.start + img.segments[s].offset
        if self.first_scores[img.index][s] is None and sel.scores is not None:
            full = torch.zeros(img.segments[s].count)
            full[index] = sel.scores.float().cpu()
            self.first_scores[img.index][s] = full
        alive_rows = {int(r): j for j, r in enumerate(reps.tolist())}
        new = {}
        for j in sel.kept.tolist():
            rep = int(index[j])
            new[rep] = alive.get(rep, [rep])
            keep[rows[alive_rows[rep]]] = True
        for g, weights in enumerate(sel.merge if sel.merge is not None else []):
            members = [int(index[j]) for j in torch.nonzero(weights > 0).flatten().tolist()]
            rep = min(members)
            new[rep] = sorted(t for m in members for t in alive.get(m, [m]))
            keep[rows[alive_rows[rep]]] = True
            if g in vectors:
                merged[base + rep] = vectors[g]
            row = torch.zeros(img.segments[s].count)
            row[index] = weights.float().cpu()
            self.weights[(img.index, s, rep)] = row  # the method's own weights, kept for drawing
        return new

    def _record(self, layer: int) -> None:
        survivors, groups = [], []  # per image: survivors (image index; a group by its first token), groups
        for img, segs in zip(self.layouts, self.alive):
            survivors.append(sorted(seg.offset + r for seg, alive in zip(img.segments, segs) for r in alive))
            groups.append([[seg.offset + t for t in g] for seg, alive in zip(img.segments, segs)
                           for g in alive.values() if len(g) > 1])
        self.plan.cuts.append({"layer": layer, "image_tokens": sum(len(s) for s in survivors),
                               "survivors": survivors, "groups": groups})
        self.plan.order = self.orders[max(self.orders)]
        self.plan.selections = self._selections()
        n = len(self.layers)
        total = sum(img.count for img in self.layouts)
        self.plan.seq_per_layer = [len(self._order(i)) for i in range(n)]
        self.plan.image_per_layer = [total - (self.prompt_len - m) for m in self.plan.seq_per_layer]

    def _selections(self) -> list[list[Selection]]:
        out = []
        for img, segs in zip(self.layouts, self.alive):
            row = []
            for s, (seg, alive) in enumerate(zip(img.segments, segs)):
                kept = sorted(r for r, g in alive.items() if len(g) == 1)
                groups = [g for g in alive.values() if len(g) > 1]
                merge = None
                if groups:
                    merge = torch.zeros(len(groups), seg.count)
                    for j, g in enumerate(groups):
                        own = self.weights.get((img.index, s, g[0]))
                        exact = own is not None and torch.nonzero(own > 0).flatten().tolist() == g
                        merge[j] = own / own.sum() if exact else 0.0
                        if not exact:
                            merge[j, g] = 1.0 / len(g)
                row.append(Selection(kept=torch.tensor(kept, dtype=torch.long), merge=merge,
                                     scores=self.first_scores[img.index][s]))
            out.append(row)
        return out

    # ---- slicing the per-call tensors -----------------------------------------------------------------
    def _slice_shared(self, kwargs: dict, layer: int, prefill: bool) -> dict:
        if not self.orders or not prefill:
            return self._slice_decode_mask(kwargs, layer)
        order = self._order(layer)
        if len(order) == self.prompt_len:
            return kwargs
        kwargs = dict(kwargs)
        cos, sin = kwargs["position_embeddings"]
        if cos.shape[-2] == self.prompt_len:
            idx = (torch.arange(len(order)) if self.renumber else order).to(cos.device)
            kwargs["position_embeddings"] = (cos[..., idx, :], sin[..., idx, :])
        pos = kwargs.get("position_ids")
        if isinstance(pos, torch.Tensor) and pos.shape[-1] == self.prompt_len:
            kwargs["position_ids"] = pos[..., :len(order)] if self.renumber else pos[..., order.to(pos.device)]
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.shape[-1] == self.prompt_len:
            idx = order.to(mask.device)
            kwargs["attention_mask"] = mask[..., idx, :][..., idx]
        return kwargs

    def _slice_decode_mask(self, kwargs, layer):
        mask = kwargs.get("attention_mask")
        if not isinstance(mask, torch.Tensor) or not self.orders:
            return kwargs
        cached = self.cache_orders  # what each layer's cache holds after a KV cut
        base = cached[0] if cached else self._order(0)  # layer 0's; the mask was built for it
        mine = cached[layer] if cached else self._order(layer)
        if len(base) == len(mine):
            return kwargs
        idx = torch.cat([torch.searchsorted(base, mine), torch.arange(len(base), mask.shape[-1])])
        return {**kwargs, "attention_mask": mask[..., idx.to(mask.device)]}


def _merged_vectors(sel: Selection, hidden: torch.Tensor):
    """(vectors, weight rows) of a selection's merged tokens: `sel.merged` if given, else merge @ hidden."""
    if sel.merge is None:
        return [], []
    vectors = sel.merged if sel.merged is not None else sel.merge.to(hidden) @ hidden
    return list(vectors), list(sel.merge)


def view_src_first(view: SegmentView, weights: torch.Tensor, vidx: torch.Tensor) -> int:
    """The vision row of a merged group's representative (its first token in the segment)."""
    first = int(view.index[int(torch.nonzero(weights > 0).min())])
    return int(vidx[first])

