"""Words on the page: the intro, the legend and one paragraph per method (what it scores, where it cuts,
what the paper found). Methods the engine registers later without a paragraph here show their label."""


INTRO = """# Token Pruning Explorer
Vision-language models turn an image into hundreds of tokens; pruning methods drop most of them to save
compute. Pick an image and a question, choose methods and a budget, and compare **which tokens each method
keeps**, what the model answers, and what it costs. Based on *Token Pruning in Multimodal LLMs: Are We Solving
the Right Problem?*

The default model is the small embedded **toy LLaVA**, trained only on the "shapes world" (coloured circles,
squares, triangles, capital letters): ask it the toy examples' questions (*Is there a red circle?*, *What colour
is the triangle?*, *How many squares are there?*, *Where is the purple circle?*, *What letter is in the image?*).
On photos its answers mean nothing, but which tokens each method keeps is still worth seeing; load a real model
(e.g. `llava-hf/llava-1.5-7b-hf` on a GPU host) for real answers."""

LEGEND = """**Legend.** Each panel shows the image with the model's token grid: **clear cells with a yellow
outline are kept**, dimmed cells are pruned, coloured patches are tokens merged into one group. The thin
strip at the right of each image counts kept tokens per grid row (the grey line: an even spread), the paper's
Figure 2 on this one image. *Heat map*
colours every cell by the method's score (red high, blue low). Boxes: **green = your reference**,
**red = the model's answer**, with IoU. The timing line: tokens kept, prefill and per-token decode time,
the method's own scoring overhead, prefill FLOPs as % of vanilla, tokens per layer averaged over all layers.
On a shared CPU compare ratios, not absolute times; a result served from the cache says so."""

METHODS = {
    "vanilla": "Keeps every token: the reference answer and cost every other panel is measured against.",
    "random": "Keeps a seeded uniform sample at layer K. The paper's surprise: random is a strong baseline, "
              "often matching attention-based methods, because it spreads kept tokens over the whole image.",
    "pooling": "Cuts the grid into a×a windows at layer K and keeps, per window, the token with the largest L1 "
               "norm (Algorithm 4). Spatially even by construction, and like random it beats many clever scores.",
    "avgpool": "True average pooling over a×a windows: each kept token is the mean of its window (drawn as "
               "merged groups). A variant of pooling that merges instead of picking.",
    "fastv": "FastV (Algorithm 1): the last text token's attention at layer K−1, heads averaged; keeps the "
             "top-k from layer K on. The paper shows its scores pile up at the bottom of the image (position "
             "bias from RoPE distance), not on what the question asks about.",
    "fastv_reverse": "Reverse FastV (Algorithm 2): keeps the k *least* attended tokens. That it often does about "
                     "as well as FastV is the paper's evidence that attention scores are a weak importance signal.",
    "fastv_window": "Window FastV (Algorithm 3): FastV's scores, but an even quota per spatial window, so kept "
                    "tokens spread over the grid. Spreading alone removes much of FastV's position bias.",
    "fastv_vis": "FastV with the last *visual* token as the query: no language guidance at all. It tests whether "
                 "the question actually steers selection (the paper finds it matters little on single images).",
    "alpha": "Eq. 6: α·importance (FastV attention) + (1−α)·uniqueness (1 − cosine to the last token), both "
             "min-max normalised. α=1 is FastV; lower α favours tokens unlike the rest, which helps grounding. "
             "Move the α slider: the kept set updates at once from the scores already computed.",
    "sparsevlm": "SparseVLM: text tokens relevant to the image rate the image tokens; progressive cuts at layers "
                 "2/6/15, recycling part of the dropped tokens by merging them into groups. Under the *paper* "
                 "budget a setting such as 64 follows the authors' per-layer lists (82 → 32 → 18 tokens on 576); "
                 "under *final* the last cut ends at the budget. Tokens after each cut and the layer-averaged count "
                 "are shown.",
    "mustdrop": "MustDrop, three stages: inside the vision tower (after CLIP layer 1) 3×3 windows of near-identical "
                "patches merge into one token, and the [CLS]-attended top 8 % become a protected key set; in the "
                "LLM, tokens with both low global and low individual text attention are dropped at layers "
                "2/6/10/14; after prefill the KV cache is cut to the final survivors (`kv_layers`).",
    "fastervlm": "FasterVLM: [CLS] attention at the penultimate vision layer picks tokens before the LLM sees them "
                 "(positions renumbered).",
    "dart": "DART: pivots are tokens with the largest key norm; keeps the tokens least similar to the pivots "
            "(duplication-aware, no attention weights needed).",
    "divprune": "DivPrune: greedy max–min diversity on cosine distance after the projector.",
    "visionzip": "VisionZip: dominant tokens by [CLS] attention plus contextual tokens merged by key similarity.",
}

FIRST_LOOK = ("Pick an example below for a note on what to look for, or compare FastV with Window FastV "
              "on your own image: where do the kept (clear) cells sit?")

LOOK_FOR = """**What to look for.** *Position bias:* FastV's kept cells crowd the bottom rows whatever the question.
*Spread:* Window FastV, pooling and random cover the whole image. *Grounding collapse:* at high pruning
(e.g. 16 tokens) boxes drift from the reference even when yes/no answers survive. *FLOPs lie:* in the bar chart,
a 25 % FLOPs method is rarely 4× faster."""


def _knobs(cls) -> str:
    """The method's own knobs and defaults (beyond budget and K), for the 'Method knobs' box."""
    own = [f"`{f.name}`={f.default!r}" for f in cls.knobs()
           if f.name not in ("keep", "ratio", "layer", "convention")
           and not (f.name == "ranking" and cls.span == "grids")]  # per grid either way
    where = getattr(cls, "where", "")
    return (f" *Cuts:* {where}." if where else "") + (f" *Knobs:* {', '.join(own)}." if own else "")


def method_help(registry) -> str:
    """Markdown with one paragraph per registered method, with its knobs and its "as the authors / here" note."""
    return "\n\n".join(f"**{cls.label}** (`{name}`). {METHODS.get(name, '')}{_knobs(cls)}".strip()
                       + (f"  \n{cls.note}" if getattr(cls, "note", "") else "")
                       for name, cls in registry.items())
