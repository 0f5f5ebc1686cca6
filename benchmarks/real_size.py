"""Real-size check of the newer families: real widths, a few decoder layers, random weights, a 1000 x 700 photo.

    python benchmarks/real_size.py [--families qwen2_5_vl,llava_onevision,qwen3_vl] [--lm-layers 4]
                                   [--vision-layers 4] [--keep 64] [--new-tokens 4] [--device cuda]

Each family is built from its hub checkpoint's widths (Qwen2.5-VL-3B, LLaVA-OneVision-0.5B, Qwen3-VL-2B: hidden
sizes, heads, MLP widths, patch / merge sizes, anyres pinpoints, DeepStack layer count) with `--lm-layers`
decoder layers and `--vision-layers` vision blocks (full attention / DeepStack indexes spread over them; Qwen3-VL
keeps at least its three DeepStack blocks), a
word-level tokenizer (so the vocabulary is tiny) and the hub processors' real image settings (min/max pixels,
pinpoints, anyres_max_9), saved to a folder and run through the CLI (`python -m explorer run ... --json`) with
every registered method, one child process per family. Prints per method: image tokens, kept tokens at the
last cut, prefill / decode time and the family's peak memory (CUDA max allocated, else the process's max RSS).
With `--per-method` each method is its own CLI run (model reloaded), and its row is written to stderr as JSON the
moment it ends, so a long run on a shared CPU leaves what it measured even if it is stopped.
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the repository's explorer package
from explorer.testing import CHAT, qwen_tokenizer, word_tokenizer  # noqa: E402
from explorer.settings import SETTINGS  # noqa: E402

FAMILIES = ("qwen2_5_vl", "llava_onevision", "qwen3_vl")
HUB = {"qwen2_5_vl": "Qwen/Qwen2.5-VL-3B-Instruct", "llava_onevision": "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
       "qwen3_vl": "Qwen/Qwen3-VL-2B-Instruct"}
PINPOINTS = [[384 * h, 384 * w] for h in range(1, 7) for w in range(1, 7)]  # the OneVision processor's default


def spread(n_real: list[int], depth_real: int, depth: int) -> list[int]:
    """Block indexes at the same relative depth in a `depth`-block tower (distinct, ascending; fewer when the
    tower has fewer blocks than indexes)."""
    out = sorted({min(depth - 1, round(i * depth / depth_real)) for i in n_real})
    return out if len(out) == len(n_real) else list(range(max(0, depth - len(n_real)), depth))


def text(vocab: int, layers: int, **widths) -> dict:
    return dict(vocab_size=vocab, num_hidden_layers=layers, max_position_embeddings=32768, bos_token_id=1,
                eos_token_id=2, pad_token_id=0, rms_norm_eps=1e-6, **widths)


def build(family: str, out: Path, lm_layers: int, vision_layers: int) -> Path:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if family in ("qwen2_5_vl", "qwen3_vl"):
        tok, ids = qwen_tokenizer()
        if family == "qwen2_5_vl":
            from transformers import Qwen2_5_VLConfig as Config, Qwen2_5_VLForConditionalGeneration as Model
            lm = text(len(tok), lm_layers, hidden_size=2048, intermediate_size=11008, num_attention_heads=16,
                      num_key_value_heads=2, rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24],
                                                              "rope_theta": 1000000.0})
            vision = dict(depth=vision_layers, hidden_size=1280, intermediate_size=3420, num_heads=16,
                          out_hidden_size=2048, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                          window_size=112, tokens_per_second=2,
                          fullatt_block_indexes=spread([7, 15, 23, 31], 32, vision_layers))
            patch, size = 14, {"shortest_edge": 3136, "longest_edge": 12845056}
            mean = std = None
        else:
            from transformers import Qwen3VLConfig as Config, Qwen3VLForConditionalGeneration as Model
            lm = text(len(tok), lm_layers, hidden_size=2048, intermediate_size=6144, num_attention_heads=16,
                      num_key_value_heads=8, head_dim=128,
                      rope_parameters={"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True,
                                       "rope_theta": 5000000.0})
            depth = max(vision_layers, 3)  # three DeepStack blocks, as the checkpoint
            vision = dict(depth=depth, hidden_size=1024, intermediate_size=4096, num_heads=16,
                          out_hidden_size=2048, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                          num_position_embeddings=2304, deepstack_visual_indexes=spread([5, 11, 17], 24, depth))
            patch, size = 16, {"shortest_edge": 65536, "longest_edge": 16777216}
            mean = std = [0.5, 0.5, 0.5]
        cfg = Config(text_config=dict(model_type=f"{family}_text", **lm), vision_config=vision, **ids)
        Model(cfg).eval().save_pretrained(out)
        extra = {"image_mean": mean, "image_std": std} if mean else {}
        Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2, size=size,
                                 **extra).save_pretrained(out)
        tok.save_pretrained(out)
    else:
        from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
        from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
            LlavaOnevisionImageProcessorPil)
        tok = word_tokenizer(["<image>", "<video>"])
        tok.chat_template = CHAT.replace("{{ IMG }}", "<image>")
        siglip = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                      num_hidden_layers=vision_layers, num_attention_heads=16, image_size=384, patch_size=14)
        lm = text(len(tok), lm_layers, hidden_size=896, intermediate_size=4864, num_attention_heads=14,
                  num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
        cfg = LlavaOnevisionConfig(vision_config=siglip, text_config=dict(model_type="qwen2", **lm),
                                   image_token_id=tok.convert_tokens_to_ids("<image>"),
                                   video_token_id=tok.convert_tokens_to_ids("<video>"), image_grid_pinpoints=PINPOINTS,
                                   vision_feature_layer=-1, vision_feature_select_strategy="full",
                                   vision_aspect_ratio="anyres_max_9")
        LlavaOnevisionForConditionalGeneration(cfg).eval().save_pretrained(out)
        LlavaOnevisionImageProcessorPil(size={"height": 384, "width": 384}, image_grid_pinpoints=PINPOINTS,
                                        image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(out)
        tok.save_pretrained(out)
        (out / "processor_config.json").write_text(json.dumps({
            "num_image_tokens": 729, "vision_feature_select_strategy": "full", "vision_aspect_ratio": "anyres_max_9",
            "image_token": "<image>", "video_token": "<video>", "processor_class": "LlavaOnevisionProcessor"}))
    gen = json.loads((out / "generation_config.json").read_text()) if (out / "generation_config.json").exists() else {}
    gen.update(eos_token_id=2, pad_token_id=0)
    (out / "generation_config.json").write_text(json.dumps(gen))
    return out


def child(args) -> None:
    """One family: build, run every method through the CLI, print one JSON line."""
    from PIL import Image

    from explorer.cli import main
    from explorer.methods import REGISTRY

    folder = build(args.family, Path(tempfile.mkdtemp()) / args.family, args.lm_layers, args.vision_layers)
    image = Path(tempfile.mkdtemp()) / "photo.jpg"
    Image.open(ROOT / "assets" / "examples" / "astronaut.jpg").convert("RGB").resize((1000, 700)).save(image)
    def cli(methods: list[str]) -> dict:
        buf, err = io.StringIO(), io.StringIO()
        with redirect_stdout(buf), redirect_stderr(err):
            code = main(["run", "--image", str(image), "--prompt", "what is in the image ?", "--methods",
                         ",".join(methods), "--keep", str(args.keep), "--max-new-tokens", str(args.new_tokens),
                         "--model", str(folder), "--json", *(["--threads", str(args.threads)] if args.threads else [])])
        refused = "error: no chosen method applies to this model. "
        if code == 2 and len(methods) == 1 and err.getvalue().startswith(refused):  # one not-applicable method
            reason = err.getvalue()[len(refused):].strip()
            return {"images": [], "results": [{"method": methods[0], "status": "not_applicable", "reason": reason}]}
        if code != 0:
            raise SystemExit(f"{args.family} {','.join(methods)}: the CLI exited with {code}: {err.getvalue()[-2000:]}")
        return json.loads(buf.getvalue())

    if args.per_method:  # one CLI run per method, each row logged as it ends (slow shared CPUs)
        out = {"images": [], "results": []}
        for name in REGISTRY:
            one = cli([name])
            out["images"] = one["images"] or out["images"]
            out["results"] += one["results"]
            for r in one["results"]:
                print(json.dumps({"family": args.family, "method": name, "status": r.get("status"),
                                  "reason": r.get("reason"), "tokens": r.get("tokens"), "timings": r.get("timings"),
                                  "images": one["images"]}), file=sys.stderr, flush=True)
        code = 0
    else:
        out, code = cli(list(REGISTRY)), 0
    peak = (torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({"family": args.family, "code": code, "peak_mb": round(peak), "images": out["images"],
                      "device": next((r.get("device") for r in out["results"] if r.get("device")), "?"),
                      "results": [{k: r.get(k) for k in ("method", "status", "reason", "tokens", "timings")}
                                  for r in out["results"]]}))


def report(runs: list[dict], args) -> str:
    lines = [f"Random weights, real widths, {args.lm_layers} decoder layers, {args.vision_layers} vision blocks, "
             f"1000x700 photo, keep {args.keep}, up to {args.new_tokens} new tokens.", "",
             "| family (widths of) | device | image tokens | peak MB | method | kept at last cut | prefill ms | "
             "decode ms/token |", "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        tokens = sum(i["tokens"] for i in run["images"])
        head = f"| {run['family']} ({HUB[run['family']]}) | {run['device']} | {tokens} | {run['peak_mb']} |"
        for r in run["results"]:
            if r["status"] != "ok":
                lines.append(f"{head} {r['method']} | not applicable | – | – |")
            else:
                t = r["timings"]
                lines.append(f"{head} {r['method']} | {r['tokens']['kept_at_layer']} | {t['prefill_ms']:.0f} | "
                             f"{t['decode_ms_per_token']:.1f} |")
            head = "| | | | |"
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--lm-layers", type=int, default=4)
    ap.add_argument("--vision-layers", type=int, default=4)
    ap.add_argument("--keep", type=int, default=SETTINGS.keep)
    ap.add_argument("--new-tokens", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--per-method", action="store_true", help="one CLI run per method, each logged to stderr as it "
                                                              "ends (the model is reloaded per method)")
    ap.add_argument("--family", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.family:
        return child(args)
    runs = []
    for family in args.families.split(","):
        cmd = [sys.executable, __file__, "--family", family, "--lm-layers", str(args.lm_layers), "--vision-layers",
               str(args.vision_layers), "--keep", str(args.keep), "--new-tokens", str(args.new_tokens),
               "--threads", str(args.threads), *(["--per-method"] if args.per_method else [])]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # the child's stderr goes straight through
        if proc.returncode:
            print(f"{family}: failed (exit {proc.returncode})", file=sys.stderr)
            continue
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(report(runs[-1:], args), file=sys.stderr, flush=True)  # each family's rows as soon as they exist
    print(report(runs, args))


if __name__ == "__main__":
    main()
