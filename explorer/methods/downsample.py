"""Downsample: the "just send fewer pixels" baseline that VTC-Bench found to beat many pruning methods.

- Dynamic-resolution models (Qwen2-VL): the engine resizes each image so the processor's grid is the largest
  grid of at most `keep` tokens near the image's aspect ratio (`resized_grid`), and runs the model unpruned on
  that smaller input. The vision tower itself then runs on fewer patches, so the saving covers the tower
  too: the result says so and reports the tower's patch counts beside the LM FLOPs (whose formula counts the
  LM only) and the measured vision time. The processor's minimum/maximum pixels may move the count; the
  result reports the count the model actually got.
- Fixed-grid models (LLaVA): the projector's output grid is average-pooled, before the LLM, to the grid scaled
  uniformly to at most `keep` tokens (`pooled_grid`: the nearest square <= keep on a square grid, 8x8 at 64 of
  24x24). The windows are near-equal and do not overlap (adaptive pooling's would); each becomes one merged
  token at its first cell, positions renumbered. The vision tower still runs at full resolution: no saving
  there. LLaVA-NeXT: each segment pooled with its share of the budget, newline tokens pooled with their row.

So the budget is an upper bound, not exact: the result reports the tokens it got (`yields` for a grid).
"""
from dataclasses import dataclass
from math import isqrt, log
from typing import ClassVar

import torch

from .base import Selection, SegmentView
from .scoring import window_grid
from .staged import PreLLMMethod


@dataclass(frozen=True)
class Downsample(PreLLMMethod, name="downsample", label="Downsample (fewer pixels: smaller image / pooled grid)"):
    """As the authors (VTC-Bench's baseline): send the model a smaller image. Here: Qwen2-VL gets a resized image (≈
    keep tokens, at most keep; the tower's cost falls too); LLaVA's fixed grid is average-pooled after the
    projector to the nearest square <= keep (the tower's cost does not fall)."""

    resizes_input: ClassVar[bool] = True  # on dynamic-resolution families the engine sends a smaller image
    where = ("Qwen2-VL: a smaller image, so the vision tower also runs on fewer patches; LLaVA: the projector's "
             "grid average-pooled to the nearest square <= keep before the LLM")

    def yields(self, grid: tuple[int, int], k: int) -> int:
        """Tokens a fixed grid keeps at budget k (at most k)."""
        gh, gw = pooled_grid(grid, k)
        return gh * gw

    def select(self, view: SegmentView, k: int) -> Selection:
        return pooled(view.grid, pooled_grid(view.grid, k))


def pooled_grid(grid: tuple[int, int], k: int) -> tuple[int, int]:
    """The grid scaled uniformly (floor) to at most k cells; a square grid gives the nearest square <= k."""
    h, w = grid
    gh = min(max(1, isqrt(k * h // w)), h, k)
    gw = min(max(1, isqrt(k * w // h)), w, k // gh)
    return gh, max(1, gw)


def resized_grid(grid: tuple[int, int], k: int) -> tuple[int, int]:
    """The largest grid of at most k cells near the grid's aspect ratio: the uniform floor, then rows or columns
    added one at a time (the one keeping the aspect closer) while the count stays <= k."""
    h, w = grid
    gh, gw = pooled_grid(grid, k)
    while True:
        grown = [(a, b) for a, b in ((gh + 1, gw), (gh, gw + 1)) if a <= h and b <= w and a * b <= k]
        if not grown:
            return gh, gw
        gh, gw = min(grown, key=lambda g: abs(log(g[0] * w / (g[1] * h))))


def pooled(grid: tuple[int, int], out: tuple[int, int]) -> Selection:
    """Average pooling of a row-major grid into out = (gh, gw) non-overlapping near-equal windows: one-cell
    windows are kept tokens, the others merged tokens (mean of the window)."""
    windows = window_grid(grid, out)
    n = grid[0] * grid[1]
    kept = torch.tensor(sorted(int(w[0]) for w in windows if w.numel() == 1), dtype=torch.long)
    wide = [w for w in windows if w.numel() > 1]
    if not wide:
        return Selection(kept=kept)
    merge = torch.zeros(len(wide), n)  # (g, n) one row of weights per merged token
    for row, win in enumerate(wide):
        merge[row, win] = 1.0 / win.numel()
    return Selection(kept=kept, merge=merge)
