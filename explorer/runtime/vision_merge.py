"""Token merging inside a stock CLIP vision tower, for the runtime (MustDrop's vision stage, `at="tower"`).

Forward pre-hooks only, no eager attention, no layer run twice; the tower keeps SDPA:
- a pre-hook on encoder layer `method.tower_layer` replaces its input (B, 1+P, D) by the shorter sequence
  [CLS, merged windows, untouched patches] (the same length for every tile of the batch); the later layers
  simply run on it (CLIP's position embeddings were added before layer 0, so order does not matter);
- a pre-hook on the attention of the layer that reads the selected features (the code's last layer) recomputes
  the [CLS] query row over the merged sequence (as runtime/probe.py does) -> the key token set;
- a pre-hook on the projector puts the features back on the full patch layout (every member of a merged
  window holds the window's vector; if the selected features were captured before the merge, the window's
  mean is taken there, which is the same vector), so the stock LLaVA / LLaVA-NeXT packing is untouched. The
  runtime's cut at layer 0 then keeps one row per merged window (its first patch) and drops the others.
"""
from __future__ import annotations

import math
import time

import torch

from ..methods import Selection, SegmentView
from ..methods.base import MethodError
from .plan import segment_budget


class TowerMerge:
    def __init__(self, pruner, stage: int):
        self.p, self.stage = pruner, stage
        family, model, method = pruner.family, pruner.model, pruner.method
        layers = family.encoder_layers(model)  # raises MethodError where the tower cannot be shortened
        select = model.config.vision_feature_layer
        if not isinstance(select, int):
            raise MethodError("mustdrop supports a single vision_feature_layer only")
        feature = select % (len(layers) + 1)  # hidden_states[feature]: the input of layer `feature`
        self.key_layer = layers[min(feature, len(layers) - 1)]  # reads the features (code: the last layer)
        if not 1 <= method.tower_layer <= min(feature, len(layers) - 1):
            raise MethodError(f"mustdrop: tower_layer must be in 1..{min(feature, len(layers) - 1)} (merge before "
                              "the layer that reads the selected features) for this vision tower")
        self.merge_layer = layers[method.tower_layer]
        self.groups: list[torch.Tensor] = []  # per tile: (r, m) patch indices of each merged window
        self.singles: list[torch.Tensor] = []  # per tile: patches left alone
        self.cls = self.keys = None  # (B * P,) [CLS] attention / key flag of the token each patch ended in

    def register(self, hooks) -> None:
        """Install the merge, the key-set probe and the projector's un-merge into `hooks` (a HookSet)."""
        hooks.pre(self.merge_layer, self._on_merge)
        hooks.pre(self.key_layer.self_attn, self._on_key, role="observe")
        hooks.pre(self.p.family.projector(self.p.model), self._on_projector, with_kwargs=False)

    def _segments(self):
        """[(image layout, segment index, its vision rows)] in a fixed order (segment ids)."""
        return [(img, s, vidx) for img, segs in zip(self.p.layouts, self.p.vision_index) for s, vidx in enumerate(segs)]

    @torch.no_grad()
    def _on_merge(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # (B, 1 + P, D)
        if self.groups or self.p.vision_index is None:
            return None
        started = time.perf_counter()
        method = self.p.method
        b, length, _ = hidden.shape
        patches = length - 1
        side = math.isqrt(patches)
        wins = method.windows((side, side))  # (W, m)
        sim = method.window_similarity(hidden[:, 1:], wins)  # (B, W)
        segs = self._segments()
        seg_of = torch.full((b * patches,), -1, dtype=torch.long)
        for sid, (_, _, vidx) in enumerate(segs):
            seg_of[vidx[vidx >= 0]] = sid
        owner = seg_of[(torch.arange(b)[:, None, None] * patches + wins[None]).flatten()].view(b, *wins.shape)
        eligible = (owner >= 0).all(-1) & (owner == owner[..., :1]).all(-1)  # whole window in one segment
        floors = [(img.segments[s].count, segment_budget(method, self.stage, img, s, img.segments[s].count))
                  for img, s, _ in segs]

        def fits(chosen):
            lost = [0] * len(segs)
            for tile, rows in enumerate(chosen):
                for w in rows.tolist():
                    lost[int(owner[tile, w, 0])] += wins.shape[1] - 1
            return all(n - gone >= k for (n, k), gone in zip(floors, lost))

        chosen = method.choose_windows(sim, eligible, fits)
        out = []
        for tile, rows in enumerate(chosen):
            groups = wins[rows]  # (r, m)
            alone = torch.ones(patches, dtype=torch.bool)
            alone[groups.flatten()] = False
            self.groups.append(groups)
            self.singles.append(torch.nonzero(alone).flatten())
            x = hidden[tile, 1:]
            out.append(torch.cat([hidden[tile, :1], x[groups].mean(1), x[self.singles[-1]]]))
        self.p.ms += (time.perf_counter() - started) * 1e3
        merged = torch.stack(out)
        return ((merged, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": merged})

    @torch.no_grad()
    def _on_key(self, module, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (B, 1 + P', D)
        if self.cls is not None or not self.groups:
            return None
        started = time.perf_counter()
        b, length, _ = hidden.shape
        q = module.q_proj(hidden[:, :1]).view(b, 1, -1, module.head_dim).transpose(1, 2)  # (B, H, 1, d)
        k = module.k_proj(hidden).view(b, length, -1, module.head_dim).transpose(1, 2)  # (B, H, L, d)
        attn = ((q.float() @ k.float().transpose(-1, -2)) * module.scale).softmax(-1).mean(1)[:, 0, 1:]  # (B, P')
        patches = self.groups[0].numel() + self.singles[0].numel()
        self.cls, self.keys = torch.zeros(b * patches), torch.zeros(b * patches, dtype=torch.bool)
        for tile in range(b):
            keys = self.p.method.key_set(attn[tile].cpu())
            r = self.groups[tile].shape[0]
            for rows, j in ((self.groups[tile], slice(0, r)), (self.singles[tile][:, None], slice(r, None))):
                flat = (rows + tile * patches).cpu()
                self.cls[flat] = attn[tile, j].cpu()[:, None].expand_as(flat)
                self.keys[flat] = keys[j][:, None].expand_as(flat)
        self.p.ms += (time.perf_counter() - started) * 1e3
        return None

    @torch.no_grad()
    def _on_projector(self, module, args):
        if self.stage in self.p.pending or not self.groups:
            return None
        started = time.perf_counter()
        feats = args[0]  # (B, P' or P, Dv), [CLS] dropped
        b = feats.shape[0]
        patches = self.groups[0].numel() + self.singles[0].numel()
        full = feats.clone() if feats.shape[1] == patches else feats.new_empty(b, patches, feats.shape[-1])
        for tile in range(b):
            groups, r = self.groups[tile], self.groups[tile].shape[0]
            if feats.shape[1] == patches:
                full[tile, groups] = feats[tile, groups].mean(1, keepdim=True).expand(-1, groups.shape[1], -1)
            else:
                full[tile, groups] = feats[tile, :r, None].expand(-1, groups.shape[1], -1)
                full[tile, self.singles[tile]] = feats[tile, r:]
        self.p.pending[self.stage] = self._selections(full.reshape(-1, full.shape[-1]), patches)
        self.p.ms += (time.perf_counter() - started) * 1e3
        return (full, *args[1:])

    def _selections(self, flat: torch.Tensor, patches: int) -> list[list[tuple]]:
        """Per image and segment: (view over all its positions, Selection of kept tokens + merged windows)."""
        out = [[None] * len(img.segments) for img in self.p.layouts]
        for img, s, vidx in self._segments():
            position = {int(v): i for i, v in enumerate(vidx.tolist()) if v >= 0}
            groups = []
            for tile, windows in enumerate(self.groups):
                for window in (windows + tile * patches).tolist():
                    if window[0] in position:
                        groups.append([position[v] for v in window])
            n = img.segments[s].count
            taken = {i for g in groups for i in g}
            merge = None
            if groups:
                merge = torch.zeros(len(groups), n)
                for g, members in enumerate(groups):
                    merge[g, members] = 1.0 / len(members)
            hidden = torch.zeros(n, flat.shape[-1], dtype=flat.dtype)
            present = torch.nonzero(vidx >= 0).flatten()
            hidden[present] = flat[vidx[present].to(flat.device)].cpu()
            view = SegmentView(hidden=hidden, grid=img.segments[s].grid, last_hidden=hidden[-1],
                               index=torch.arange(n), seed=img.index * 1000 + s)
            kept = torch.tensor([i for i in range(n) if i not in taken], dtype=torch.long)
            out[img.index][s] = (view, Selection(kept=kept, merge=merge))
        return out

    def key_attention(self, image: int, segment: int) -> torch.Tensor:
        """(count,) [CLS] attention of the key-set token each position ended in; 0 outside the key set."""
        vidx = self.p.vision_index[image][segment]
        out = torch.zeros(vidx.numel())
        if self.cls is None:
            return out
        present = vidx >= 0
        rows = vidx[present].cpu()
        out[present] = torch.where(self.keys[rows], self.cls[rows], torch.zeros(()))
        return out
