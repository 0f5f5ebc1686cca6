"""Shared-prefix runs: N methods on one input for little more than the cost of one.

One stock prefill of the unpruned model, the *trunk* (trunk.py), is recorded: the vision tower runs once, and
so do the layers below each method's first cut. A method whose runtime changes nothing below decoder layer F
*forks* at F: its observing hooks below F (probes, raters, [CLS] scores) are fed the recorded calls, layers F..
run for real on its own cache, then the final norm, the LM head and the decode loop, with the runtime's hooks
in place as in a solo run. Pre-LLM methods fork at layer 0 (those that merge vision features get the projector
run again on them). The computation is the solo run's, step for step. A runtime with a hook the recording
cannot feed (merges inside the vision tower, a family's hooks such as Qwen3-VL's DeepStack, a KV-cache cut)
is run alone, from the model's input; unless a family's hooks are among them, its decode joins the others'
batches after its first steps, as a forked run's does.

Timing ("shared-prefix"): the vision tower and layers < F are measured once, in the trunk, and attributed to
every method forking at F; each method's replayed probes, own layers and decode steps are measured on their
own (never inside a batch). A run alone whose later decode steps were batched ("solo-prefill"): vision and
prefill measured in it, decode per token as a forked run's. `solo=True` runs every method alone, as separate
runs (timing "solo").
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..methods import Method, MethodError
from .decode import Decoded, decode_batched, decode_steps, prefill
from .pruner import Pruner
from .trunk import Trunk, fork, fork_layer

SHARED = "shared-prefix"
SOLO = "solo"
SOLO_PREFILL = "solo-prefill"
TIMED_STEPS = 1  # decode steps a forked run takes alone on its own cache (timed); the rest run batched with peers


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
    per step reached, rows = methods (with flash attention, which takes no padding mask here, one batch per group
    of equal cache lengths)."""
    out = {m: Runs() for m in methods}
    prompt_len = inputs["input_ids"].shape[1]
    attention = getattr(model.config, "_attn_implementation", "eager")
    batch = not solo and attention in ("sdpa", "flash_attention_2")
    for _ in range(max(1, repeats)):
        trunk = None if solo else Trunk(model, family, inputs, layouts).run()
        paused = []  # (cache, decoded, decode position offset) of forked runs that still decode
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
        _finish_together(model, family, paused, prompt_len, max_new_tokens, eos_ids, keep_logits,
                         pad=attention == "sdpa")
    for runs in out.values():
        if runs.timing in (SHARED, SOLO_PREFILL):
            runs.total = [attributed_total(d) for d in runs.decoded]
    return out


def _run_one(family, model, inputs, layouts, prompt_len, method, trunk, runs: Runs, max_new_tokens, eos_ids,
             keep_logits, calls) -> list[tuple]:
    """One method's run (forked from the trunk where its hooks allow, else alone); returns its paused decode."""
    started = time.perf_counter()
    paused = []
    with Pruner(family, model, method, layouts, prompt_len) as runtime:
        at = None if trunk is None else fork_layer(trunk, runtime.hooks)
        if at is None:
            decoded, cache = prefill(model, family, inputs)
            plain = all(hook.module is not None for hook in runtime.hooks.hooks)  # no family hooks (DeepStack)
            decode_steps(model, family, cache, decoded, prompt_len, max_new_tokens, eos_ids, keep_logits,
                         calls=calls if plain else None)
            if not decoded.finished:
                paused.append((cache, decoded, runtime.decode_offset))
                runs.timing = SOLO_PREFILL
        else:
            decoded, cache = fork(trunk, runtime.hooks, at, max_new_tokens, eos_ids, keep_logits, calls)
            if not decoded.finished:
                paused.append((cache, decoded, runtime.decode_offset))
    wall = (time.perf_counter() - started) * 1e3
    runs.decoded.append(decoded)
    runs.plans.append(runtime.plan)
    runs.scoring.append(runtime.plan.scoring_ms)
    runs.total.append(wall)  # a forked run's total is replaced by attributed_total once it has finished
    if at is not None:
        runs.timing, runs.shared_below = SHARED, at
    return paused


def _finish_together(model, family, paused: list[tuple], prompt_len, max_new_tokens, eos_ids, keep_logits,
                     pad: bool) -> None:
    """Finish paused decodes in batches (rows = runs) of the same step reached: where `pad`, unequal caches are
    padded and masked, grouped as `decode_groups` finds cheapest; else one batch per equal cache lengths."""
    by_step: dict[int, list] = {}
    for run in paused:
        by_step.setdefault(len(run[1].tokens), []).append(run)
    fixed = step_cost_in_cached_tokens(model, family) if pad else None
    for runs in by_step.values():
        lengths = [[layer.keys.shape[-2] for layer in cache.layers] for cache, _, _ in runs]  # (runs, layers)
        for group in decode_groups(lengths, fixed):
            batch = [runs[r] for r in group]
            decode_batched(model, family, [c for c, _, _ in batch], [d for _, d, _ in batch], prompt_len,
                           max_new_tokens, eos_ids, keep_logits, offsets=[o for _, _, o in batch])


def decode_groups(lengths: list[list[int]], fixed: float | None) -> list[list[int]]:
    """Rows (indices into `lengths`, each row's cached length per layer) split into decode batches.

    `fixed` None: one batch per equal lengths. Else rows are padded within a batch, and a batch's step costs
    `fixed` + rows x the sum over layers of its longest cache (cached tokens read and copied per step, with
    `fixed` the weights read per step in the same unit); the cheapest split into runs of rows sorted by total
    length (dynamic programming over the sorted order)."""
    if fixed is None:
        same: dict[tuple, list[int]] = {}
        for r, row in enumerate(lengths):
            same.setdefault(tuple(row), []).append(r)
        return list(same.values())
    order = sorted(range(len(lengths)), key=lambda r: sum(lengths[r]))
    n = len(order)

    def cost(a: int, b: int) -> float:  # rows order[a:b] as one batch
        longest = [max(lengths[r][i] for r in order[a:b]) for i in range(len(lengths[0]))]
        return fixed + (b - a) * sum(longest)

    best = [0.0] + [float("inf")] * n  # best[b]: cheapest split of order[:b]
    start = [0] * (n + 1)
    for b in range(1, n + 1):
        for a in range(b):
            c = best[a] + cost(a, b)
            if c < best[b]:
                best[b], start[b] = c, a
    groups, b = [], n
    while b:
        groups.append(order[start[b]:b])
        b = start[b]
    return groups[::-1]


def step_cost_in_cached_tokens(model, family) -> float:
    """What reading the LM's decoder weights once costs, in cached tokens of one layer (keys + values): the `fixed`
    of `decode_groups` (decode steps are bound by memory traffic; a cache's append also copies it, which this
    rough model leaves out in favour of fewer, larger batches)."""
    layers = family.lm_layers(model)
    weights = sum(p.numel() * p.element_size() for p in layers.parameters())
    attention = layers[0].self_attn
    config = model.config.get_text_config()
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(attention, "head_dim", config.hidden_size // config.num_attention_heads)
    per_token = 2 * heads * head_dim * next(layers.parameters()).element_size()
    return weights / per_token


def attributed_total(decoded: Decoded) -> float:
    """A forked run's total: attributed vision and prefill, plus its per-token decode time (measured alone) for
    every decode step it took, batched ones included."""
    steps = len(decoded.decode_ms) + decoded.batched_steps
    per_step = sum(decoded.decode_ms) / len(decoded.decode_ms) if decoded.decode_ms else 0.0
    return decoded.vision_ms + decoded.prefill_ms + per_step * steps
