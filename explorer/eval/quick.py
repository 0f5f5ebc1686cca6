"""A small sweep for the web app's "Analysis" tab (no gradio here): tens of samples, one table, PNGs."""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..settings import EVAL, PRESETS
from .report import write_report
from .sweep import configs, run_sweep


def run_small_sweep(engine, task: str, methods: list[str], keep: list[int] | int,
                    n: int = PRESETS["analysis"].samples,
                    progress=None, model_id: str | None = None, alphas: list[float] | None = None,
                    data: str | None = "toy", seed: int = EVAL.seed, out: str | Path | None = None,
                    max_new_tokens: int = EVAL.max_new_tokens, model_name: str | None = None,
                    convention: str = EVAL.convention, ranking: str = EVAL.ranking) -> tuple[str, list[str]]:
    """Run `methods` at budget(s) `keep` on `n` docs of `task`; returns (markdown report, [png paths]).

    `progress(done, total, text)` is called after every (doc, method) run; `model_name` is what the report shows;
    `convention` and `ranking` are the budget convention and the multi-grid ranking (see Method).
    """
    keeps = [keep] if isinstance(keep, int) else list(keep)
    out = Path(out or tempfile.mkdtemp(prefix="explorer-sweep-"))
    cfgs = configs(methods, keeps, alphas, convention=convention, ranking=ranking)
    run_sweep(out, [task], cfgs, model_id=model_id, data=data, limit=n, seed=seed, engine=engine,
              max_new_tokens=max_new_tokens, progress=False, callback=progress, rank=0, world=1, report=False)
    files = write_report(out, {"model": model_name or model_id or "default", "data": data})
    return files["report"].read_text(), [str(p) for p in files.values() if str(p).endswith(".png")]
