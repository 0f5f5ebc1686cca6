"""`python -m explorer.eval sweep|report|table6 ...` (sweeps shard under `accelerate launch`)."""
from __future__ import annotations

import json
import sys

from ..settings import EVAL, PRESETS, OneLineParser, add_arguments, settings_from
from .sweep import configs, run_sweep

SWEEP_ARGUMENTS = ("methods", "layer", "budget", "ranking", "model", "seed", "max_new_tokens", "repeats", "threads",
                   "device")


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
    p = OneLineParser(prog="python -m explorer.eval", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    sweep = PRESETS["sweep"]
    s = sub.add_parser("sweep", help="run methods x budgets on task(s), write records/CSV/Markdown/PNG")
    s.add_argument("--task", default=sweep.task, help="comma-separated: pope, grounding, vqa, haystack")
    s.add_argument("--keep", dest="keeps", default=",".join(map(str, sweep.budgets)),
                   help="image tokens kept per image, comma-separated")
    s.add_argument("--alpha", dest="alphas", default=None, help="α values for the alpha method, e.g. 0,0.1,...,1")
    add_arguments(s, SWEEP_ARGUMENTS, EVAL, methods="sweep")
    s.add_argument("--data", default="toy", help="'toy', a parquet file/folder (lmms-lab layout), a JSONL, or "
                                                 "hf:<dataset>[:split] via datasets")
    s.add_argument("--splits", default=None, help="toy splits, e.g. random,popular or 1,2,3,5 (haystack sizes)")
    s.add_argument("--limit", type=int, default=None, help="docs per task (toy default 100)")
    s.add_argument("--post-prompt", default=None,
                   help='appended to each question, e.g. "Answer the question using a single word or phrase."')
    s.add_argument("--no-scores", action="store_true", help="do not store per-token scores in records")
    s.add_argument("--solo", action="store_true",
                   help="run every configuration alone (Table 5-style timings); by default a sample's configurations "
                        "share the vision tower and the layers below their cut")
    s.add_argument("--out", required=True)
    r = sub.add_parser("report", help="(re)write the merged report of a sweep folder")
    r.add_argument("--out", required=True)
    t = sub.add_parser("table6",
                       help="training-aware compression (TRR = TACR x TFRR) for a Qwen2-VL / Qwen2.5-VL model")
    t.add_argument("--model", required=True)
    t.add_argument("--task", default=sweep.task)
    t.add_argument("--limit", type=int, default=20)
    t.add_argument("--data", default="toy")
    pa = sub.add_parser("paper", help="all analyses (Tables 1-5, Figure 2) into sub-folders of --out")
    pa.add_argument("--out", required=True)
    pa.add_argument("--limit", type=int, default=60, help="docs per task (per haystack size: limit / 4)")
    pa.add_argument("--parts", default="table1,alpha,guidance")
    add_arguments(pa, ("model", "max_new_tokens", "threads", "device"), EVAL)
    a = p.parse_args(argv)
    if a.command == "sweep":
        st = settings_from(a, EVAL)
        cfgs = configs(a.methods.split(","), [int(k) for k in a.keeps.split(",")], _floats(a.alphas), st.layer,
                       st.convention, st.ranking)
        path = run_sweep(a.out, a.task.split(","), cfgs, a.model, a.data, a.limit, st.seed,
                         max_new_tokens=st.max_new_tokens, repeats=st.repeats, scores=not a.no_scores,
                         splits=tuple(a.splits.split(",")) if a.splits else None, post_prompt=a.post_prompt,
                         threads=st.threads, device=st.device, solo=a.solo)
        print(f"records: {path}")
    elif a.command == "report":
        from .report import write_report

        meta = {}
        for f in sorted(__import__("pathlib").Path(a.out).glob("shard-*.done")):
            meta = json.loads(f.read_text())
        print(write_report(a.out, meta)["report"])
    elif a.command == "paper":
        from ..engine import Engine
        from .paper import run_all

        st = settings_from(a, EVAL)
        engine = Engine(device=st.device, threads=st.threads)
        for part, path in run_all(a.out, a.limit, a.model, engine=engine, parts=a.parts.split(","),
                                  max_new_tokens=st.max_new_tokens).items():
            print(f"{part}: {path}")
    else:
        from ..engine import Engine
        from .training_aware import table6

        print(table6(Engine(threads=EVAL.threads), a.model, a.task, n=a.limit, data=a.data)[0])


if __name__ == "__main__":
    sys.exit(main())
