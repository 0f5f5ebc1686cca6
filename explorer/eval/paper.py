"""Every analysis of the paper in one go: `python -m explorer.eval paper --out DIR --limit N [--model M]`.

Sub-folders (each a resumable sweep with its own report.md): table1 (methods x 144/64 budgets on POPE,
VQA, grounding; also Table 2 and Table 5 and Figure 2 from the same records), alpha (Table 4, α = 0..1),
guidance (Table 3, haystacks of 1, 2, 3, 5 images). Budgets are scaled to the model's image tokens when
it has fewer than 576 (keep = round(n * k / 576)).
"""
from __future__ import annotations

from pathlib import Path

from ..settings import EVAL, PRESETS, preset
from .sources import ToySource
from .sweep import configs, run_sweep

ALPHAS = [round(0.1 * i, 1) for i in range(11)]


def scaled(keep: int, tokens: int) -> int:
    return max(1, round(tokens * keep / 576)) if tokens < 576 else keep


def run_all(out: str | Path, limit: int, model_id: str | None = None, engine=None, parts=("table1", "alpha",
            "guidance"), seed: int = EVAL.seed, max_new_tokens: int = EVAL.max_new_tokens) -> dict[str, Path]:
    from ..engine import Engine
    from .report import write_report

    out = Path(out)
    engine = engine or Engine(device=EVAL.device, threads=EVAL.threads)
    loaded = engine.model(model_id)
    doc = ToySource("pope", 1, seed)[0]
    tokens = engine.prepare(loaded, doc["images"], doc["question"]).layouts[0].count  # image tokens per image
    def budgets(name: str) -> list[int]:
        return [scaled(k, tokens) for k in PRESETS[name].budgets]

    plan = {
        "table1": (["pope", "vqa", "grounding"], configs(preset("table1"), budgets("table1")), None),
        "alpha": (["pope", "vqa"], configs(preset("alpha"), budgets("alpha"), ALPHAS), None),
        "guidance": (["haystack"], configs(preset("guidance"), budgets("guidance")), ("1", "2", "3", "5")),
    }
    reports = {}
    for part in parts:
        task_names, cfgs, splits = plan[part]
        run_sweep(out / part, task_names, cfgs, model_id, limit=limit, seed=seed, engine=engine,
                  max_new_tokens=max_new_tokens, splits=splits, rank=0, world=1, report=False)
        meta = {"model": loaded.model_id, "data": f"toy seed {seed}, n={limit}"}
        reports[part] = write_report(out / part, meta)["report"]
    return reports
