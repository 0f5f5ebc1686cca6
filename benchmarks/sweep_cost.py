"""What a sweep costs: tasks x samples x methods x budgets on the embedded model, shared prefix vs separate runs.

    PYTHONPATH=. python benchmarks/sweep_cost.py [--tasks pope,vqa --limit 5 --methods fastv,random,pooling,sparsevlm
                                                  --keeps 144,64 --threads 1 --rounds 2]

Runs the same sweep (explorer.eval.sweep.run_sweep, fresh output folder each time) with every configuration of a
sample in one shared compare (the vision tower and the unpruned prefix once per sample) and, where run_sweep has
the switch, with `solo=True` (every configuration alone, as sweeps ran before); rounds interleaved in one process
so load from other jobs hits both alike. Prints the fastest wall and CPU time of each, the ratio, and whether
every record's answer, kept set and metrics agree. On code without the switch it times the one mode it has.
Prints numbers; not a test.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from explorer.engine import EMBEDDED_MODEL, Engine  # noqa: E402
from explorer.eval.sweep import configs, run_sweep  # noqa: E402

HAS_SOLO = "solo" in inspect.signature(run_sweep).parameters


def sweep_once(engine, tasks, cfgs, limit, new_tokens, solo) -> tuple[tuple[float, float], list[dict]]:
    """((wall s, CPU s), records sorted by key) of one sweep into a fresh folder."""
    out = Path(tempfile.mkdtemp(prefix="sweep-cost-"))
    extra = {"solo": solo} if HAS_SOLO else {}
    wall, cpu = time.perf_counter(), time.process_time()
    run_sweep(out, tasks, cfgs, str(EMBEDDED_MODEL), limit=limit, engine=engine, max_new_tokens=new_tokens,
              progress=False, rank=0, world=1, report=False, **extra)
    took = (time.perf_counter() - wall, time.process_time() - cpu)
    records = [json.loads(line) for line in (out / "records-r0.jsonl").read_text().splitlines()]
    return took, sorted(records, key=lambda r: r["key"])


def outcome(rec: dict) -> tuple:
    """What must not change with sharing: answer, kept sets, metrics (or the error)."""
    if "error" in rec:
        return rec["key"], rec["error"]
    return rec["key"], rec["answer"], [img["kept"] for img in rec["images"]], json.dumps(rec["metrics"], sort_keys=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="pope,vqa")
    ap.add_argument("--limit", type=int, default=5, help="samples per task")
    ap.add_argument("--methods", default="fastv,random,pooling,sparsevlm")
    ap.add_argument("--keeps", default="144,64")
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    engine = Engine(threads=args.threads)
    tasks = args.tasks.split(",")
    cfgs = configs(args.methods.split(","), [int(k) for k in args.keeps.split(",")])
    sweep_once(engine, tasks, cfgs, 1, 2, False)  # warm: allocator, kernels, every method's code path
    modes = {"shared prefix": False, "solo (separate runs)": True} if HAS_SOLO else {"per-config runs": False}
    best, records = {m: (float("inf"), float("inf")) for m in modes}, {}
    for _ in range(args.rounds):
        for mode, solo in modes.items():
            (wall, cpu), records[mode] = sweep_once(engine, tasks, cfgs, args.limit, args.new_tokens, solo)
            best[mode] = (min(best[mode][0], wall), min(best[mode][1], cpu))
    n = len(records[next(iter(modes))])
    print(f"sweep: {len(tasks)} tasks x {args.limit} samples x {len(cfgs)} configs ({args.methods} at "
          f"{args.keeps}) = {n} records, {args.new_tokens} new tokens, {engine.threads} thread(s), "
          f"fastest of {args.rounds} rounds")
    print(f"{'':22} {'wall s':>8} {'CPU s':>8} {'ms/record':>10}")
    for mode, (wall, cpu) in best.items():
        print(f"{mode:22} {wall:8.2f} {cpu:8.2f} {wall / n * 1e3:10.1f}")
    if HAS_SOLO:
        (ws, cs), (wo, co) = best["shared prefix"], best["solo (separate runs)"]
        same = [outcome(r) for r in records["shared prefix"]] == [outcome(r) for r in records["solo (separate runs)"]]
        print(f"solo / shared: wall {wo / ws:.2f}x, CPU {co / cs:.2f}x; every record's answer, kept sets and "
              f"metrics equal: {same}")


if __name__ == "__main__":
    main()
