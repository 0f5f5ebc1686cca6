"""What a comparison costs: N methods on one input against one vanilla run (issue 10's benchmark).

    PYTHONPATH=. python benchmarks/compare_cost.py [--threads 2 --new-tokens 16 --rounds 3 --models toy,llava576]

For each model (the embedded toy LLaVA, and a random-weight LLaVA-1.5-shaped model with 576 image tokens):
one image, `--new-tokens` new tokens; the wall time of the whole compare for the 8 paper methods and for every
registered method, divided by one vanilla run's (the fastest of `--rounds`, measured in one process,
interleaved, so contention from other jobs hits every number alike), as wall time and as this process's CPU time
(which a CPU shared with other jobs disturbs far less); each method's reported prefill and decode in the shared
compare next to a solo run's (`Engine.compare(..., solo=True)`; fastest of the rounds), and peak memory.
Prints numbers; not a test.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
from engine_latency import build  # noqa: E402

from explorer.engine import EMBEDDED_MODEL, Engine  # noqa: E402
from explorer.methods import REGISTRY, make  # noqa: E402

PAPER = ["vanilla", "random", "pooling", "fastv", "fastv_reverse", "fastv_window", "sparsevlm", "alpha"]
PROMPT = "what is the colour of the shape ?"
ADDED_LATER = {"cdpruner", "vispruner", "downsample"}  # registered after issue 10 set its "all 15" target


def image_for(model: str):
    from PIL import Image
    if model == "toy":
        return Image.open(ROOT / "assets" / "examples" / "toy_colour_5.png").convert("RGB")
    return Image.new("RGB", (448, 336), (200, 180, 160))


def timed(engine, image, methods, model_id, new_tokens, solo=False) -> tuple[tuple[float, float], dict]:
    """((wall ms, CPU ms), result) of one compare."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = engine.compare([image], PROMPT, methods, model_id=model_id, max_new_tokens=new_tokens, solo=solo)
    return ((time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3), out


def fastest(results: list[dict], method: str, key: str) -> float:
    """The smallest `timings[key]` of `method` over several compares."""
    return min(r["timings"][key] for out in results for r in out["results"] if r["method"] == method)


def peak_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(engine, model: str, model_id: str, keep: int, new_tokens: int, rounds: int) -> None:
    image = image_for(model)
    loaded = engine.model(model_id)
    paper = [make(n, keep=keep) for n in PAPER]
    every = [m for m in (make(n, keep=keep) for n in REGISTRY) if not engine.not_applicable(loaded, m)]
    fifteen = [m for m in every if m.name not in ADDED_LATER]
    walls = {"vanilla": [], "paper": [], "fifteen": [], "all": [], "all_solo": []}
    shared, solo = [], []
    timed(engine, image, every, model_id, 2)  # warm: allocator, kernels, every method's code path
    for _ in range(rounds):
        walls["vanilla"].append(timed(engine, image, [make("vanilla")], model_id, new_tokens)[0])
        walls["paper"].append(timed(engine, image, paper, model_id, new_tokens)[0])
        walls["fifteen"].append(timed(engine, image, fifteen, model_id, new_tokens)[0])
        ms, out = timed(engine, image, every, model_id, new_tokens)
        walls["all"].append(ms)
        shared.append(out)
        ms, out = timed(engine, image, every, model_id, new_tokens, solo=True)
        walls["all_solo"].append(ms)
        solo.append(out)
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in walls.items()}
    base_wall, base_cpu = best["vanilla"]
    answers = {r["method"]: len(r.get("answer_tokens", [])) for r in shared[0]["results"]}
    print(f"\n## {model}: {loaded.model_id}  image tokens {shared[0]['images'][0]['tokens']}, keep {keep}, "
          f"{new_tokens} new tokens max (vanilla answered {answers.get('vanilla')} tokens), {engine.threads} "
          f"threads, fastest of {rounds} rounds")
    print(f"{'':34} {'wall ms':>9} {'ratio':>6} {'CPU ms':>9} {'ratio':>6}")
    rows = [("one vanilla run", "vanilla"), ("8 paper methods, shared prefix", "paper"),
            (f"{len(fifteen)} methods of issue 10, shared", "fifteen"),
            (f"all {len(every)} methods, shared prefix", "all"), (f"all {len(every)} methods, --solo", "all_solo")]
    for label, key in rows:
        wall, cpu = best[key]
        print(f"{label:34} {wall:9.1f} {wall / base_wall:5.2f}x {cpu:9.1f} {cpu / base_cpu:5.2f}x")
    print(f"peak memory {peak_mb():.0f} MB ({'CUDA allocated' if torch.cuda.is_available() else 'process RSS'})")
    print(f"{'method':15} {'timing':14} {'prefill shared':>14} {'prefill solo':>12} {'diff':>6} "
          f"{'decode/tok shared':>17} {'solo':>7} {'answer same':>11}")
    for a, b in zip(shared[0]["results"], solo[0]["results"]):
        if a["status"] != "ok":
            print(f"{a['method']:15} not applicable: {a['reason']}")
            continue
        name = a["method"]
        pa, pb = fastest(shared, name, "prefill_ms"), fastest(solo, name, "prefill_ms")
        da, db = fastest(shared, name, "decode_ms_per_token"), fastest(solo, name, "decode_ms_per_token")
        diff = (pa - pb) / pb * 100 if pb else 0.0
        print(f"{name:15} {a['timings']['timing']:14} {pa:14.1f} {pb:12.1f} {diff:+5.0f}% {da:17.2f} {db:7.2f} "
              f"{str(a['answer'] == b['answer']):>11}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--keep", type=int, default=64)
    ap.add_argument("--models", default="toy,llava576")
    ap.add_argument("--layers", type=int, default=8, help="decoder layers of the LLaVA-1.5-shaped model")
    ap.add_argument("--hidden", type=int, default=512, help="hidden size of the LLaVA-1.5-shaped model")
    args = ap.parse_args()
    torch.manual_seed(0)
    engine = Engine(threads=args.threads)
    for model in args.models.split(","):
        if model == "toy":
            model_id = str(EMBEDDED_MODEL)
        else:
            model_id = str(build(Path(tempfile.mkdtemp()) / "llava576", args.layers, args.hidden))
        bench(engine, model, model_id, args.keep, args.new_tokens, args.rounds)


if __name__ == "__main__":
    main()
