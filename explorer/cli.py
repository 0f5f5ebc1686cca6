"""`python -m explorer run ...`: every chosen method on the same input, as a table or one JSON object.

Bad input exits with code 2 and one line saying what is wrong; a model that cannot load exits with 3. A method
this model cannot run (e.g. a [CLS] method on Qwen2-VL) is reported as not applicable, with one sentence why,
and the others run: exit 0 when at least one method ran, 2 when none could.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .engine import Engine, InputError, Limits, open_image
from .limits import method_names, real, whole
from .methods import CONVENTIONS, RANKINGS, REGISTRY, MethodError, make
from .models import ModelLoadError

DEFAULT_METHODS = "vanilla,random,pooling,fastv,fastv_reverse,fastv_window,fastv_vis,alpha"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m explorer", description="Visual-token pruning, side by side.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run pruning methods on one input")
    run.add_argument("--image", action="append", required=True, help="image file (repeat for several)")
    run.add_argument("--prompt", required=True)
    run.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated; known: {','.join(REGISTRY)}")
    budget = run.add_mutually_exclusive_group()
    budget.add_argument("--keep", type=int, help="image tokens to keep per image (default 64)")
    budget.add_argument("--ratio", type=float, help="fraction of each image's tokens to keep")
    run.add_argument("--budget", choices=CONVENTIONS, default="paper",
                     help="budget convention: 'paper' = each method's budget as its authors' code sets it for the "
                          "setting --keep names (SparseVLM's per-layer lists, DART's pivots + 8-multiple, VisionZip's "
                          "[CLS]); 'final' = exactly --keep tokens after the last cut (default: paper)")
    run.add_argument("--ranking", choices=RANKINGS, default="authors",
                     help="images of several grids (LLaVA-NeXT): 'authors' = rank the image span as each method's "
                          "authors do (one ranking over base + high-res grids, or per tile with newlines kept for "
                          "FasterVLM); 'per_grid' = each grid on its own, budget split by size (default: authors)")
    run.add_argument("--layer", type=int, default=2, help="layer K where the cut happens (default 2)")
    run.add_argument("--alpha", type=float, default=0.5)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--model", default=None, help="hub id or local folder (default: the embedded model)")
    run.add_argument("--max-new-tokens", type=int, default=32)
    run.add_argument("--repeats", type=int, default=1, help="timed repeats per method (median reported)")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def methods_from(args, limits: Limits | None = None) -> list:
    """Distinct methods from --methods with the shared knobs, every value checked against `limits`."""
    limits = limits or Limits()
    names = method_names(args.methods.split(","), limits, REGISTRY)
    keep = args.keep if args.keep is not None or args.ratio is not None else 64
    seed = whole(args.seed, "--seed", 0, limits.max_seed)
    alpha = real(args.alpha, "--alpha", 0, 1)
    return [make(n, keep=keep, ratio=args.ratio, layer=args.layer, alpha=alpha, seed=seed, convention=args.budget,
                 ranking=args.ranking)
            for n in names]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        engine = Engine(threads=args.threads)
        methods = methods_from(args, engine.limits)
        engine.check_request(args.image, args.prompt, methods, args.max_new_tokens, args.repeats)
        images = [open_image(p, engine.limits, name=p) for p in args.image]
        out = engine.compare(images, args.prompt, methods, model_id=args.model, max_new_tokens=args.max_new_tokens,
                             repeats=args.repeats, names=args.image)
    except (InputError, MethodError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    if not any(r.get("status") == "ok" for r in out["results"]):
        print(f"error: no chosen method applies to this model. {out['results'][0]['reason']}", file=sys.stderr)
        return 2
    print(json.dumps(out) if args.json else table(out))
    return 0


def table(out: dict) -> str:
    """A readable table: one row per method."""
    head = f"{'method':<15}{'kept@K':>8}{'avg':>8}{'prefill ms':>12}{'decode ms/t':>13}{'score ms':>10}" \
           f"{'KV MB':>8}{'FLOPs %':>9}  answer"
    lines = [f"model: {out['model']}", f"images: " + ", ".join(
        f"{i['path']} {i['width']}x{i['height']} grid {i['grid'][0]}x{i['grid'][1]} ({i['tokens']} tokens)"
        for i in out["images"]), f"budget convention: {_conventions(out)}", *_rankings(out), head,
        "-" * len(head)]
    for r in out["results"]:
        if r.get("status") == "not_applicable":
            lines.append(f"{r['method']:<15}not applicable: {r['reason']}")
            continue
        t = r["timings"]
        lines.append(f"{r['method']:<15}{r['tokens']['kept_at_layer']:>8}{r['tokens']['layer_averaged']:>8.1f}"
                     f"{t['prefill_ms']:>12.1f}{t['decode_ms_per_token']:>13.2f}{t['scoring_ms']:>10.2f}"
                     f"{r['kv_cache_bytes'] / 2**20:>8.2f}{100 * r['flops']['ratio_to_vanilla']:>9.1f}  {r['answer']!r}")
    first = next((r for r in out["results"] if r.get("status") == "ok"), {})
    lines.append(f"device {first.get('device')} · {first.get('dtype')} · {first.get('attention')} · "
                 f"{first.get('threads')} threads · FLOPs: {first.get('flops', {}).get('formula', '')}")
    for r in out["results"]:  # downsample on Qwen2-VL: its saving includes the vision tower, outside the FLOPs
        if "vision" in r:
            v = r["vision"]
            lines.append(f"{r['method']}: vision tower {v['patches']} of {v['patches_vanilla']} patches; {v['note']}")
    return "\n".join(lines)


def _rankings(out: dict) -> list[str]:
    """One line per distinct LLaVA-NeXT ranking used (none for one-grid images)."""
    used = {}
    for r in out["results"]:
        if r.get("ranking"):
            used.setdefault(r["ranking"], []).append(r["method"])
    return [f"ranking ({', '.join(names)}): {text}" for text, names in used.items()]


def _conventions(out: dict) -> str:
    used = sorted({r.get("convention", "final") for r in out["results"]})
    return ", ".join(used) + ("" if used != ["paper"] else " (each method's budget as its authors' code sets it)")
