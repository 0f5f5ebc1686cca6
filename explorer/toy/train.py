"""Train the toy LLaVA: ``python -m explorer.toy.train --out assets/toy-llava``.

Stages (seeded; resumable from --ckpt; each step's data comes from its own seeded RNG):
  1. vision  CLIP tower + a linear head on dense per-patch targets (colour, shape, letter, same-shape count,
             bag of the image's objects, own box) at a 12 x 12 grid. No language.
  2. lm      projector's first layer initialised from the dense head, its second layer maps colour / shape
             features onto the question words' embeddings; the whole model learns the questions at a
             12 x 12 grid (curriculum from 2-object scenes to 5, haystacks after warm-up) while the dense
             per-patch loss stays on as an auxiliary loss for the vision tower (--joint 0: vision frozen).
  3. lm24    convert to 24 x 24 (patch 16 -> 8) and fine-tune briefly at the release grid.
Loss: next-token CE on the answer (averaged per sample; box coordinates get an ordinal target), + the dense
vision loss (--joint), + two linear probes on hidden states (the question at the last prompt token, the
object's box / bag / letter at its cells; no attention term), + attention
supervision (--attn-sup) in the LAST decoder layer only: head 0's attention from every position that predicts
an answer token is pushed onto the asked-about object's cells. Pruning methods read attention in layers
0 .. N-2 (the probe sits at K-1, K <= N-1), so no loss term touches attention a method can read; the rule
is enforced at start-up (``losses.check_supervision``) and by a test that reads the release's ``training.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time

import torch
from tqdm import tqdm

from .checkpoint import import_weights, save_state
from .data import blind_samples, qa_batch, release_positions, scene_batch, without_images
from .losses import (OBJECT_PROBE, answer_loss, attention_loss, check_supervision, coordinate_table,
                     init_coordinates, object_probe_loss, question_probe_loss, haystack_probe_loss,
                     box_readout_loss)
from .model import HEAD_DIM, dense_loss, make_config, to_grid
from .tokenizer import IMAGE_SIZE, PATCH, build_processor
from .world import COLOURS, SHAPES
from transformers import GenerationConfig, LlavaForConditionalGeneration

SINGLE = {"existence": 3, "colour": 2, "shape": 2, "count": 3, "grounding": 4, "letter": 3}


def build(processor, patch: int, text_layers: int = 8, init_std: float = 0.08) -> LlavaForConditionalGeneration:
    tok = processor.tokenizer
    cfg = make_config(len(tok), patch_size=patch, image_token_id=tok.convert_tokens_to_ids("<image>"),
                      bos=tok.bos_token_id, eos=tok.eos_token_id, pad=tok.pad_token_id, text_layers=text_layers,
                      init_std=init_std)
    model = LlavaForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id, do_sample=False, max_new_tokens=12)
    return model


def vision_features(model, pv):
    out = model.model.vision_tower(pv, output_hidden_states=True)
    return out.hidden_states[-1][:, 1:]                                                   # (B, G, Dv)


@torch.no_grad()
def init_projector(model, head: torch.nn.Linear, tok) -> None:
    """Projector layer 1 <- dense head (rows), layer 2 maps colour/shape units onto those words' embeddings."""
    proj = model.model.multi_modal_projector
    proj.linear_1.weight[:HEAD_DIM] = head.weight
    proj.linear_1.bias[:HEAD_DIM] = head.bias
    emb = model.model.language_model.embed_tokens.weight
    for i, c in enumerate(COLOURS):
        proj.linear_2.weight[:, 1 + i] = emb[tok.convert_tokens_to_ids("▁" + c)] * 0.5
    off = 1 + len(COLOURS)
    for i, s in enumerate(SHAPES):
        proj.linear_2.weight[:, off + 1 + i] = emb[tok.convert_tokens_to_ids("▁" + s)] * 0.5


