"""Our own short greedy loop: prefill once, then one token at a time from the KV cache, timed honestly.

Owning the loop lets every decode step pass its position explicitly (original numbering, M-RoPE deltas
for Qwen2-VL), which stays right whatever the cut did to the cache lengths.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache


@dataclass
class Decoded:
    tokens: list[int]
    prefill_logits: torch.Tensor  # (V,) logits of the prompt's last position
    step_logits: list[torch.Tensor] = field(default_factory=list)  # (V,) per generated token after the first
    prefill_ms: float = 0.0
    vision_ms: float = 0.0
    decode_ms: list[float] = field(default_factory=list)
    kv_cache_bytes: int = 0
    kv_lengths: list[int] = field(default_factory=list)  # cached sequence length per layer after prefill
    pending: torch.Tensor | None = None  # (V,) logits not yet turned into a token (decoding paused)
    finished: bool = False  # eos or the token limit reached
    batched_steps: int = 0  # decode steps run inside a batch of methods (not timed; see runtime/shared.py)


class VisionTimer:
    """Times the vision modules (tower + projector) inside the stock forward with hooks, removed on exit."""

    def __init__(self, modules):
        self.modules, self.ms, self._handles, self._t = modules, 0.0, [], 0.0

    def __enter__(self):
        for i, module in enumerate(self.modules):
            if i == 0:
                self._handles.append(module.register_forward_pre_hook(self._start))
            if i == len(self.modules) - 1:
                self._handles.append(module.register_forward_hook(self._stop))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()

    def _start(self, module, args):
        _sync(module)
        self._t = time.perf_counter()

    def _stop(self, module, args, output):
        _sync(module)
        self.ms += (time.perf_counter() - self._t) * 1e3


@torch.no_grad()
def greedy(model, family, inputs: dict, max_new_tokens: int, eos_ids: set[int], keep_logits: bool = False,
           forced: list[int] | None = None) -> Decoded:
    """Prefill `inputs` (batch 1), then greedy-decode up to `max_new_tokens` tokens, stopping at eos.

    `forced` feeds a given answer instead of the argmax (teacher forcing, e.g. to score an answer).
    """
    result, cache = prefill(model, family, inputs)
    return decode_steps(model, family, cache, result, inputs["input_ids"].shape[1], max_new_tokens, eos_ids,
                        keep_logits, forced)


@torch.no_grad()
def prefill(model, family, inputs: dict) -> tuple[Decoded, DynamicCache]:
    """The stock forward over `inputs` (batch 1) with a fresh cache, vision and LM prefill timed apart: the run
    (no tokens yet) and its cache, for `decode_steps`."""
    cache = DynamicCache(config=model.config.get_text_config())
    with VisionTimer(family.vision_modules(model)) as vision:
        _sync(model)
        started = time.perf_counter()
        out = model(**inputs, past_key_values=cache, use_cache=True, logits_to_keep=1)
        _sync(model)
        prefill_ms = (time.perf_counter() - started) * 1e3
    logits = out.logits[0, -1].float()  # (V,)
    return Decoded(tokens=[], prefill_logits=logits, prefill_ms=prefill_ms - vision.ms, vision_ms=vision.ms), cache


@torch.no_grad()
def decode_steps(model, family, cache, result: Decoded, prompt_len: int, max_new_tokens: int, eos_ids: set[int],
                 keep_logits: bool = False, forced: list[int] | None = None, calls: int | None = None) -> Decoded:
    """Greedy decoding from a prefilled `cache` whose prefill logits are `result.prefill_logits`; fills in the
    cache's size after the prefill, the tokens and each step's time (measured on this cache alone). `calls`:
    pause after that many model calls (`result.pending` holds the next logits; see decode_batched)."""
    result.kv_lengths = [layer.keys.shape[-2] for layer in cache.layers]
    result.kv_cache_bytes = sum(layer.keys.numel() * layer.keys.element_size() +
                                layer.values.numel() * layer.values.element_size() for layer in cache.layers)
    device = next(model.parameters()).device
    logits = result.prefill_logits
    for step in range(max_new_tokens):
        if calls is not None and len(result.decode_ms) >= calls:
            result.pending = logits
            return result
        token = forced[step] if forced is not None else int(torch.argmax(logits))
        result.tokens.append(token)
        if token in eos_ids or step == max_new_tokens - 1:
            break
        started = time.perf_counter()
        out = model(input_ids=torch.tensor([[token]], device=device), past_key_values=cache, use_cache=True,
                    position_ids=family.decode_position_ids(model, prompt_len, step).to(device))
        logits = out.logits[0, -1].float()
        _sync(model)
        result.decode_ms.append((time.perf_counter() - started) * 1e3)
        if keep_logits:
            result.step_logits.append(logits)
    result.finished = True
    return result


@torch.no_grad()
def decode_batched(model, family, caches: list, results: list[Decoded], prompt_len: int, max_new_tokens: int,
                   eos_ids: set[int], keep_logits: bool = False, offsets: list[int] | None = None) -> None:
    """Finish paused greedy decodes together, one row per run, all at the same step; each row's positions are the
    original numbering minus its offset (a pre-LLM run's renumbering, `Pruner.decode_offset`). Caches of unequal
    lengths are padded at the end of each layer and the padding masked out (`PaddedKeys`). Each row is what its
    own loop would compute; rows that stop early ride along until the last one stops. Only for runs whose hooks
    pass the decode step through unchanged but for that offset (SDPA: no mask tensor at one query)."""
    device = next(model.parameters()).device
    batch = type(caches[0])(config=model.config.get_text_config())
    lengths = [[c.layers[i].keys.shape[-2] for c in caches] for i in range(len(caches[0].layers))]  # (layers, B)
    for i, row_lengths in enumerate(lengths):
        longest = max(row_lengths)
        batch.update(torch.cat([_pad(c.layers[i].keys, longest) for c in caches]),
                     torch.cat([_pad(c.layers[i].values, longest) for c in caches]), i)
    logits = torch.stack([r.pending for r in results])  # (B, V)
    for r in results:
        r.pending = None
    step = len(results[0].tokens)
    shift = torch.tensor(offsets or [0] * len(results), device=device)[:, None]  # (B, 1) per row
    with PaddedKeys(family.lm_layers(model), batch, lengths):
        while True:
            tokens = torch.argmax(logits, dim=-1)  # (B,)
            for r, token in zip(results, tokens.tolist()):
                if not r.finished:
                    r.tokens.append(token)
                    r.finished = token in eos_ids or step == max_new_tokens - 1
            if all(r.finished for r in results):
                return
            pos = family.decode_position_ids(model, prompt_len, step).to(device)  # (..., 1, 1)
            pos = pos.expand(*pos.shape[:-2], len(results), 1) - shift  # (..., B, 1) one row per run
            out = model(input_ids=tokens[:, None].to(device), past_key_values=batch, use_cache=True,
                        position_ids=pos)
            logits = out.logits[:, -1].float()  # (B, V)
            for b, r in enumerate(results):
                if not r.finished:
                    r.batched_steps += 1
                    if keep_logits:
                        r.step_logits.append(logits[b])
            step += 1


def _pad(kv: torch.Tensor, length: int) -> torch.Tensor:
    """(1, H, length, d): `kv` (1, H, L, d) with zeros appended along the sequence (masked out by PaddedKeys)."""
    return torch.nn.functional.pad(kv, (0, 0, 0, length - kv.shape[-2]))


class PaddedKeys:
    """Forward pre-hooks on the decoder layers of a batched decode whose rows cached unequal lengths: each layer
    attends, per row, to that row's own cached keys and the new tokens, never to the padding between them
    (a boolean (B, 1, 1, keys) mask in place of the model's; no mask at all where no row is padded there).
    Removed on exit."""

    def __init__(self, layers, cache, lengths: list[list[int]]):
        self.layers, self.cache, self._handles = layers, cache, []
        self.lengths = [torch.tensor(row) for row in lengths]  # per layer (B,) cached length of each row

    def __enter__(self):
        try:
            for i, layer in enumerate(self.layers):
                if int(self.lengths[i].min()) != int(self.lengths[i].max()):
                    self._handles.append(layer.register_forward_pre_hook(self._masker(i), with_kwargs=True))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _masker(self, i: int):
        def hook(module, args, kwargs):
            if kwargs.get("attention_mask") is not None:
                raise RuntimeError("a batched decode of unequal caches needs the model to pass no mask at one query")
            padded = self.cache.layers[i].keys.shape[-2]  # this layer's keys before the new token: padding included
            longest = int(self.lengths[i].max())
            j = torch.arange(padded + 1, device=self.cache.layers[i].keys.device)  # key index of the row
            lengths = self.lengths[i].to(j.device)[:, None]  # (B, 1)
            mask = (j[None] < lengths) | (j[None] >= longest)  # (B, keys) own cache and new tokens
            return args, {**kwargs, "attention_mask": mask[:, None, None, :]}
        return hook


def _sync(module_or_model):
    try:
        device = next(module_or_model.parameters()).device
    except StopIteration:
        return
    if device.type == "cuda":
        torch.cuda.synchronize(device)
