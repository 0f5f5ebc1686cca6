"""The probe table: every name a method's stage may list in `Stage.needs`, where the runtime reads it, and what the
method's view gets. Methods ask by name; the runtime installs what the names need and never asks which method
it runs. Attention rows are recomputed in pre-hooks (runtime/probe.py): no eager attention, no layer run twice.
"""
from __future__ import annotations

import time

import torch

from .probe import attention_rows, qk_norm

# name -> (where it is read, what the view gets)
PROBES: dict[str, tuple[str, str]] = {
    "last": ("attention K-1", "attention['last'] (n,): the last token's attention row, heads averaged"),
    "last_visual": ("attention K-1", "attention['last_visual'] (n,): the row of the image's last patch"),
    "all": ("attention K-1", "attention['all'] (n,): the mean of every query's row"),
    "text_attention": ("attention K-1", "text_attention (T, n): the text raters' rows"),
    "keys": ("attention K-1", "key_norms (n,), text_key_norms (T,): L1 norms of the keys, RoPE applied"),
    "raters": ("LM input", "which text tokens are the raters (method.choose_raters on the input embeddings)"),
    "cls": ("vision attention", "cls_attention (n,): [CLS] -> patch attention at the projector's input layer"),
    "vision_keys": ("vision attention", "vision_keys (n, d): that layer's keys, heads averaged"),
    "cls_feature": ("vision output", "cls_feature (Dv,): the [CLS] row of that layer's output"),
    "normed": ("the cut", "normed (n, D): the rows after the LM's final norm"),
    "text_hidden": ("the cut", "text_hidden (T, D): the text after the images, final norm applied"),
    "text_embeds": ("the cut", "text_embeds (T, D): the same text tokens entering the cut layer"),
    "key_set": ("the cut", "cls_attention (n,): [CLS] attention of the tower's key set, 0 elsewhere (MustDrop)"),
    "tower": ("vision tower", "tokens merged inside the tower (runtime/vision_merge.py)"),
}
QUERIES = ("last", "last_visual", "all")  # attention rows of chosen queries -> view.attention[name]
AT_ATTENTION = {name for name, (where, _) in PROBES.items() if where == "attention K-1"}
VISION = {"cls", "vision_keys", "cls_feature"}


def check_needs(name: str, needs: set[str]) -> None:
    unknown = sorted(needs - set(PROBES))
    if unknown:
        raise ValueError(f"{name} asks for unknown probes {unknown}; known: {', '.join(PROBES)}")


