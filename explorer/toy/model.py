"""Toy LLaVA: config, dense per-patch targets for vision pre-training, and the 12x12 -> 24x24 conversion.

The released model is a stock ``LlavaForConditionalGeneration`` (CLIP vision tower + Llama LM + 2-layer
projector). Training runs the same architecture with 16-pixel patches (a 12 x 12 grid on 192-pixel
images, ~4.7x cheaper per sample); ``to_grid`` converts it to 8-pixel patches (24 x 24 = 576 tokens, like
LLaVA-1.5) by average-pooling the patch kernel 2 x 2 (scaled x4) and interpolating position embeddings.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from .tokenizer import IMAGE_SIZE, PATCH
from .world import COLOURS, LETTERS, SHAPES

# Dense per-patch heads: (name, width). Classes: colour 0 = none; shape 0 = none, 4 = letter;
# letter 0 = none; count = number of same-shape objects in the image (0 = not a shape);
# bag = which of the 18 (colour, shape) pairs the image holds (object patches only); box = own box.
HEADS = (("colour", 1 + len(COLOURS)), ("shape", 2 + len(SHAPES)), ("letter", 1 + len(LETTERS)),
         ("count", 6), ("bag", len(COLOURS) * len(SHAPES)), ("box", 4))
HEAD_DIM = sum(w for _, w in HEADS)


def make_config(vocab_size: int, patch_size: int = PATCH, image_token_id: int = 4, bos: int = 1, eos: int = 2,
                pad: int = 0, vision_dim: int = 128, text_dim: int = 128, text_layers: int = 4,
                init_std: float = 0.02) -> LlavaConfig:
    """init_std: std of the LM's (and projector's) initial weights; 0.02 is tuned for wide models, at width
    128 a product of three such matrices (value, output, unembedding) starts ~60x too small and training sits
    on a long plateau, so the toy run uses ~1/sqrt(width)."""
    vision = CLIPVisionConfig(hidden_size=vision_dim, intermediate_size=4 * vision_dim, num_hidden_layers=4,
                              num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=patch_size,
                              projection_dim=vision_dim)
    text = LlamaConfig(vocab_size=vocab_size, hidden_size=text_dim, intermediate_size=int(2.75 * text_dim),
                       num_hidden_layers=text_layers, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=4096, rope_theta=10000.0, bos_token_id=bos, eos_token_id=eos,
                       pad_token_id=pad, tie_word_embeddings=False, rms_norm_eps=1e-5, initializer_range=init_std)
    grid = IMAGE_SIZE // patch_size
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                      projector_hidden_act="gelu", vision_feature_select_strategy="default",
                      vision_feature_layer=-1, image_seq_length=grid * grid, tie_word_embeddings=False)
    return cfg


def dense_targets(objs: list[dict], mask: np.ndarray, grid: int) -> dict[str, np.ndarray]:
    """Per-patch targets for one scene on a grid x grid token grid.

    mask: (S, S) uint8, 1 + object index per pixel. Returns arrays of shape (grid*grid,) (classes) and
    bag (grid*grid, 18), box (grid*grid, 4), obj (grid*grid,) = 1 + object index or 0.
    """
    S = mask.shape[0]
    edges = np.linspace(0, S, grid + 1).round().astype(int)
    n = len(objs)
    # cover[k, i, j] = fraction of cell (i, j) covered by object k
    onehot = (mask[None] == np.arange(1, n + 1)[:, None, None]).astype(np.float32)     # (n, S, S)
    cover = np.add.reduceat(np.add.reduceat(onehot, edges[:-1], axis=1), edges[:-1], axis=2)
    area = np.diff(edges)[:, None] * np.diff(edges)[None, :]
    cover = cover / area                                                                 # (n, grid, grid)
    shapes = [(o["colour"], o["shape"]) for o in objs if o["kind"] == "shape"]
    bag = np.zeros(len(COLOURS) * len(SHAPES), np.float32)
    for c, s in shapes:
        bag[COLOURS.index(c) * len(SHAPES) + SHAPES.index(s)] = 1
    G = grid * grid
    t = {"colour": np.zeros(G, np.int64), "shape": np.zeros(G, np.int64), "letter": np.zeros(G, np.int64),
         "count": np.zeros(G, np.int64), "bag": np.zeros((G, bag.size), np.float32),
         "box": np.zeros((G, 4), np.float32), "obj": np.zeros(G, np.int64)}
    if n == 0:
        return t
    best = cover.reshape(n, G).argmax(0)
    frac = cover.reshape(n, G).max(0)
    for g in np.nonzero(frac >= 0.2)[0]:
        o = objs[best[g]]
        t["obj"][g] = best[g] + 1
        t["box"][g] = o["box"]
        if o["kind"] == "letter":
            t["shape"][g] = 1 + len(SHAPES)
            t["letter"][g] = 1 + LETTERS.index(o["letter"])
        else:
            t["colour"][g] = 1 + COLOURS.index(o["colour"])
            t["shape"][g] = 1 + SHAPES.index(o["shape"])
            t["count"][g] = sum(1 for p in shapes if p[1] == o["shape"])
            t["bag"][g] = bag
    # Small objects that cover no cell to 20 %: label the cell holding their centre.
    for k, o in enumerate(objs):
        if not (t["obj"] == k + 1).any():
            x1, y1, x2, y2 = o["box"]
            i = min(grid - 1, int((y1 + y2) / 2 * grid))
            j = min(grid - 1, int((x1 + x2) / 2 * grid))
            g = i * grid + j
            if t["obj"][g] == 0:
                t["obj"][g] = k + 1
                t["box"][g] = o["box"]
                if o["kind"] == "letter":
                    t["shape"][g], t["letter"][g] = 1 + len(SHAPES), 1 + LETTERS.index(o["letter"])
                else:
                    t["colour"][g] = 1 + COLOURS.index(o["colour"])
                    t["shape"][g] = 1 + SHAPES.index(o["shape"])
                    t["count"][g] = sum(1 for p in shapes if p[1] == o["shape"])
                    t["bag"][g] = bag
    return t


def dense_loss(logits: torch.Tensor, tgt: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """logits: (B, G, HEAD_DIM); targets as from dense_targets, stacked (B, G, ...)."""
    parts = dict(zip([h for h, _ in HEADS], logits.split([w for _, w in HEADS], dim=-1)))
    obj = tgt["obj"] > 0                                                                 # (B, G)
    shape_obj = tgt["count"] > 0
    losses, accs = {}, {}
    for name in ("colour", "shape", "letter", "count"):
        lg, y = parts[name].flatten(0, 1), tgt[name].flatten()
        w = torch.ones_like(y, dtype=lg.dtype)
        if name in ("letter", "count"):
            w = obj.flatten().to(lg.dtype) + 0.05
        losses[name] = (F.cross_entropy(lg, y, reduction="none") * w).sum() / w.sum()
        sel = obj.flatten()
        accs[name] = (lg.argmax(-1)[sel] == y[sel]).float().mean().item() if sel.any() else 0.0
    if shape_obj.any():
        losses["bag"] = F.binary_cross_entropy_with_logits(parts["bag"][shape_obj], tgt["bag"][shape_obj])
        accs["bag"] = ((parts["bag"][shape_obj] > 0) == (tgt["bag"][shape_obj] > 0.5)).all(-1).float().mean().item()
    if obj.any():
        losses["box"] = 10 * F.smooth_l1_loss(parts["box"][obj], tgt["box"][obj], beta=0.05)
        accs["box_l1"] = (parts["box"][obj] - tgt["box"][obj]).abs().mean().item()
    return sum(losses.values()), accs


@torch.no_grad()
def to_grid(model: LlavaForConditionalGeneration, patch_size: int) -> LlavaForConditionalGeneration:
    """Copy of model with a different patch size (e.g. 16 -> 8: 12x12 -> 24x24 grid)."""
    cfg = model.config.to_dict()
    new_cfg = LlavaConfig.from_dict(cfg)
    new_cfg.vision_config.patch_size = patch_size
    grid = IMAGE_SIZE // patch_size
    new_cfg.image_seq_length = grid * grid
    new = LlavaForConditionalGeneration(new_cfg)
    sd = model.state_dict()
    vt = model.model.vision_tower
    emb = getattr(vt, "vision_model", vt).embeddings
    old_p = emb.patch_embedding.weight.shape[-1]
    w = emb.patch_embedding.weight                                                       # (D, 3, p, p)
    if patch_size != old_p:
        w = F.interpolate(w, size=(patch_size, patch_size), mode="area") * (old_p / patch_size) ** 2
    pos = emb.position_embedding.weight                                                  # (1 + g*g, D)
    old_g = int(round((pos.shape[0] - 1) ** 0.5))
    grid_pos = pos[1:].reshape(1, old_g, old_g, -1).permute(0, 3, 1, 2)                  # (1, D, g, g)
    grid_pos = F.interpolate(grid_pos, size=(grid, grid), mode="bicubic", align_corners=False)
    new_pos = torch.cat([pos[:1], grid_pos.permute(0, 2, 3, 1).reshape(grid * grid, -1)], 0)
    for k in list(sd):
        if k.endswith("embeddings.patch_embedding.weight"):
            sd[k] = w
        elif k.endswith("embeddings.position_embedding.weight"):
            sd[k] = new_pos
        elif k.endswith("embeddings.position_ids"):
            sd.pop(k)
    missing, unexpected = new.load_state_dict(sd, strict=False)
    assert not unexpected and all("position_ids" in m for m in missing), (missing, unexpected)
    new.generation_config = model.generation_config
    return new
