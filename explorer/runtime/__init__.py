"""Applies a method inside a stock transformers forward pass: probe, cut, decode, timing, FLOPs.

Index spaces (every index tensor says which one it lives in where it is born):
- *segment index*: a token's index within one grid (segment) of one image, 0..seg.count-1 (what a method's
  Selection.kept holds; LLaVA-NeXT images have a base and a high-res segment);
- *image index*: within one image's tokens, 0..img.count-1 = segment.offset + segment index (results' "kept");
- *sequence position*: in the prompt as the processor built it, 0..prompt_len-1 (image index + img.start);
  cut orders (`order`) list the sequence positions that survive, ascending;
- *row*: in the current, already-cut sequence a layer sees (row r holds sequence position order[r]);
- *vision row*: inside the vision tower's output, tiles x patches ([CLS] dropped; Family.vision_index maps
  segment indices to it, -1 for tokens without one such as NeXT's newlines);
- *view row*: a row of the SegmentView a method scores (a segment's current survivors; `view.index` holds their
  segment indices), and *unit row* when the views of one ranking unit are joined (spans.py); a merged group of
  a joint ranking may hold tokens of several segments, so the survivor bookkeeping (plan.Survivors) is in image
  index.

Modules: pruner.py (the runtime, `Pruner`: every method's cuts; a single cut at K is the one-stage case),
plan.py (stages, budgets, survivor bookkeeping, CutPlan), probes.py (the table of named probes methods ask for),
cut.py (applying a selection: rows, merged vectors, per-call tensors, KV-cache cut), vision_stage.py and
vision_merge.py (cuts before the projector / merges inside the vision tower), probe.py (attention rows without
eager attention), hooks.py (one run's hooks, with roles, removed in finally), shared.py (N methods sharing one
recorded prefill), decode.py (prefill + greedy loop, timing).
"""