def sample_tasks(rng, step, batch, haystack_share: float = 0.2, weights: dict | None = None):
    """Curriculum: objects 1 -> 5 over the first 600 steps; haystack batches (2-3 images) after 400, then
    2-5 images (mostly 3) from step 1200."""
    max_obj = min(5, 1 + step // 150)
    if step >= 400 and rng.random() < haystack_share:
        n = rng.choice((2, 2, 3, 3, 3, 4, 5)) if step >= 1200 else rng.choice((2, 3))
        return ["haystack"] * max(2, batch // n), max_obj, n
    names, w = zip(*(weights or SINGLE).items())
    return rng.choices(names, w, k=batch), max_obj, None


class StepBatches(torch.utils.data.Dataset):
    """Batch number `step` of a stage, drawn from its own RNG "{seed}-{stage}-{step}": worker processes,
    resumed runs and other devices all see the same data for the same step."""

    def __init__(self, stage: str, seed: int, batch: int, grid: int, dense: bool, processor, n_steps: int,
                 haystack_share: float = 0.2, weights: dict | None = None):
        self.weights = weights
        self.stage, self.seed, self.batch, self.grid, self.dense = stage, seed, batch, grid, dense
        self.processor, self.n_steps, self.haystack_share = processor, n_steps, haystack_share

    def __len__(self) -> int:
        return self.n_steps

    def __getitem__(self, step: int) -> dict:
        rng = random.Random(f"{self.seed}-{self.stage}-{step}")
        if self.stage == "vision":
            pv, tg = scene_batch(rng, self.batch, self.grid)
            return {"pixel_values": pv, "dense": tg}
        tasks, max_obj, n_img = sample_tasks(rng, step + (0 if self.stage == "lm" else 10_000), self.batch,
                                              self.haystack_share, self.weights)
        return qa_batch(rng, self.processor, tasks, self.grid, max_obj, n_img, dense=self.dense)


def batches(data: StepBatches, start: int, workers: int):
    """Steps start .. len-1 in order; with workers > 0, drawn ahead by that many processes (a GPU run is fed
    by CPU drawing, so this is what keeps it busy)."""
    if workers == 0:
        return (data[step] for step in range(start, len(data)))
    loader = torch.utils.data.DataLoader(data, batch_size=None, sampler=range(start, len(data)),
                                         num_workers=workers, prefetch_factor=4, persistent_workers=False)
    return iter(loader)


def release(model, processor, out: str, note: str = "", record: dict | None = None) -> None:
    """Save a stock LLaVA checkpoint (24 x 24 grid) + processor to out, and what trained it (training.json)."""
    rel = model if model.config.vision_config.patch_size == PATCH else to_grid(model, PATCH)
    rel.set_attn_implementation({"text_config": "sdpa"})
    rel.save_pretrained(out, safe_serialization=True)
    build_processor().save_pretrained(out)
    if record is not None:
        with open(os.path.join(out, "training.json"), "w") as f:
            json.dump({**record, "released_at": note.strip("()")}, f, indent=1)
    print(f"released to {out} {note}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="assets/toy-llava")
    ap.add_argument("--ckpt", default="checkpoints/toy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vision-steps", type=int, default=800)
    ap.add_argument("--lm-steps", type=int, default=2400)
    ap.add_argument("--lm24-steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--release-every", type=int, default=400, help="lm steps between releases")
    ap.add_argument("--joint", type=int, default=1, help="1: keep the dense vision loss during QA training")
    ap.add_argument("--joint-lr", type=float, default=0.5, help="vision lr / LM lr when --joint")
    ap.add_argument("--joint-weight", type=float, default=0.5)
    ap.add_argument("--text-layers", type=int, default=8, help="decoder layers of the language model")
    ap.add_argument("--init-std", type=float, default=0.08, help="initial weight std of the LM and projector")
    ap.add_argument("--attn-sup", type=float, default=0.5,
                    help="weight of the attention supervision (answer positions -> object cells, head 0 of "
                         "the last decoder layer); 0 disables")
    ap.add_argument("--attn-layer", type=int, default=-1, help="supervised layer; must be the last (-1)")
    ap.add_argument("--attn-heads", default="0", help="supervised heads of that layer, e.g. 0,1")
    ap.add_argument("--probe-layer", type=int, default=3,
                    help="decoder layer whose output at the last prompt token feeds the question probe (-1: off)")
    ap.add_argument("--probe-weight", type=float, default=0.5)
    ap.add_argument("--probe-span", type=int, default=12, help="prompt tokens the probe names")
    ap.add_argument("--box-sigma", type=float, default=0.02,
                    help="std of the Gaussian target over box-coordinate tokens (0: one-hot)")
    ap.add_argument("--object-probe-layer", type=int, default=-2,
                    help="decoder layer whose output at object cells feeds the box probe (-2: the one before "
                         "the last; None to disable: --object-probe-weight 0)")
    ap.add_argument("--object-probe-weight", type=float, default=0.5)
    ap.add_argument("--haystack-probe-weight", type=float, default=0.5,
                    help="weight of the haystack probe (last prompt token, after the last layer's attention: the "
                         "anchor image's bag and the target pair; see losses.haystack_probe_loss); 0 disables")
    ap.add_argument("--box-readout-weight", type=float, default=0.5,
                    help="weight of the box readout probe (grounding answer positions, after the last layer's "
                         "attention: the box; see losses.box_readout_loss); 0 disables")
    ap.add_argument("--coord-init", type=int, default=1,
                    help="1: box-coordinate unembedding rows on a half circle at the start of the lm stage")
    ap.add_argument("--haystack-share", type=float, default=0.35, help="share of lm steps that are haystacks")
    ap.add_argument("--task-weights", default="", help="single-image task mix, e.g. grounding=6,letter=4 "
                    f"(others keep their default weight; defaults {SINGLE})")
    ap.add_argument("--release-positions", type=int, default=1,
                    help="1: at the coarse grid, give image tokens the release grid's positions (release_positions)")
    ap.add_argument("--blind-share", type=float, default=0.0,
                    help="share of QA samples trained with image features zeroed (see blind_samples)")
    ap.add_argument("--attn-sup-from", type=int, default=0, help="first lm step with attention supervision")
    ap.add_argument("--init-from", default=None, help="fp16 weights from export_weights, used when --ckpt has "
                    "no state yet (continues at their stage and step, fresh optimiser)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0, help="processes drawing batches ahead (0: in-process)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    weights = {**SINGLE, **{k: float(v) for k, v in (kv.split("=") for kv in a.task_weights.split(",") if kv)}}
    if set(weights) != set(SINGLE):
        raise SystemExit(f"--task-weights: tasks are {', '.join(SINGLE)}")
    a.attn_layer = a.attn_layer % a.text_layers
    a.object_probe_layer = a.object_probe_layer % a.text_layers
    check_supervision(a.attn_layer, a.attn_sup, a.text_layers)
    a.attn_heads = [int(h) for h in a.attn_heads.split(",")]
    record = {"args": vars(a), "attention_supervision": {
        "layers": [a.attn_layer] if a.attn_sup > 0 else [], "heads": a.attn_heads, "weight": a.attn_sup,
        "from_lm_step": a.attn_sup_from, "text_layers": a.text_layers},
        "hidden_state_probe": None if a.probe_layer < 0 else {
            "layer_output": a.probe_layer, "position": "last prompt token", "predicts": f"the {a.probe_span} "
            "prompt tokens before it", "weight": a.probe_weight, "touches_attention": False},
        "object_probe": None if a.object_probe_weight <= 0 else {
            "layer_output": a.object_probe_layer, "position": "image cells of objects", "predicts": "the object's "
            "box, its image's bag of (colour, shape) pairs, its letter", "weight": a.object_probe_weight,
            "touches_attention": False},
        "haystack_probe": None if a.haystack_probe_weight <= 0 else {
            "layer": a.text_layers - 1, "position": "last prompt token, after the last layer's attention",
            "predicts": "the anchor image's bag of (colour, shape) pairs and the target pair",
            "weight": a.haystack_probe_weight, "touches_attention": "the last layer's output only"},
        "box_readout_probe": None if a.box_readout_weight <= 0 else {
            "layer": a.text_layers - 1, "position": "the positions writing a grounding answer's box, after the "
            "last layer's attention", "predicts": "the box", "weight": a.box_readout_weight,
            "touches_attention": "the last layer's output only"},
        "blind_samples": None if a.blind_share <= 0 else {
            "share": a.blind_share, "what": "image features zeroed after the projector, true answer as target; "
            "no attention or object-probe target for these samples"}}
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    os.makedirs(a.ckpt, exist_ok=True)
    path = os.path.join(a.ckpt, "state.pt")
    dev = torch.device(a.device)
    processor = build_processor()
    coords = coordinate_table(processor.tokenizer)
    model = build(processor, 2 * PATCH, a.text_layers, a.init_std)
    head = torch.nn.Linear(model.config.vision_config.hidden_size, HEAD_DIM)
    vocab = model.config.text_config.vocab_size
    probe = torch.nn.Linear(model.config.text_config.hidden_size, a.probe_span * vocab)
    object_probe = torch.nn.Linear(model.config.text_config.hidden_size,
                                   sum(w for _, w in OBJECT_PROBE))
    hay_probe = torch.nn.Linear(model.config.text_config.hidden_size, 2 * len(COLOURS) * len(SHAPES))
    box_probe = torch.nn.Linear(model.config.text_config.hidden_size, 4)
    probes = {"probe": probe, "object_probe": object_probe, "hay_probe": hay_probe, "box_probe": box_probe}
    st = {"stage": "vision", "step": 0}
    if os.path.exists(path) or a.init_from:
        st = torch.load(path, map_location="cpu", weights_only=False) if os.path.exists(path) \
            else import_weights(a.init_from)
        if st["patch"] != 2 * PATCH:
            model = to_grid(model, st["patch"])
        model.load_state_dict(st["model"])
        head.load_state_dict(st["head"])
        for name, module in probes.items():  # a probe the state lacks (or of another shape) starts fresh
            if name in st and st[name]["weight"].shape == module.weight.shape:
                module.load_state_dict(st[name])
        print(f"resumed {st['stage']} step {st['step']}", flush=True)
    for module in (model, head, *probes.values()):
        module.to(dev)
    stages = [("vision", a.vision_steps), ("lm", a.lm_steps), ("lm24", a.lm24_steps)]
    start = [s for s, _ in stages].index(st["stage"])
    for stage, n_steps in stages[start:]:
        step0 = st["step"] if stage == st["stage"] else 0
        if stage == "lm24" and model.config.vision_config.patch_size != PATCH:
            model = to_grid(model.cpu(), PATCH).to(dev)
        if stage == "vision":
            params = list(model.model.vision_tower.parameters()) + list(head.parameters())
            lr = a.lr * 2
        else:
            if stage == "lm" and step0 == 0:
                init_projector(model, head, processor.tokenizer)
                if a.coord_init:
                    init_coordinates(model, processor.tokenizer)
            lr = a.lr if stage == "lm" else a.lr * 0.3
            params = [p for n, p in model.named_parameters() if not n.startswith("model.vision_tower")]
            groups = [{"params": params, "base": lr}]
            if a.joint:  # keep training the vision tower on the dense targets as an auxiliary loss
                vis = list(model.model.vision_tower.parameters()) + list(head.parameters())
                groups.append({"params": vis, "base": lr * a.joint_lr})
                params = params + vis
            else:
                model.model.vision_tower.requires_grad_(False)
        if stage == "vision":
            groups = [{"params": params, "base": lr}]
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
        probe_opts = {name: torch.optim.AdamW(ps, lr=lr, weight_decay=0.01, betas=(0.9, 0.98)) for name, ps in (
            ("probe_opt", [*probe.parameters(), *object_probe.parameters()]),
            ("hay_opt", hay_probe.parameters()), ("box_opt", box_probe.parameters()))}
        cache = {}
        hook = model.model.vision_tower.register_forward_hook(
            lambda m, i, o: cache.__setitem__("h", o.hidden_states[-1][:, 1:]))
        if stage == st["stage"] and "opt" in st:
            opt.load_state_dict(st["opt"])
            for name, probe_opt in probe_opts.items():
                if name in st:
                    probe_opt.load_state_dict(st[name])
        grid = IMAGE_SIZE // model.config.vision_config.patch_size
        batch = a.batch if stage != "lm24" else max(4, a.batch // 4)
        last_save, stats = time.time(), {}
        bar = tqdm(range(step0, n_steps), desc=stage, initial=step0, total=n_steps, mininterval=30)
        dense = bool(a.joint or a.attn_sup > 0 or a.object_probe_weight > 0)
        data = StepBatches(stage, a.seed, batch, grid, dense, processor, n_steps, a.haystack_share, weights)
        for step, b in zip(bar, batches(data, step0, a.workers)):
            for g in opt.param_groups:
                g["lr"] = g["base"] * min(1.0, (step - step0 + 1) / 100) * (0.3 if step > 0.8 * n_steps else 1.0)
            if stage == "vision":
                logits = head(vision_features(model, b["pixel_values"].to(dev)))         # (B, G, HEAD_DIM)
                loss, accs = dense_loss(logits, {k: v.to(dev) for k, v in b["dense"].items()})
            else:
                tasks = b["tasks"]
                blind = blind_samples(step, len(tasks), a.blind_share)
                b, seen = without_images(b, blind)
                seen = seen.to(dev)
                zero = model.model.multi_modal_projector.register_forward_hook(
                    lambda m, i, o: o * seen.view(-1, 1, 1).to(o.dtype))
                sup = a.attn_sup > 0 and (stage != "lm" or step >= a.attn_sup_from)
                model.set_attn_implementation({"text_config": "eager" if sup else "sdpa"})
                positions = None
                if a.release_positions and grid != IMAGE_SIZE // PATCH:
                    positions = release_positions(b["input_ids"], model.config.image_token_id, grid,
                                                  IMAGE_SIZE // PATCH).to(dev)
                read_last = a.haystack_probe_weight > 0 or a.box_readout_weight > 0
                if read_last:
                    last_norm = model.model.language_model.layers[-1].post_attention_layernorm
                    cache_pre = last_norm.register_forward_pre_hook(lambda m, x: cache.__setitem__("post_att", x[0]))
                try:
                    out = model(input_ids=b["input_ids"].to(dev), attention_mask=b["attention_mask"].to(dev),
                                pixel_values=b["pixel_values"].to(dev), output_attentions=sup, position_ids=positions,
                                output_hidden_states=a.probe_layer >= 0 or a.object_probe_weight > 0)
                finally:
                    zero.remove()
                    if read_last:
                        cache_pre.remove()
                loss = answer_loss(out.logits, b["labels"].to(dev), coords if a.box_sigma > 0 else None,
                                   a.box_sigma)
                if a.probe_layer >= 0:
                    pl = question_probe_loss(probe, out.hidden_states[a.probe_layer + 1], b, a.probe_span,
                                             model.config.image_token_id)
                    loss = loss + a.probe_weight * pl
                if a.object_probe_weight > 0:
                    bl = object_probe_loss(object_probe, out.hidden_states[a.object_probe_layer + 1], b,
                                        model.config.image_token_id)
                    loss = loss + a.object_probe_weight * bl
                post_att = cache.pop("post_att", None)
                if a.haystack_probe_weight > 0:
                    hl = haystack_probe_loss(hay_probe, post_att, b)
                    loss = loss + a.haystack_probe_weight * hl
                if a.box_readout_weight > 0:
                    rl = box_readout_loss(box_probe, post_att, b)
                    loss = loss + a.box_readout_weight * rl
                if sup:
                    att_loss = attention_loss(out.attentions[a.attn_layer], b, model.config.image_token_id,
                                              tuple(a.attn_heads))
                    loss = loss + a.attn_sup * att_loss
                if a.joint:
                    dl, daccs = dense_loss(head(cache.pop("h")), {k: v.to(dev) for k, v in b["dense"].items()})
                    loss = loss + a.joint_weight * dl
                # the token that decides: the answer word, or x1 for a box ("[" is free)
                idx = (b["answer_start"] - 1 + torch.tensor([t == "grounding" for t in tasks])).to(dev)
                pred = out.logits[torch.arange(len(tasks), device=dev), idx].argmax(-1)
                gold = b["input_ids"].to(dev)[torch.arange(len(tasks), device=dev), idx + 1]
                accs = {}
                for t, ok, is_blind in zip(tasks, (pred == gold).tolist(), blind.tolist()):
                    accs.setdefault("blind" if is_blind else t, []).append(ok)
                accs = {t: sum(v) / len(v) for t, v in accs.items()}
                box_rows = [i for i, t in enumerate(tasks) if t == "grounding" and not blind[i]]
                if box_rows:  # mean |error| of x1 and y1 in coordinate units (chance ≈ 0.3)
                    rows, value = torch.tensor(box_rows, device=dev), coords[0].to(dev)
                    for name, offset in (("x1_err", 0), ("y1_err", 2)):   # logits at answer_start + offset
                        at = b["answer_start"].to(dev)[rows] + offset
                        guess, true = out.logits[rows, at].argmax(-1), b["input_ids"].to(dev)[rows, at + 1]
                        accs[name] = torch.nan_to_num((value[guess] - value[true]).abs(), nan=1.0).mean().item()
                if sup:
                    accs["att"] = att_loss.item()
                if a.probe_layer >= 0:
                    accs["probe"] = pl.item()
                if a.object_probe_weight > 0:
                    accs["object_probe"] = bl.item()
                if a.haystack_probe_weight > 0 and "haystack" in tasks:
                    accs["hay_probe"] = hl.item()
                if a.box_readout_weight > 0 and "grounding" in tasks:
                    accs["box_read"] = rl.item()
                if a.joint:
                    accs.update({"v_" + k: v for k, v in daccs.items() if k in ("letter", "count", "bag", "box_l1")})
            opt.zero_grad(set_to_none=True)
            for probe_opt in probe_opts.values():
                probe_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            for probe_opt in probe_opts.values():
                probe_opt.step()
            for k, v in {"loss": loss.item(), **accs}.items():
                stats[k] = 0.98 * stats.get(k, v) + 0.02 * v
            if step % 50 == 0:
                print(f"{stage} {step} " + " ".join(f"{k}={v:.3f}" for k, v in stats.items()), flush=True)
            done = step + 1 == n_steps
            if done or time.time() - last_save > 300:
                save_state(path, stage=stage, step=step + 1, patch=model.config.vision_config.patch_size,
                           model=model.state_dict(), head=head.state_dict(), opt=opt.state_dict(),
                           **{k: v.state_dict() for k, v in (probes | probe_opts).items()})
                last_save = time.time()
            if stage != "vision" and ((step + 1) % a.release_every == 0 or done):
                release(model.cpu(), processor, a.out, f"({stage} step {step + 1})", record)
                model.to(dev)
        hook.remove()
        st = {"stage": stage, "step": n_steps}
    print("done", flush=True)


if __name__ == "__main__":
    main()
