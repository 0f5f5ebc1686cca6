"""The trunk: one stock, unpruned prefill of an input, recorded so that every method can continue from it (fork)
instead of paying the vision tower and the layers below its first cut again.

Recorded: the model's inputs; on the vision side (families whose tower has a [CLS] token: LLaVA, LLaVA-NeXT)
the call of the attention that scores the patches, the output of the layer feeding the projector, and the
projector's input; every decoder layer's call (hidden states in, mask, rotary cos/sin, positions) and
its attention's call; the KV cache after the prefill and the time each layer started.

A fork replays the recorded calls to the run's observing hooks below its first changing layer F (probes,
raters, [CLS] scores), in forward order, instead of running those modules again. A run whose hook changes the
projector's input (merged vision features, VisionZip) gets the projector run again on its features and the
changed rows written into the LM input (the family's packing only gathers projector rows: `vision_index`); it
forks at layer 0. Layers F.. then run for real on the method's own cache (seeded with the trunk's keys and
values below F), then the final norm and the LM head. The computation is the solo run's, step for step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ..methods import MethodError
from .decode import Decoded, VisionTimer, _sync, decode_steps
from .hooks import HookSet


@dataclass
class Call:
    """One recorded module call of the trunk's prefill: what a forward pre-hook saw (args, kwargs; `kwargs` None
    when recorded without them) and, where recorded, what the module returned."""

    module: torch.nn.Module
    args: tuple
    kwargs: dict | None
    output: object = None


class Trunk:
    """The unpruned prefill of one input, recorded for forks (see the module docstring)."""

    def __init__(self, model, family, inputs: dict, layouts):
        self.model, self.family, self.inputs, self.layouts = model, family, inputs, layouts
        self.layers = family.lm_layers(model)
        self.prompt_len = inputs["input_ids"].shape[1]
        self.calls: list[Call] = [Call(model, (), inputs)]  # forward order: the model, vision side, layers
        self.layer_calls: list[Call] = []  # (n_layers,) the call of each decoder layer
        self.entered: list[float] = []  # ms from the forward's start to each layer's start
        self.vision = _vision_modules(family, model)  # name -> module, {} where the tower has no [CLS]
        self._t0 = 0.0

    @torch.no_grad()
    def run(self) -> "Trunk":
        cache = DynamicCache(config=self.model.config.get_text_config())
        hooks = HookSet()
        try:
            if self.vision:
                hooks.pre(self.vision["attention"], self._record, role="observe")
                hooks.post(self.vision["feature_layer"], self._record_output, role="observe", with_kwargs=False)
                hooks.pre(self.vision["projector"], self._record_args, role="observe", with_kwargs=False)
            for layer in self.layers:
                hooks.pre(layer, self._record_layer, role="observe")
                hooks.pre(layer.self_attn, self._record, role="observe")
            with VisionTimer(self.family.vision_modules(self.model)) as vision:
                _sync(self.model)
                self._t0 = time.perf_counter()
                out = self.model(**self.inputs, past_key_values=cache, use_cache=True, logits_to_keep=1)
                _sync(self.model)
                total_ms = (time.perf_counter() - self._t0) * 1e3
        finally:
            hooks.remove()
        self.logits = out.logits[0, -1].float()  # (V,)
        self.kv = [(layer.keys, layer.values) for layer in cache.layers]  # per layer (1, Hkv, L, d) after prefill
        self.vision_ms, self.prefill_ms = vision.ms, total_ms - vision.ms
        return self

    def _record(self, module, args, kwargs):
        self.calls.append(Call(module, args, dict(kwargs)))

    def _record_args(self, module, args):
        self.calls.append(Call(module, args, None))

    def _record_output(self, module, args, output):
        self.calls.append(Call(module, args, None, output))

    def _record_layer(self, module, args, kwargs):
        _sync(self.model)
        self.entered.append((time.perf_counter() - self._t0) * 1e3)
        self._record(module, args, kwargs)
        self.layer_calls.append(self.calls[-1])

    def lm_ms_before(self, layer: int) -> float:
        """The LM's share of the prefill before decoder `layer` starts (embedding, masks, rotary, layers < it)."""
        if layer >= len(self.layers):
            return self.prefill_ms
        return self.entered[layer] - self.vision_ms

    def cache_below(self, layer: int) -> DynamicCache:
        """A new cache holding the trunk's keys and values of the layers below `layer` (copies)."""
        cache = DynamicCache(config=self.model.config.get_text_config())
        for i in range(layer):
            cache.update(*self.kv[i], i)
        return cache

    def lm_input(self, features: torch.Tensor) -> torch.Tensor:
        """(1, L, D) the LM's input for changed projector input `features` (B, P, Dv): the trunk's, with the rows of
        every token whose vision row changed replaced by the projector's output for it."""
        projector = self.vision["projector"]
        call = next(c for c in self.calls if c.module is projector)
        hidden = self.layer_calls[0].args[0] if self.layer_calls[0].args else self.layer_calls[0].kwargs["hidden_states"]
        hidden = hidden.clone()  # (1, L, D) sequence position
        changed = (features != call.args[0]).flatten(0, 1).any(-1).cpu()  # (B * P,) vision row
        if not changed.any():
            return hidden
        projected = projector.forward(features, *call.args[1:]).flatten(0, 1)  # (B * P, D) vision row; hooks skipped
        index = self.family.vision_index(self.model, self.inputs, self.layouts)
        for img, segs in zip(self.layouts, index):
            for seg, vidx in zip(img.segments, segs):
                rows = torch.nonzero((vidx >= 0) & changed[vidx.clamp(min=0)]).flatten()  # (r,) segment index
                hidden[0, img.start + seg.offset + rows] = projected[vidx[rows].to(projected.device)].to(hidden)
        return hidden


