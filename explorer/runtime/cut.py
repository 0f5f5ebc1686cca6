"""Applying a cut inside a stock decoder: the kept rows and merged vectors of the hidden states, and one slicing
of the per-call tensors every layer receives (rotary cos/sin, position ids, mask), never resized in place.
"""
from __future__ import annotations

import torch

from ..methods import Selection


def merged_vectors(sel: Selection, hidden: torch.Tensor) -> list[torch.Tensor]:
    """(D,) vector of each merged token of `sel`: `sel.merged` if given (VisionZip), else merge @ hidden (n, D)."""
    if sel.merge is None:
        return []
    return list(sel.merged if sel.merged is not None else sel.merge.to(hidden) @ hidden)


def cut_rows(hidden: torch.Tensor, keep: torch.Tensor, new_order: torch.Tensor,
             merged: dict[int, torch.Tensor]) -> torch.Tensor:
    """(1, L, D) -> (1, L', D): the rows where `keep` (L,) is set, each merged group's row (at its first member's
    sequence position, a key of `merged`) replaced by the group's vector. `new_order`: (L',) sequence positions."""
    out = hidden[:, torch.nonzero(keep).flatten().to(hidden.device)].clone()
    for pos, vector in merged.items():
        out[0, int(torch.searchsorted(new_order, pos))] = vector.to(out)
    return out


def replace_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    """A layer call's (args, kwargs) with its hidden states replaced."""
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def slice_prefill(kwargs: dict, order: torch.Tensor, prompt_len: int, renumber: bool) -> dict:
    """A prefill layer call's per-call tensors for the rows `order` (L',) (sequence positions) out of the
    prompt's `prompt_len`: rotary tables and position ids at the survivors' original positions (or 0..L'-1
    when `renumber`), the mask's rows and columns at the survivors."""
    if len(order) == prompt_len:
        return kwargs
    kwargs = dict(kwargs)
    cos, sin = kwargs["position_embeddings"]
    if cos.shape[-2] == prompt_len:
        idx = (torch.arange(len(order)) if renumber else order).to(cos.device)
        kwargs["position_embeddings"] = (cos[..., idx, :], sin[..., idx, :])
    pos = kwargs.get("position_ids")
    if isinstance(pos, torch.Tensor) and pos.shape[-1] == prompt_len:
        kwargs["position_ids"] = pos[..., :len(order)] if renumber else pos[..., order.to(pos.device)]
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.shape[-1] == prompt_len:
        idx = order.to(mask.device)
        kwargs["attention_mask"] = mask[..., idx, :][..., idx]
    return kwargs


def slice_decode_mask(kwargs: dict, base: torch.Tensor, mine: torch.Tensor) -> dict:
    """A decode step's mask (built for layer 0's cache, whose prompt rows are the sequence positions `base`) for a
    layer whose cache holds the prompt rows `mine` (a subset of `base`), followed by the answer tokens."""
    mask = kwargs.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or len(base) == len(mine):
        return kwargs
    idx = torch.cat([torch.searchsorted(base, mine), torch.arange(len(base), mask.shape[-1])])  # (keys,) mask column
    return {**kwargs, "attention_mask": mask[..., idx.to(mask.device)]}


def cut_cache(cache, held: list[torch.Tensor], keep: list[torch.Tensor]) -> None:
    """The KV-cache cut after prefill: layer i's cache, holding the sequence positions `held[i]`, keeps only those
    in `keep[i]` (a subset, ascending)."""
    for layer, have, want in zip(cache.layers, held, keep):
        index = torch.searchsorted(have, want).to(layer.keys.device)  # (L_i',) rows of the layer's cache
        layer.keys, layer.values = layer.keys[:, :, index], layer.values[:, :, index]
