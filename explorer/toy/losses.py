"""The toy model's training objectives: the answer loss (with the ordinal box-coordinate target), the
last-layer attention loss and the rule that keeps attention losses out of layers a pruning method reads, the
hidden-state probes, and the coordinate rows' initialisation. Used by ``train``; no loop or data here."""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from .world import COLOURS, LETTERS, SHAPES


@torch.no_grad()
def init_coordinates(model, tok) -> None:
    """Unembedding rows of the box-coordinate tokens on a half circle: the row of value v is
    r·(cos(pi v) u + sin(pi v) w) + r/2·f(form), so the logit of v peaks where the hidden state's angle in
    the (u, w) plane is pi v. Reading a coordinate then needs one direction-valued feature instead of 101
    unrelated rows (a random init gives the ordinal target nothing to follow). Output layer only."""
    head = model.lm_head.weight                                                          # (V, D)
    value, form = coordinate_table(tok)
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(head.shape[1], 4, generator=g))             # (D, 4) orthonormal
    r = head.norm(dim=1).mean()
    for i in (form > 0).nonzero()[:, 0].tolist():
        angle = torch.pi * value[i]
        head[i] = r * (torch.cos(angle) * basis[:, 0] + torch.sin(angle) * basis[:, 1]
                       + 0.5 * basis[:, 1 + int(form[i])])


def coordinate_table(tok) -> torch.Tensor:
    """(V,) value of each box-coordinate token ("0.42" and "▁0.42" alike), NaN for every other token, and
    (V,) its form (0: not a coordinate, 1: "0.42", 2: "▁0.42"; x1 uses the first form, y1..y2 the second)."""
    vocab = tok.get_vocab()
    value, form = torch.full((len(tok),), float("nan")), torch.zeros(len(tok), dtype=torch.long)
    for piece, i in vocab.items():
        if re.fullmatch(r"▁?[01]\.\d\d", piece):
            value[i], form[i] = float(piece.lstrip("▁")), 2 if piece.startswith("▁") else 1
    return value, form


def answer_loss(logits, labels, coords=None, sigma: float = 0.02):
    """Next-token CE on answer tokens, averaged per sample then over the batch. logits (B, T, V).

    With coords = coordinate_table(...), a box coordinate's target is not one token but a Gaussian (std
    sigma) over the coordinate tokens of its form, peaked at the true value: 0.71 for 0.70 costs less than
    0.20, so the ordinal structure is learnable (greedy decoding still picks the true value's token). This is
    a loss on the output distribution only."""
    lg, y = logits[:, :-1], labels[:, 1:]
    ce = F.cross_entropy(lg.transpose(1, 2), y, ignore_index=-100, reduction="none")      # (B, T-1)
    if coords is not None:
        value, form = (t.to(lg.device) for t in coords)
        is_coord = (y >= 0) & (form[y.clamp(min=0)] > 0)                                   # (B, T-1)
        if is_coord.any():
            yc = y[is_coord]                                                                # (C,)
            same = form[None] == form[yc][:, None]                                          # (C, V)
            d = torch.nan_to_num(value[None] - value[yc][:, None], nan=9.0)
            target = torch.where(same, torch.exp(-0.5 * (d / sigma) ** 2), torch.zeros_like(d))
            target = target / target.sum(-1, keepdim=True)
            soft = -(target * F.log_softmax(lg[is_coord].float(), -1)).sum(-1)
            ce = ce.masked_scatter(is_coord, soft.to(ce.dtype))
    n = (y != -100).sum(1).clamp(min=1)
    return (ce.sum(1) / n).mean()


def check_supervision(attn_layer: int, weight: float, text_layers: int) -> None:
    """The honesty rule: attention may be supervised in the last decoder layer only (no method reads it)."""
    if weight > 0 and attn_layer != text_layers - 1:
        raise SystemExit(f"--attn-layer {attn_layer}: only the last decoder layer ({text_layers - 1}) may be "
                         "supervised; pruning methods read attention in layers 0..N-2")


def attention_loss(att, b, image_token_id, heads: tuple[int, ...] = (0,)):
    """-log(attention mass on the asked-about object's cells), per supervised head (0 by default; more heads
    widen what the last layer can carry from the object: 32 value dims per head), at every answer-predicting
    position.

    att: (B, H, T, T) eager attention probabilities of the last LM layer. Positions: from the last prompt
    token to the one before the eos prediction. Samples with no target (a "no" existence answer, count 0)
    are skipped.
    """
    losses = []
    for i, cells in enumerate(b["focus"]):
        if not cells.any():
            continue
        ids = b["input_ids"][i].to(att.device)
        img = ids == image_token_id                                                         # (T,)
        end = int(b["attention_mask"][i].sum()) - 2                                         # predicts eos
        rows = att[i, list(heads), b["answer_start"][i] - 1:max(end, int(b["answer_start"][i]))]  # (h, P, T)
        mass = rows[..., img][..., cells.to(att.device)].sum(-1)                            # (h, P)
        losses.append(-torch.log(mass + 1e-6).mean())
    return torch.stack(losses).mean() if losses else att.new_zeros(())


