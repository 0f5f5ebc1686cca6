"""Attention of every decoding query at one layer, without eager attention: the prompt's last position during the
prefill (it produces the first answer token) and each fed answer token during decoding (it produces the next).

A forward pre-hook on the layer's attention module recomputes the query row with the module's own projection and
the family's RoPE; its keys are the layer's own (the prefill's, cut or not) or the KV cache the layer holds plus
the fed token's key. The layer itself runs unchanged on SDPA / flash attention.
"""
from __future__ import annotations

import torch

from .probe import AttentionPreHook, attention_rows, qk_norm


class DecodeProbe(AttentionPreHook):
    """Collects one head-averaged row `(L_keys,)` per decoding query at one decoder layer."""

    def __init__(self, attention: torch.nn.Module, apply_rotary, layer: int):
        self.attention, self.apply_rotary, self.layer = attention, apply_rotary, layer
        self.rows: list[torch.Tensor] = []  # per answer token: what the query that produced it attended to
        self._handle = None

    @torch.no_grad()
    def _hook(self, module, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (1, L or 1, D)
        cos, sin = kwargs["position_embeddings"]
        if hidden.shape[1] > 1:  # prefill: the last position's row over this layer's sequence
            self.rows.append(attention_rows(module, self.apply_rotary, hidden, (cos, sin), [hidden.shape[1] - 1])[0])
            return None
        d = module.head_dim
        q, k = qk_norm(module, module.q_proj(hidden).view(1, 1, -1, d), module.k_proj(hidden).view(1, 1, -1, d))
        q, k = self.apply_rotary(q.transpose(1, 2), k.transpose(1, 2), cos, sin)  # (1, Hq, 1, d), (1, Hkv, 1, d)
        cache = kwargs["past_key_values"].layers[self.layer]
        keys = torch.cat([cache.keys, k.to(cache.keys)], dim=-2)  # (1, Hkv, Lc + 1, d), RoPE applied
        keys = keys.repeat_interleave(q.shape[1] // keys.shape[1], dim=1)  # (1, Hq, Lc + 1, d)
        logits = (q.float() @ keys.float().transpose(-1, -2)) * module.scaling  # (1, Hq, 1, Lc + 1)
        self.rows.append(logits.softmax(-1).mean(dim=1)[0, 0])  # (Lc + 1,)
        return None


def key_positions(pruner, layer: int, prompt_len: int, decoding: bool) -> torch.Tensor:
    """Sequence positions of the prompt keys `layer` holds (during the prefill, or in the KV cache while
    decoding), for a finished run of either runtime."""
    return pruner.positions_at(layer, decoding)
