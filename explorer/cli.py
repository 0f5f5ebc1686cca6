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
from .methods import MethodError
from .models import ModelLoadError
from .settings import OneLineParser, add_arguments, add_budget, build_methods, settings_from

RUN_ARGUMENTS = ("methods", "budget", "ranking", "layer", "alpha", "seed", "model", "max_new_tokens", "repeats",
                 "threads", "device")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m explorer", description="Visual-token pruning, side by side.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = sub.add_parser("run", help="run pruning methods on one input")
    run.add_argument("--image", action="append", required=True, help="image file (repeat for several)")
    run.add_argument("--prompt", required=True)
    add_budget(run)
    add_arguments(run, RUN_ARGUMENTS, methods="cli")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--solo", action="store_true",
                     help="time each method alone: separate full runs (Table 5 style) instead of sharing the vision "
                          "tower and the decoder layers below each cut (results are the same)")
    return parser


def methods_from(args, limits: Limits | None = None) -> list:
    """Distinct methods from --methods with the shared settings, every value checked against `limits`."""
    return build_methods(args.methods.split(","), settings_from(args, limits=limits), limits=limits)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        limits = Limits.from_env()
        settings = settings_from(args, limits=limits)
        methods = build_methods(args.methods.split(","), settings, limits=limits)
        engine = Engine(device=settings.device, threads=settings.threads, limits=limits, solo=args.solo)
        engine.check_request(args.image, args.prompt, methods, settings.max_new_tokens, settings.repeats)
        images = [open_image(p, engine.limits, name=p) for p in args.image]
        out = engine.compare(images, args.prompt, methods, model_id=args.model, max_new_tokens=settings.max_new_tokens,
                             repeats=settings.repeats, names=args.image)
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


def _timing(out: dict) -> str:
    """How the times were measured: every method alone, or sharing the unpruned prefill (see runtime/shared.py)."""
    kinds = sorted({r["timings"].get("timing", "solo") for r in out["results"] if r.get("status") == "ok"})
    if kinds == ["solo"]:
        return "timing: each method run alone"
    return ("timing: shared prefix (vision tower and layers below each cut measured once and attributed; own "
            "layers and decode steps measured alone; --solo for separate runs)")


def table(out: dict) -> str:
    """A readable table: one row per method."""
    head = f"{'method':<15}{'kept@K':>8}{'avg':>8}{'prefill ms':>12}{'decode ms/t':>13}{'score ms':>10}" \
           f"{'KV MB':>8}{'FLOPs %':>9}  answer"
    lines = [f"model: {out['model']}", f"images: " + ", ".join(
        f"{i['path']} {i['width']}x{i['height']} grid {i['grid'][0]}x{i['grid'][1]} ({i['tokens']} tokens)"
        for i in out["images"]), f"budget convention: {_conventions(out)}", *_rankings(out), _timing(out), head,
        "-" * len(head)]
    for r in out["results"]:
        if r.get("status") == "not_applicable":
            lines.append(f"{r['method']:<15}not applicable: {r['reason']}")
            continue
        t = r["timings"]
        lines.append(f"{r['method']:<15}{r['tokens']['kept_at_layer']:>8}{r['tokens']['layer_averaged']:>8.1f}"
                     f"{t['prefill_ms']:>12.1f}{t['decode_ms_per_token']:>13.2f}{t['scoring_ms']:>10.2f}"
                     f"{r['kv_cache_bytes'] / 2**20:>8.2f}{100 * r['flops']['ratio_to_vanilla']:>9.1f}"
                     f"  {r['answer']!r}")
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
