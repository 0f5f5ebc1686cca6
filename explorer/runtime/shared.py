"""Shared-prefix runs: N methods on one input for little more than the cost of one.

One stock prefill of the unpruned model, the *trunk*, is recorded: the vision tower runs once, and every
decoder layer's call (the hidden states entering it and the per-call tensors: mask, rotary cos/sin, positions)
and its attention's call are kept, with the KV cache after the prefill and the time each layer started.

A method whose runtime changes nothing below decoder layer F (its first cut) then *forks* at F: the hooks its
runtime placed below F only observe (probes, raters) and are fed the recorded calls instead of those layers
running again; layers F.. run for real on the method's own cache (seeded with the trunk's keys and values below
F), then the final norm, the LM head and the decode loop, with the runtime's hooks in place as in a solo run.
The computation is the solo run's, step for step. A runtime with any hook elsewhere (vision side, the whole
LM, a family's hooks such as Qwen3-VL's DeepStack, a KV-cache cut) is run alone, from the model's input.

Timing ("shared-prefix"): the vision tower and layers < F are measured once, in the trunk, and attributed to
every method forking at F; each method's replayed probes, own layers and decode steps are measured on their
own (never inside a batch). `solo=True` runs every method alone, as separate runs (timing "solo").
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from ..methods import Method, MethodError
from .decode import Decoded, VisionTimer, _sync, decode_batched, decode_steps, greedy
from .hooks import HookSet
from .pruner import Pruner

SHARED = "shared-prefix"
SOLO = "solo"
TIMED_STEPS = 3  # decode steps a forked run takes alone on its own cache (timed); the rest run batched with peers


@dataclass
class Call:
    """One recorded module call of the trunk's prefill (what a forward pre-hook saw)."""

    module: torch.nn.Module
    args: tuple
    kwargs: dict


class Trunk:
    """The unpruned prefill of one input, recorded for forks (see the module docstring)."""

    def __init__(self, model, family, inputs: dict):
        self.model, self.family, self.inputs = model, family, inputs
        self.layers = family.lm_layers(model)
        self.prompt_len = inputs["input_ids"].shape[1]
        self.calls: list[Call] = []  # forward order: layer i's call, then its attention's
        self.layer_calls: list[Call] = []  # (n_layers,) the call of each decoder layer
        self.entered: list[float] = []  # ms from the forward's start to each layer's start
        self._t0 = 0.0

    @torch.no_grad()
    def run(self) -> "Trunk":
        cache = DynamicCache(config=self.model.config.get_text_config())
        hooks = HookSet()
        try:
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


def fork_layer(hooks: HookSet, layers) -> int | None:
    """The first decoder layer whose input a run's hooks change (len(layers) if none), or None when the run
    cannot start from the trunk: a hook on another module, a changing hook that is not a layer pre-hook, or an
    observing hook below the fork that a recorded call cannot feed (a forward hook)."""
    where = {}
    for i, layer in enumerate(layers):
        where[id(layer)] = where[id(layer.self_attn)] = i
    changes = []
    for hook in hooks.hooks:
        i = where.get(id(hook.module)) if hook.module is not None else None
        if i is None:
            return None
        if hook.role == "change":
            if hook.kind != "pre" or hook.module is not layers[i]:
                return None
            changes.append(i)
    at = min(changes, default=len(layers))
    if any(h.kind != "pre" for h in hooks.hooks if where[id(h.module)] < at):
        return None
    return at


def replay(trunk: Trunk, hooks: HookSet, at: int) -> None:
    """Feed the hooks placed below layer `at` the calls the trunk recorded there, in forward order."""
    below = {id(m) for layer in trunk.layers[:at] for m in (layer, layer.self_attn)}
    mine = [h for h in hooks.hooks if h.module is not None and id(h.module) in below]
    for call in trunk.calls:
        for hook in mine:
            if hook.module is call.module:
                hook.fn(call.module, call.args, call.kwargs) if hook.with_kwargs else hook.fn(call.module, call.args)


@torch.no_grad()
def fork(trunk: Trunk, hooks: HookSet, at: int, max_new_tokens: int, eos_ids: set[int], keep_logits: bool = False,
         calls: int | None = None) -> tuple[Decoded, DynamicCache]:
    """A method's run continued from the trunk at layer `at` (its runtime's hooks installed); see the module
    docstring. Prefill time = the trunk's LM time before `at` + this run's replayed probes and own layers.
    `calls`: pause the decode after that many steps (to finish in a batch). Returns the run and its cache."""
    model, layers = trunk.model, trunk.layers
    _sync(model)
    started = time.perf_counter()
    replay(trunk, hooks, at)
    cache = trunk.cache_below(at)
    logits = trunk.logits if at == len(layers) else _own_layers(trunk, at, cache)
    _sync(model)
    own_ms = (time.perf_counter() - started) * 1e3
    result = Decoded(tokens=[], prefill_logits=logits, prefill_ms=trunk.lm_ms_before(at) + own_ms,
                     vision_ms=trunk.vision_ms)
    decoded = decode_steps(model, trunk.family, cache, result, trunk.prompt_len, max_new_tokens, eos_ids,
                           keep_logits, calls=calls)
    return decoded, cache


