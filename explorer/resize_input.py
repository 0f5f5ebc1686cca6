"""The downsample baseline on dynamic-resolution models (Qwen2-VL): send a smaller image, run the model unpruned.

Engine-level because it re-runs the processor: each image is resized so the processor's token grid is
`resized_grid(grid, keep)`, the model runs on that input as it stands, and the result is written over the
original image's grid (each new token a group of the original cells it covers) so panels compare like with
like. Costs are the small input's; the LM FLOPs ratio is against the original prompt, and the vision tower's
patch counts are reported beside it, because this is the one method whose saving includes the tower.
"""
from __future__ import annotations

import time

import torch
from PIL import Image

from .methods import MethodError
from .methods.downsample import pooled, resized_grid
from .results import method_result
from .runtime.decode import greedy
from .runtime.plan import CutPlan

TOWER_NOTE = ("the image itself was made smaller, so the vision tower ran on fewer patches too: its cost falls "
              "with the LM's (the FLOPs above count the LM only; see vision_ms and these patch counts)")


def resizes(loaded, method) -> bool:
    """True where downsample means a smaller input image (dynamic-resolution families)."""
    return getattr(method, "resizes_input", False) and getattr(loaded.family, "dynamic_resolution", False)


def run_resized(engine, loaded, prepared, method, max_new_tokens: int, repeats: int) -> dict:
    """Resize, re-process, run unpruned; the result is `method`'s, over the original grids."""
    from .engine import eos_ids  # the engine imports this module; its helper is needed only at run time

    targets = [resized_grid(img.grid, method.budget(img.count)) for img in prepared.layouts]
    px = loaded.family.token_pixels(loaded.model)
    images = [image if target == img.grid else image.resize((target[1] * px, target[0] * px), Image.BICUBIC)
              for image, img, target in zip(prepared.images, prepared.layouts, targets)]
    small = engine.prepare(loaded, images, prepared.prompt)
    over_budget(loaded, prepared, small, method)
    selections = [[coverage(img.grid, low.grid)] for img, low in zip(prepared.layouts, small.layouts)]
    warm_key = (loaded.model_id, small.prompt_len)
    if warm_key not in engine._warm:  # first input of this shape: one untimed prefill, as Engine.compare does
        greedy(loaded.model, loaded.family, small.inputs, 1, set())
        engine._warm.add(warm_key)
    runs, total = [], []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        runs.append(greedy(loaded.model, loaded.family, small.inputs, max_new_tokens, eos_ids(loaded)))
        total.append((time.perf_counter() - started) * 1e3)
    plan = CutPlan(selections=selections, order=torch.arange(small.prompt_len))  # only its length is read
    result = method_result(method, loaded, prepared, runs, plan, [0.0] * len(runs), total, engine.threads)
    kept = sum(low.count for low in small.layouts)
    result["tokens"]["per_cut"] = [{"layer": 0, "image_tokens": kept}]
    result.update({
        "vision": {"patches": patches(small), "patches_vanilla": patches(prepared), "note": TOWER_NOTE},
        "kv_lengths": runs[0].kv_lengths,
        "positions": f"the smaller image's own ({loaded.family.positions}): the processor built the prompt for it",
        "cut": "input: " + "; ".join(f"image {i} resized to {im.size[0]}x{im.size[1]} px, grid {low.grid[0]}x"
                                     f"{low.grid[1]} of {img.grid[0]}x{img.grid[1]}" for i, (im, low, img)
                                     in enumerate(zip(small.images, small.layouts, prepared.layouts))),
    })
    return result


def over_budget(loaded, prepared, small, method) -> None:
    """Refuse, in one line, where the processor enlarged the smaller image past the budget (its minimum
    resolution: e.g. Qwen3-VL's hub settings turn a 7x9 target into 8x10 = 80 tokens at keep 64)."""
    for i, (img, low) in enumerate(zip(prepared.layouts, small.layouts)):
        budget = method.budget(img.count)
        if low.count > budget:
            raise MethodError(f"downsample: {loaded.family.name}'s processor enlarges image {i} back to a "
                              f"{low.grid[0]}x{low.grid[1]} grid ({low.count} tokens, its minimum resolution), "
                              f"above the budget of {budget}; raise keep")


def coverage(grid: tuple[int, int], low: tuple[int, int]):
    """Each token of the smaller grid as the group of original cells it covers (a partition of the grid)."""
    if low[0] > grid[0] or low[1] > grid[1]:
        raise MethodError(f"downsample: the processor's minimum resolution gives a {low[0]}x{low[1]} grid, not "
                          f"smaller than the image's {grid[0]}x{grid[1]}; raise keep")
    return pooled(grid, low)


def patches(prepared) -> int:
    """Vision-tower patches of a prepared input (Qwen2-VL: t*h*w per image, before the 2x2 merge)."""
    return int(torch.as_tensor(prepared.inputs["image_grid_thw"]).prod(-1).sum())
