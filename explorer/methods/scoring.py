"""Small pure-torch helpers shared by methods: top-k as sorted indices, min-max, window partitions."""
from __future__ import annotations

import math

import torch


def top_k_sorted(scores: torch.Tensor, k: int, largest: bool = True) -> torch.Tensor:
    """Indices of the k largest (or smallest) scores, sorted ascending; ties go to the lower index."""
    n = scores.numel()
    order = torch.argsort(scores.float(), descending=largest, stable=True)  # (n,)
    return torch.sort(order[: min(k, n)]).values


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Rescale to [0, 1]; a constant vector maps to zeros."""
    x = x.float()
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else torch.zeros_like(x)


def split_edges(size: int, parts: int) -> list[int]:
    """Boundaries that cut `size` cells into `parts` near-equal runs."""
    return [math.floor(i * size / parts) for i in range(parts + 1)]


def window_grid(grid: tuple[int, int], windows: tuple[int, int]) -> list[torch.Tensor]:
    """Partition a row-major (h, w) grid into gh x gw rectangular windows; returns each window's indices."""
    h, w = grid
    gh, gw = windows
    rows, cols = split_edges(h, gh), split_edges(w, gw)
    out = []
    for i in range(gh):
        for j in range(gw):
            r = torch.arange(rows[i], rows[i + 1])
            c = torch.arange(cols[j], cols[j + 1])
            out.append((r[:, None] * w + c[None, :]).flatten())
    return out


def band_windows(grid: tuple[int, int], k: int) -> list[torch.Tensor]:
    """Exactly k near-equal windows tiling a row-major (h, w) grid: gh row bands, each cut into columns.

    When k factors evenly (k=144 on 24x24 -> 12x12 windows of 2x2; k=64 -> 8x8 of 3x3) this is the
    paper's a x a pooling grid; otherwise band sizes differ by at most one window.
    """
    h, w = grid
    if not 1 <= k <= h * w:
        raise ValueError(f"cannot tile a {h}x{w} grid into {k} windows")
    gh = min(h, k, max(1, round(math.sqrt(k * h / w))))
    while math.ceil(k / gh) > w:
        gh += 1
    rows = split_edges(h, gh)
    per_band = [k // gh + (1 if i < k % gh else 0) for i in range(gh)]
    out = []
    for i, count in enumerate(per_band):
        r = torch.arange(rows[i], rows[i + 1])
        cols = split_edges(w, count)
        for j in range(count):
            c = torch.arange(cols[j], cols[j + 1])
            out.append((r[:, None] * w + c[None, :]).flatten())
    return out


def cosine_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each row of x (n, D) to ref (D,) -> (n,)."""
    return torch.nn.functional.cosine_similarity(x.float(), ref.float()[None, :], dim=-1)