def _vision_modules(family, model) -> dict:
    """The vision-side modules forks may need recorded (LLaVA and LLaVA-NeXT; none where the tower has no [CLS])."""
    try:
        attention = family.vision_attention(model)
    except MethodError:
        return {}
    return {"attention": attention, "feature_layer": family.vision_feature_layer(model),
            "projector": family.projector(model)}


def fork_layer(trunk: Trunk, hooks: HookSet) -> int | None:
    """The first decoder layer whose input a run's hooks change (len(layers) if none; 0 when they change the
    projector's input), or None when the run cannot start from the trunk: a hook the recording cannot feed (on an
    unrecorded module, or a kind the recording lacks), a changing hook other than a layer's or the projector's
    pre-hook, or an observing forward hook below the fork."""
    layers = trunk.layers
    where = {}
    for i, layer in enumerate(layers):
        where[id(layer)] = where[id(layer.self_attn)] = i
    recorded = {id(c.module): c for c in trunk.calls}
    changes = []
    for hook in hooks.hooks:
        if hook.role == "decode":  # changes decode steps only; the fork's decode loop runs the model with it
            continue
        if hook.module is None:
            return None
        i = where.get(id(hook.module))
        if i is None:
            call = recorded.get(id(hook.module))
            fed = call is not None and (call.output is not None if hook.kind == "post" else
                                        call.kwargs is not None or not hook.with_kwargs)
            if not fed or (hook.role == "change" and hook.module is not trunk.vision.get("projector")):
                return None
            if hook.role == "change":
                changes.append(0)
            continue
        if hook.role == "change":
            if hook.kind != "pre" or hook.module is not layers[i]:
                return None
            changes.append(i)
    at = min(changes, default=len(layers))
    if any(h.kind != "pre" for h in hooks.hooks if h.module is not None and where.get(id(h.module), -1) in
           range(at) and h.role != "decode"):
        return None
    return at