def _own_layers(trunk: Trunk, at: int, cache: DynamicCache) -> torch.Tensor:
    """Layers at.. on the recorded input of layer `at` (their hooks cut it), the final norm, the LM head -> (V,)."""
    first = trunk.layer_calls[at]
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


@dataclass
class Runs:
    """One method's repeated runs on one input: decoded outputs, plans, scoring and total times, and how the
    times were obtained (`timing`; `shared_below`: the layers measured once in the trunk, None when solo)."""

    decoded: list[Decoded] = field(default_factory=list)
    plans: list = field(default_factory=list)
    scoring: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    timing: str = SOLO
    shared_below: int | None = None
    error: MethodError | None = None


def run_methods(family, model, inputs: dict, layouts, methods: list[Method], max_new_tokens: int,
                eos_ids: set[int], repeats: int = 1, solo: bool = False, keep_logits: bool = False,
                on_method=None) -> dict[Method, Runs]:
    """Every method on one input, sharing the trunk unless `solo`; a method whose configuration fails on this
    input (MethodError) gets its error and leaves the others running. `on_method(i, method)` before each run.

    Forked runs take their first TIMED_STEPS decode steps alone (timed, on their own cache); with SDPA or flash
    attention (no mask tensor at one query, so their hooks pass decode steps through) the rest run as one batch
    per group of equal cache lengths, rows = methods."""
    out = {m: Runs() for m in methods}
    prompt_len = inputs["input_ids"].shape[1]
    batch = not solo and getattr(model.config, "_attn_implementation", "eager") in ("sdpa", "flash_attention_2")
    for _ in range(max(1, repeats)):
        trunk = None if solo else Trunk(model, family, inputs).run()
        paused = []  # (cache, decoded) of forked runs that still decode
        for i, method in enumerate(methods):
            runs = out[method]
            if runs.error is not None:
                continue
            if on_method:
                on_method(i, method)
            try:
                paused += _run_one(family, model, inputs, layouts, prompt_len, method, trunk, runs, max_new_tokens,
                                   eos_ids, keep_logits, TIMED_STEPS if batch else None)
            except MethodError as exc:
                runs.error = exc
        _finish_together(model, family, paused, prompt_len, max_new_tokens, eos_ids, keep_logits)
    for runs in out.values():
        if runs.timing == SHARED:
            runs.total = [attributed_total(d) for d in runs.decoded]
    return out


def _run_one(family, model, inputs, layouts, prompt_len, method, trunk, runs: Runs, max_new_tokens, eos_ids,
             keep_logits, calls) -> list[tuple]:
    """One method's run (forked from the trunk where its hooks allow, else alone); returns its paused decode."""
    started = time.perf_counter()
    paused = []
    with Pruner(family, model, method, layouts, prompt_len) as runtime:
        at = None if trunk is None else fork_layer(runtime.hooks, trunk.layers)
        if at is None:
            decoded = greedy(model, family, inputs, max_new_tokens, eos_ids, keep_logits=keep_logits)
        else:
            decoded, cache = fork(trunk, runtime.hooks, at, max_new_tokens, eos_ids, keep_logits, calls)
            if not decoded.finished:
                paused.append((cache, decoded))
    wall = (time.perf_counter() - started) * 1e3
    runs.decoded.append(decoded)
    runs.plans.append(runtime.plan)
    runs.scoring.append(runtime.plan.scoring_ms)
    runs.total.append(wall)  # a forked run's total is replaced by attributed_total once it has finished
    if at is not None:
        runs.timing, runs.shared_below = SHARED, at
    return paused


def _finish_together(model, family, paused: list[tuple], prompt_len, max_new_tokens, eos_ids, keep_logits) -> None:
    """Finish paused decodes in batches of equal cache lengths per layer and equal step."""
    groups: dict[tuple, list] = {}
    for cache, decoded in paused:
        key = (tuple(layer.keys.shape[-2] for layer in cache.layers), len(decoded.tokens))
        groups.setdefault(key, []).append((cache, decoded))
    for group in groups.values():
        decode_batched(model, family, [c for c, _ in group], [d for _, d in group], prompt_len, max_new_tokens,
                       eos_ids, keep_logits)


def attributed_total(decoded: Decoded) -> float:
    """A forked run's total: attributed vision and prefill, plus its per-token decode time (measured alone) for
    every decode step it took, batched ones included."""
    steps = len(decoded.decode_ms) + decoded.batched_steps
    per_step = sum(decoded.decode_ms) / len(decoded.decode_ms) if decoded.decode_ms else 0.0
    return decoded.vision_ms + decoded.prefill_ms + per_step * steps
