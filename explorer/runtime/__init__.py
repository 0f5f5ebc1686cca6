"""Applies a method inside a stock transformers forward pass: probe, cut, decode, timing, FLOPs.

Index spaces (every index tensor says which one it lives in where it is born):
- *segment index*: a token's index within one grid (segment) of one image, 0..seg.count-1 (what a method's
  Selection.kept holds; LLaVA-NeXT images have a base and a high-res segment);
- *image index*: within one image's tokens, 0..img.count-1 = segment.offset + segment index (results' "kept");
- *sequence position*: in the prompt as the processor built it, 0..prompt_len-1 (image index + img.start);
  cut orders (`order`) list the sequence positions that survive, ascending;
- *row*: in the current, already-cut sequence a layer sees (row r holds sequence position order[r]);
- *vision row*: inside the vision tower's output, tiles x patches ([CLS] dropped; Family.vision_index maps
  segment indices to it, -1 for tokens without one such as NeXT's newlines).

Modules: pruner.py (one cut at layer K), staged.py (several cuts, pre-LLM cuts, KV-cache cut), probe.py
(attention rows without eager attention), hooks.py (one run's hooks, with roles, removed in finally),
shared.py (N methods sharing one recorded prefill), decode.py (prefill + greedy loop, timing).
"""


def pruner_for(family, model, method, layouts, prompt_len, fixed=None):
    """The runtime that applies `method`: one cut at layer K (Pruner), or several cuts / pre-LLM cuts / a KV
    cache cut (StagedPruner) for methods that declare `runtime = "staged"`."""
    from .pruner import Pruner
    from .staged import StagedPruner

    runner = StagedPruner if method.runtime == "staged" else Pruner
    return runner(family, model, method, layouts, prompt_len, fixed=fixed)
