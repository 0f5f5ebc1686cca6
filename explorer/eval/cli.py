"""`python -m explorer.eval sweep|report|table6 ...` (sweeps shard under `accelerate launch`)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from .sweep import configs, run_sweep

DEFAULT = "vanilla,random,pooling,fastv,fastv_window,fastv_reverse"


def _floats(s: str | None):
    return [float(v) for v in s.split(",")] if s else None


def main(argv=None) -> int:
    """Bad input: one line and exit code 2; a model that does not load: one line and exit code 3."""
    from ..limits import InputError
    from ..methods import MethodError
    from ..models import ModelLoadError

    try:
        _main(argv)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (InputError, MethodError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__}", file=sys.stderr)
        return 2
    return 0


def _main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m explorer.eval", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sweep", help="run methods x budgets on task(s), write records/CSV/Markdown/PNG")
    s.add_argument("--task", default="pope", help="comma-separated: pope, grounding, vqa, haystack")
    s.add_argument("--methods", default=DEFAULT)
    s.add_argument("--keep", default="144,64", help="image tokens kept per image, comma-separated")
    s.add_argument("--alpha", default=None, help="α values for the alpha method, e.g. 0,0.1,...,1")
    s.add_argument("--layer", type=int, default=2)
    s.add_argument("--budget", choices=("paper", "final"), default="paper",
                   help="budget convention: each method as its authors' code sets budgets ('paper', default) "
                        "or exactly --keep tokens after the last cut ('final')")
    s.add_argument("--model", default=None, help="model id or folder (default: the embedded toy model)")
    s.add_argument("--data", default="toy", help="'toy', a parquet file/folder (lmms-lab layout), a JSONL, or hf:<dataset>[:split] via datasets")
    s.add_argument("--splits", default=None, help="toy splits, e.g. random,popular or 1,2,3,5 (haystack sizes)")
    s.add_argument("--limit", type=int, default=None, help="docs per task (toy default 100)")
    s.add_argument("--post-prompt", default=None,
                   help='appended to each question, e.g. "Answer the question using a single word or phrase."')
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-new-tokens", type=int, default=16)
    s.add_argument("--repeats", type=int, default=1, help="timed repeats per run (median)")
    s.add_argument("--no-scores", action="store_true", help="do not store per-token scores in records")
    s.add_argument("--threads", type=int, default=None, help="torch threads (default env EVAL_THREADS or 1)")
    s.add_argument("--out", required=True)
    r = sub.add_parser("report", help="(re)write the merged report of a sweep folder")
    r.add_argument("--out", required=True)
    t = sub.add_parser("table6",
                       help="training-aware compression (TRR = TACR x TFRR) for a Qwen2-VL / Qwen2.5-VL model")
    t.add_argument("--model", required=True)
    t.add_argument("--task", default="pope")
    t.add_argument("--limit", type=int, default=20)
    t.add_argument("--data", default="toy")
    pa = sub.add_parser("paper", help="all analyses (Tables 1-5, Figure 2) into sub-folders of --out")
    pa.add_argument("--out", required=True)
    pa.add_argument("--limit", type=int, default=60, help="docs per task (per haystack size: limit / 4)")
    pa.add_argument("--model", default=None)
    pa.add_argument("--parts", default="table1,alpha,guidance")
    pa.add_argument("--max-new-tokens", type=int, default=16)
    a = p.parse_args(argv)
    if a.command == "sweep":
        if a.threads:
            os.environ["EVAL_THREADS"] = str(a.threads)
        cfgs = configs(a.methods.split(","), [int(k) for k in a.keep.split(",")], _floats(a.alpha), a.layer,
                       a.budget)
        path = run_sweep(a.out, a.task.split(","), cfgs, a.model, a.data, a.limit, a.seed,
                         max_new_tokens=a.max_new_tokens, repeats=a.repeats, scores=not a.no_scores,
                         splits=tuple(a.splits.split(",")) if a.splits else None, post_prompt=a.post_prompt)
        print(f"records: {path}")
    elif a.command == "report":
        from .report import write_report

        meta = {}
        for f in sorted(__import__("pathlib").Path(a.out).glob("shard-*.done")):
            meta = json.loads(f.read_text())
        print(write_report(a.out, meta)["report"])
    elif a.command == "paper":
        from .paper import run_all

        for part, path in run_all(a.out, a.limit, a.model, parts=a.parts.split(","),
                                  max_new_tokens=a.max_new_tokens).items():
            print(f"{part}: {path}")
    else:
        from ..engine import Engine
        from .training_aware import table6

        print(table6(Engine(threads=1), a.model, a.task, n=a.limit, data=a.data)[0])


if __name__ == "__main__":
    sys.exit(main())
