"""The downsample baseline on dynamic-resolution models (Qwen2-VL): send a smaller image, run the model unpruned.

Engine-level because it re-runs the processor: each image is resized so the processor's token grid is
`resized_grid(grid, keep)`, the model runs on that input as it stands, and the result is written over the
original image's grid (each new token a group of the original cells it covers) so panels compare like with
like. Costs are the small input's; the LM FLOPs ratio is against the original prompt, and the vision tower's
patch counts are reported beside it, because this is the one method whose saving includes the tower.
"""
from __future__ import annotations

import torch
from PIL import Image

from .methods import MethodError, make
from .methods.downsample import pooled, resized_grid
from .results import answer_boxes, flops_entry, image_entries

TOWER_NOTE = ("the image itself was made smaller, so the vision tower ran on fewer patches too: its cost falls "
              "with the LM's (the FLOPs above count the LM only; see vision_ms and these patch counts)")


def resizes(loaded, method) -> bool:
    """True where downsample means a smaller input image (dynamic-resolution families)."""
    return getattr(method, "resizes_input", False) and getattr(loaded.family, "dynamic_resolution", False)


def run_resized(engine, loaded, prepared, method, max_new_tokens: int, repeats: int) -> dict:
    targets = [resized_grid(img.grid, method.budget(img.count)) for img in prepared.layouts]
    px = loaded.family.token_pixels(loaded.model)
    images = [image if target == img.grid else image.resize((target[1] * px, target[0] * px), Image.BICUBIC)
              for image, img, target in zip(prepared.images, prepared.layouts, targets)]
    small = engine.prepare(loaded, images, prepared.prompt)
    selections = [[coverage(img.grid, low.grid)] for img, low in zip(prepared.layouts, small.layouts)]
    result = engine._run(loaded, small, make("vanilla"), max_new_tokens, repeats, None)
    kept = sum(low.count for low in small.layouts)
    config = loaded.family.lm_config(loaded.model)
    result.update({
        "method": method.name, "label": method.label, "config": method.config(),
        "images": image_entries(prepared.layouts, selections),
        "boxes": answer_boxes(result["answer"], loaded.family.box_format, prepared.layouts, prepared.sizes),
        "tokens": {"image_total": sum(img.count for img in prepared.layouts), "kept_at_layer": kept,
                   "layer_averaged": float(kept), "per_cut": [{"layer": 0, "image_tokens": kept}]},
        "flops": flops_entry(config, prepared.prompt_len, small.prompt_len, 0, True),
        "vision": {"patches": patches(small), "patches_vanilla": patches(prepared), "note": TOWER_NOTE},
        "positions": f"the smaller image's own ({loaded.family.positions}): the processor built the prompt for it",
        "cut": "input: " + "; ".join(f"image {i} resized to {im.size[0]}x{im.size[1]} px, grid {low.grid[0]}x"
                                     f"{low.grid[1]} of {img.grid[0]}x{img.grid[1]}" for i, (im, low, img)
                                     in enumerate(zip(small.images, small.layouts, prepared.layouts))),
    })
    return result


def coverage(grid: tuple[int, int], low: tuple[int, int]):
    """Each token of the smaller grid as the group of original cells it covers (a partition of the grid)."""
    if low[0] > grid[0] or low[1] > grid[1]:
        raise MethodError(f"downsample: the processor's minimum resolution gives a {low[0]}x{low[1]} grid, not "
                          f"smaller than the image's {grid[0]}x{grid[1]}; raise keep")
    return pooled(grid, low)


def patches(prepared) -> int:
    """Vision-tower patches of a prepared input (Qwen2-VL: t*h*w per image, before the 2x2 merge)."""
    return int(torch.as_tensor(prepared.inputs["image_grid_thw"]).prod(-1).sum())