def replay(trunk: Trunk, hooks: HookSet, at: int, side: str) -> torch.Tensor | None:
    """Feed the run's hooks on one `side` ("vision": outside the LM's layers; "lm": the layers below `at`) the
    calls the trunk recorded there, in forward order (the vision side comes first in the forward). Returns the
    projector's new input (B, P, Dv) where a hook changed it, else None."""
    below = {id(m) for layer in trunk.layers[:at] for m in (layer, layer.self_attn)}
    lm = {id(m) for layer in trunk.layers for m in (layer, layer.self_attn)}
    wanted = (lambda i: i not in lm) if side == "vision" else (lambda i: i in below)
    mine = [h for h in hooks.hooks if h.module is not None and h.role != "decode" and wanted(id(h.module))]
    features = None
    for call in trunk.calls:
        for hook in mine:
            if hook.module is not call.module:
                continue
            if hook.kind == "post":
                args = (call.module, call.args, call.kwargs, call.output) if hook.with_kwargs else \
                    (call.module, call.args, call.output)
                hook.fn(*args)
                continue
            out = hook.fn(call.module, call.args, call.kwargs) if hook.with_kwargs else hook.fn(call.module, call.args)
            if out is not None and hook.role == "change":  # the projector's input, changed (merged features)
                features = (out[0] if hook.with_kwargs else out)[0]
    return features


@torch.no_grad()
def fork(trunk: Trunk, hooks: HookSet, at: int, max_new_tokens: int, eos_ids: set[int], keep_logits: bool = False,
         calls: int | None = None) -> tuple[Decoded, DynamicCache]:
    """A method's run continued from the trunk at layer `at` (its runtime's hooks installed); see the module
    docstring. Times as a solo run splits them: vision = the trunk's vision time + this run's replayed vision-side
    hooks ([CLS] scores, a cut or merge at the projector's input) and projector rows, where it changed the
    projector's input (a solo run does these inside the vision modules); prefill = the trunk's LM time before
    `at` + this run's replayed LM probes and own layers. `calls`: pause the decode after that many steps (to
    finish in a batch). Returns the run and its cache."""
    model, layers = trunk.model, trunk.layers
    _sync(model)
    started = time.perf_counter()
    features = replay(trunk, hooks, at, "vision")
    hidden = trunk.lm_input(features) if features is not None else None  # (1, L, D) or None: the trunk's
    _sync(model)
    lm_started = time.perf_counter()
    replay(trunk, hooks, at, "lm")
    cache = trunk.cache_below(at)
    logits = trunk.logits if at == len(layers) else _own_layers(trunk, at, cache, hidden)
    _sync(model)
    own_ms = (time.perf_counter() - lm_started) * 1e3
    vision_ms = trunk.vision_ms + (lm_started - started) * 1e3
    result = Decoded(tokens=[], prefill_logits=logits, prefill_ms=trunk.lm_ms_before(at) + own_ms,
                     vision_ms=vision_ms)
    decoded = decode_steps(model, trunk.family, cache, result, trunk.prompt_len, max_new_tokens, eos_ids,
                           keep_logits, calls=calls)
    return decoded, cache


def _own_layers(trunk: Trunk, at: int, cache: DynamicCache, hidden: torch.Tensor | None = None) -> torch.Tensor:
    """Layers at.. on `hidden` (default: the recorded input of layer `at`; their hooks cut it), the final norm,
    the LM head -> (V,)."""
    first = trunk.layer_calls[at]
    if hidden is None:
        hidden = first.args[0] if first.args else first.kwargs["hidden_states"]  # (1, L, D) entering layer `at`
    for i in range(at, len(trunk.layers)):
        call = trunk.layer_calls[i]
        kwargs = {**call.kwargs, "past_key_values": cache}
        if call.args:
            out = trunk.layers[i](hidden, *call.args[1:], **kwargs)
        else:
            out = trunk.layers[i](**{**kwargs, "hidden_states": hidden})
        hidden = out[0] if isinstance(out, tuple) else out  # (1, L', D)
    hidden = trunk.family.final_norm(trunk.model)(hidden)
    return trunk.model.get_output_embeddings()(hidden[:, -1:])[0, -1].float()  # (V,) as logits_to_keep=1