def question_probe_loss(probe: torch.nn.Linear, hidden, b, span: int, image_token_id: int):
    """CE of a linear probe that reads the last prompt token's hidden state (one early layer's output) and
    names each of the `span` prompt tokens before it (image tokens and padding ignored). It asks the model
    to carry the question to where the answer starts; it is a loss on hidden states, not on attention.

    hidden: (B, T, D). Returns a scalar.
    """
    rows = torch.arange(len(b["answer_start"]), device=hidden.device)
    last = (b["answer_start"] - 1).to(hidden.device)                                       # (B,)
    logits = probe(hidden[rows, last]).view(len(rows), span, -1)                           # (B, span, V)
    pos = last[:, None] - torch.arange(1, span + 1, device=hidden.device)[None]             # (B, span)
    ids = b["input_ids"].to(hidden.device)
    target = ids.gather(1, pos.clamp(min=0))
    target[(pos < 0) | (target == image_token_id)] = -100
    return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)


OBJECT_PROBE = (("box", 4), ("bag", len(COLOURS) * len(SHAPES)), ("letter", 1 + len(LETTERS)))


def object_probe_loss(probe: torch.nn.Linear, hidden, b, image_token_id: int):
    """A linear probe reads every object cell's hidden state (one decoder layer's output, image positions)
    and names that object's box, its image's bag of (colour, shape) pairs and its letter: smooth-L1 + BCE + CE.
    It keeps in the residual stream, where the last layer reads it, what the answers need and the middle
    layers would otherwise overwrite. A loss on hidden states, not on attention. hidden: (B, T, D)."""
    img = b["input_ids"].to(hidden.device) == image_token_id                               # (B, T)
    cells = hidden[img]                                                                     # (images*G, D)
    cells = cells * torch.rsqrt(cells.pow(2).mean(-1, keepdim=True) + 1e-6)                # RMS-normalised
    dense = {k: v.flatten(0, 1).to(hidden.device) if v.dim() > 2 else v.flatten().to(hidden.device)
             for k, v in b["dense"].items()}                                                # (images*G, ...)
    obj, is_shape, is_letter = dense["obj"] > 0, dense["count"] > 0, dense["letter"] > 0
    if not obj.any():
        return hidden.new_zeros(())
    out = dict(zip([n for n, _ in OBJECT_PROBE], probe(cells).split([w for _, w in OBJECT_PROBE], -1)))
    loss = 10 * F.smooth_l1_loss(out["box"][obj], dense["box"][obj], beta=0.05)
    if is_shape.any():
        loss = loss + F.binary_cross_entropy_with_logits(out["bag"][is_shape], dense["bag"][is_shape])
    if is_letter.any():
        loss = loss + F.cross_entropy(out["letter"][is_letter], dense["letter"][is_letter])
    return loss


def haystack_probe_loss(probe: torch.nn.Linear, resid, b):
    """A linear probe reads the last prompt token's residual after the last decoder layer's attention (what
    that layer's MLP reads) and names the anchor image's bag of (colour, shape) pairs (BCE) and the asked-for
    target pair (CE). The answer is then one AND of two linear features, which the MLP can compute; without it
    neither was readable there (bag bits 0.85 vs prior 0.82, target pair 0.7). A loss on the last layer's
    output only, the one layer no pruning method reads. resid: (B, T, D); samples without a target skipped."""
    rows = [i for i, t in enumerate(b["hay_target"]) if t >= 0]
    if not rows:
        return resid.new_zeros(())
    idx = torch.tensor(rows, device=resid.device)
    h = resid[idx, (b["answer_start"][rows] - 1).to(resid.device)]                       # (R, D)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
    bag_logits, pair_logits = probe(h).split(len(COLOURS) * len(SHAPES), -1)             # (R, 18) each
    bag = b["hay_bag"][rows].to(resid.device)
    target = b["hay_target"][rows].to(resid.device)
    return F.binary_cross_entropy_with_logits(bag_logits, bag) + F.cross_entropy(pair_logits, target)


BOX_READ_SPAN = 8   # positions from the last prompt token that predict "[", x1, ",", y1, ",", x2, ",", y2


def box_readout_loss(probe: torch.nn.Linear, resid, b):
    """A linear probe reads the residual after the last decoder layer's attention at the positions that write
    a grounding answer's box and names the box (smooth-L1, as the object probe). The box is held to 0.01 at the
    object's cells entering that layer (object probe Acc@0.5 0.93) but the answers miss by 0.03-0.04: what
    is lost is the last layer's transport, which this asks for. The last layer's output only.
    resid: (B, T, D); samples without a box (other tasks, blind) skipped."""
    rows = [i for i, ok in enumerate(b["box_valid"].tolist()) if ok]
    if not rows:
        return resid.new_zeros(())
    idx = torch.tensor(rows, device=resid.device)
    at = (b["answer_start"][rows] - 1).to(resid.device)[:, None] + torch.arange(BOX_READ_SPAN, device=resid.device)
    h = resid[idx[:, None], at]                                                          # (R, span, D)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
    box = b["answer_box"][rows].to(resid.device)[:, None].expand(-1, BOX_READ_SPAN, -1)  # (R, span, 4)
    return 10 * F.smooth_l1_loss(probe(h), box, beta=0.05)