class Probes:
    """One run's probe results: per cut layer, what the attention of the layer below gave (`rows[layer]`: name ->
    tensor, in rows of the sequence that layer saw), the vision tower's [CLS] scores and keys (`vision`), and the
    text raters. `ms`: time spent probing (part of the scoring overhead)."""

    def __init__(self, runtime):
        self.rt = runtime
        self.rows: dict[int, dict[str, torch.Tensor]] = {}
        self.vision: dict[str, torch.Tensor] = {}
        last_image = max(img.start + img.count for img in runtime.layouts)
        self.text_positions = torch.arange(last_image, runtime.prompt_len)  # (T,) sequence positions of the question
        self.rater_positions = self.text_positions  # (T',) sequence positions of the text raters
        self.ms = 0.0

    def register(self, hooks, stages) -> None:
        """Install the hooks the stages' needs name (into `hooks`, a HookSet)."""
        rt = self.rt
        needs = {n for s in stages for n in s.needs}
        if needs & {"cls", "vision_keys"}:
            hooks.pre(rt.family.vision_attention(rt.model), self._on_vision, role="observe")
        if "cls_feature" in needs:
            hooks.post(rt.family.vision_feature_layer(rt.model), self._on_vision_output, role="observe",
                       with_kwargs=False)
        if "raters" in needs:
            hooks.pre(rt.layers[0], self._on_raters, role="observe")
        for stage in stages:
            if stage.layer >= 1 and set(stage.needs) & AT_ATTENTION:
                hooks.pre(rt.layers[stage.layer - 1].self_attn,
                          lambda m, a, kw, stage=stage: self._on_attention(stage, m, a, kw), role="observe")

    def query_positions(self, length: int) -> list[int]:
        """Sequence positions of the queries whose rows the method's "last" / "last_visual" / "all" need, for a
        prompt of `length` positions."""
        needs = {n for s in self.rt.stages for n in s.needs}
        rows = []
        if "last" in needs:
            rows.append(length - 1)
        if "last_visual" in needs:
            rows.extend(img.start + img.last_patch for img in self.rt.layouts)
        if "all" in needs:
            rows.extend(range(length))
        return sorted(set(rows))

    @torch.no_grad()
    def _on_attention(self, stage, module, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (1, L, D) rows of layer K-1
        if hidden.shape[1] == 1 or stage.layer in self.rows:
            return None
        started = time.perf_counter()
        cos, sin = kwargs["position_embeddings"]
        order = self.rt.order_at(stage.layer - 1)  # (L,) sequence position of each row
        need, out = set(stage.needs), {}
        queries = self.query_positions(self.rt.prompt_len) if need & set(QUERIES) else []
        if queries:
            rows = torch.searchsorted(order, torch.tensor(queries)).tolist()  # rows of the sequence at K-1
            out["queries"] = attention_rows(module, self.rt.family.apply_rotary, hidden, (cos, sin), rows)  # (R, L)
            out["query_positions"] = torch.tensor(queries)  # (R,) sequence positions
        if "text_attention" in need:
            rows = torch.searchsorted(order, self.rater_positions).tolist()
            out["text_attention"] = attention_rows(module, self.rt.family.apply_rotary, hidden, (cos, sin), rows)
        if "keys" in need:
            k = module.k_proj(hidden).view(1, hidden.shape[1], -1, module.head_dim)
            k = qk_norm(module, None, k)[1].transpose(1, 2)  # (1, Hkv, L, d); Qwen3's k_norm where it has one
            _, k = self.rt.family.apply_rotary(k, k, cos, sin)
            out["keys"] = k.float().abs().sum(dim=(1, 3))[0]  # (L,) L1 norm over all KV heads
        self.rows[stage.layer] = out
        _sync(hidden)
        self.ms += (time.perf_counter() - started) * 1e3
        return None

    @torch.no_grad()
    def _on_raters(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # (1, L, D) the LM's input embeddings
        if hidden.shape[1] != self.rt.prompt_len:
            return None
        started = time.perf_counter()
        image = torch.cat([torch.arange(img.start, img.start + img.count) for img in self.rt.layouts])
        chosen = self.rt.method.choose_raters(hidden[0, image].cpu(), hidden[0, self.text_positions].cpu())
        if chosen.any():
            self.rater_positions = self.text_positions[chosen]
        self.rt.plan.raters = self.rater_positions.tolist()
        self.ms += (time.perf_counter() - started) * 1e3
        return None

    @torch.no_grad()
    def _on_vision(self, module, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (B, 1 + P, Dv) vision rows
        started = time.perf_counter()
        b, length, _ = hidden.shape
        q = module.q_proj(hidden[:, :1]).view(b, 1, -1, module.head_dim).transpose(1, 2)  # (B, H, 1, d)
        k = module.k_proj(hidden).view(b, length, -1, module.head_dim).transpose(1, 2)  # (B, H, L, d)
        attn = ((q.float() @ k.float().transpose(-1, -2)) * module.scale).softmax(-1)  # (B, H, 1, L)
        self.vision["cls"] = attn.mean(1)[:, 0, 1:]  # (B, P) [CLS] -> patches, heads averaged
        self.vision["keys"] = k.float().mean(1)[:, 1:]  # (B, P, d) keys, heads averaged
        self.ms += (time.perf_counter() - started) * 1e3

    @torch.no_grad()
    def _on_vision_output(self, module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output  # (B, 1 + P, Dv) the projector's input layer
        self.vision["cls_feature"] = hidden[:, 0].clone()  # (B, Dv) [CLS] row per image / tile

    def view_fields(self, stage, img, s, rows, reps, hidden, norm) -> dict:
        """The view fields `stage` needs for segment s of `img` whose survivors sit at `rows` (m,) of `hidden`
        (1, L, D) (the sequence entering the cut layer) and are the segment indices `reps` (m,)."""
        need, probed, extra = set(stage.needs), self.rows.get(stage.layer, {}), {}
        order = self.rt.order_at(stage.layer - 1) if stage.layer else torch.arange(self.rt.prompt_len)
        text_rows = torch.searchsorted(order, self.text_positions).to(hidden.device)  # (T,) rows of `hidden`
        if "normed" in need:
            extra["normed"] = norm(hidden[0, rows.to(hidden.device)]).float().cpu()
        if "text_hidden" in need:
            extra["text_hidden"] = norm(hidden[0, text_rows]).float().cpu()
        if "text_embeds" in need:  # at layer 0: the text's input embeddings (CDPruner's instruction)
            extra["text_embeds"] = hidden[0, text_rows].float().cpu()
        if "keys" in probed:
            extra["key_norms"] = probed["keys"][rows].cpu()
            extra["text_key_norms"] = probed["keys"][text_rows.cpu()].cpu()
        if "text_attention" in probed:
            extra["text_attention"] = probed["text_attention"][:, rows].cpu()
        if "queries" in probed:
            extra["attention"] = self._query_attention(need, probed, img, rows)
        if "key_set" in need and self.rt.tower:  # MustDrop: [CLS] attention of the key set, 0 elsewhere
            extra["cls_attention"] = self.rt.tower.key_attention(img.index, s)[reps]
        return extra

    def _query_attention(self, need, probed, img, rows) -> dict[str, torch.Tensor]:
        """query name -> (m,) attention of that query to the rows `rows`."""
        at = {int(p): i for i, p in enumerate(probed["query_positions"])}  # sequence position -> probed row
        queries, out = probed["queries"], {}
        if "last" in need:
            out["last"] = queries[at[self.rt.prompt_len - 1], rows]
        if "last_visual" in need:
            out["last_visual"] = queries[at[img.start + img.last_patch], rows]
        if "all" in need:
            out["all"] = queries[:, rows].mean(0)
        return {k: v.cpu() for k, v in out.items()}


def _sync(tensor: torch.Tensor) -> None:
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)
