"""Prefill FLOPs from a stated formula, per layer, given the tokens entering each layer."""
from __future__ import annotations

FORMULA = ("sum over layers of 2·n·d² + 2·n·d·d_kv (q,o and k,v projections) + 2·n²·d (scores and values) "
           "+ 3·n·d·m (SwiGLU MLP); n = tokens entering the layer; multiply-accumulates, FastV's convention")


def prefill_flops(tokens_per_layer: list[int], d: int, d_kv: int, m: int) -> int:
    return sum(2 * n * d * d + 2 * n * d * d_kv + 2 * n * n * d + 3 * n * d * m for n in tokens_per_layer)


def lm_dims(config) -> tuple[int, int, int]:
    """(d, d_kv, m) of a decoder config."""
    d = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return d, kv_heads * head_dim, config.intermediate_size
