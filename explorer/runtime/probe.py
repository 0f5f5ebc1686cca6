"""Attention rows of chosen queries at one layer, without eager attention and without running a layer twice.

A forward pre-hook on the layer's attention module sees the same normalised hidden states and rotary
tables the attention is about to use; it recomputes q (chosen rows only) and k with the module's own
projections and the family's RoPE, and takes a causal softmax over all keys. The layer itself then runs
unchanged on SDPA / flash attention.
"""
from __future__ import annotations

import torch


class AttentionPreHook:
    """A context manager that runs `self._hook(module, args, kwargs)` before every call of `self.attention`
    and removes it on exit (no hook outlives its run)."""

    attention: torch.nn.Module

    def __enter__(self):
        self._handle = self.attention.register_forward_pre_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def qk_norm(module, q, k):
    """The per-head norms an attention applies to q and k before RoPE (Qwen3's `q_norm` / `k_norm`), else q, k
    unchanged; q (1, R, Hq, d) and k (1, L, Hkv, d), either may be None."""
    if getattr(module, "q_norm", None) is not None:
        q = module.q_norm(q) if q is not None else None
        k = module.k_norm(k) if k is not None else None
    return q, k


def attention_rows(module, apply_rotary, hidden, position_embeddings, positions: list[int]) -> torch.Tensor:
    """Causal softmax attention of query `positions` over all keys, averaged over heads -> (R, L) float32."""
    cos, sin = position_embeddings
    head_dim = module.head_dim
    index = torch.tensor(positions, device=hidden.device)
    q = module.q_proj(hidden[:, index]).view(1, len(positions), -1, head_dim)  # (1, R, Hq, d)
    k = module.k_proj(hidden).view(1, hidden.shape[1], -1, head_dim)  # (1, L, Hkv, d)
    q, k = qk_norm(module, q, k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)  # (1, Hq, R, d), (1, Hkv, L, d)
    q, _ = apply_rotary(q, q, cos[..., index, :], sin[..., index, :])
    _, k = apply_rotary(k, k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # (1, Hq, L, d) for grouped-query attention
    logits = (q.float() @ k.float().transpose(-1, -2)) * module.scaling  # (1, Hq, R, L)
    keys = torch.arange(hidden.shape[1], device=hidden.device)
    logits = logits.masked_fill(keys[None, :] > index[:, None], float("-inf"))  # causal
    return logits.softmax(-1).mean(dim=1)[0]  # (R, L)
