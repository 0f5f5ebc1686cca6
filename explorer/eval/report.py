"""Merge the records of every shard into summary.csv, Markdown tables shaped like the paper's, and PNG plots."""
from __future__ import annotations

import json
import math
from pathlib import Path

from . import analyses
from . import tasks as task_mod


def load_records(out: str | Path) -> list[dict]:
    """All records of all shards, one per key (the first seen wins), errors dropped."""
    seen: dict[str, dict] = {}
    for f in sorted(Path(out).glob("records-r*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "error" not in rec:
                seen.setdefault(rec["key"], rec)
    return list(seen.values())


def group_of(rec: dict, task) -> str:
    return str(rec.get(task.group_by) or "all") if task.group_by else "all"


def _order(records: list[dict]) -> list[tuple]:
    """(config, method, keep, alpha, label) in first-seen order, vanilla first."""
    seen = {}
    for r in records:
        seen.setdefault(r["config"], (r["config"], r["method"], r["keep"], r["alpha"], r["label"]))
    return sorted(seen.values(), key=lambda c: (c[1] != "vanilla", -(c[2] or 10**9)))


def summary(records: list[dict]) -> list[dict]:
    """One row per (task, group, config) plus the task-level 'all' group: every metric and the costs."""
    rows = []
    by: dict[tuple, list[dict]] = {}
    for r in records:
        task = task_mod.get(r["task"])
        for g in {group_of(r, task), "all"}:
            by.setdefault((r["task"], g, r["config"]), []).append(r)
    for (tname, group, cfg), recs in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1] != "all", kv[0][1])):
        task = task_mod.get(tname)
        r0 = recs[0]
        row = {"task": tname, "group": group, "config": cfg, "method": r0["method"], "keep": r0["keep"],
               "alpha": r0["alpha"], "label": r0["label"], "n": len(recs)}
        for m in task.metrics:
            row[m] = round(task_mod.score(task, recs, m), 4)
        row["primary"] = row[task.primary]
        row["stderr"] = round(task_mod.stderr(task, recs), 4)
        row.update(analyses.cost_columns(recs))
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)


def _fmt(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def main_table(rows: list[dict], records: list[dict]) -> str:
    """Methods x benchmarks (primary metric of each task over all its docs, in % ± standard error), Avg. as %
    of vanilla."""
    tasks = sorted({r["task"] for r in rows})
    cell = {(r["task"], r["config"]): r["primary"] for r in rows if r["group"] == "all"}
    err = {(r["task"], r["config"]): r["stderr"] for r in rows if r["group"] == "all"}
    names = [f"{t} ({task_mod.get(t).primary})" for t in tasks]
    total = max((img["image_tokens"] for r in records for img in r["images"][:1]), default=0)
    lines = ["| Method | " + " | ".join(names) + " | Avg. |", "|---" * (len(tasks) + 2) + "|"]
    base = {t: cell.get((t, c[0])) for c in _order(records) if c[1] == "vanilla" for t in tasks}
    section = None
    for cfg, method, keep, alpha, label in _order(records):
        head = f"*Upper bound, {total} tokens (100%)*" if method == "vanilla" else \
            f"*Retain {keep} tokens (↓ {100 * (1 - keep / total):.1f}%)*" if total else f"*keep {keep}*"
        if head != section:
            lines.append(f"| {head} |" + " |" * (len(tasks) + 1))
            section = head
        vals = [cell.get((t, cfg)) for t in tasks]
        rel = [v / base[t] for t, v in zip(tasks, vals) if v is not None and base.get(t)]
        avg = f"{100 * sum(rel) / len(rel):.1f}%" if rel else "–"
        if rel and method != "vanilla":
            avg += f" ({100 * sum(rel) / len(rel) - 100:+.1f}%)"
        se = [err.get((t, cfg)) for t in tasks]
        shown = [_fmt(v) + (f" ± {_fmt(e)}" if v is not None and e is not None and not math.isnan(e) else "")
                 for v, e in zip(vals, se)]
        lines.append(f"| {label} | " + " | ".join(shown) + f" | {avg} |")
    return "\n".join(lines)


def group_table(rows: list[dict], task: str) -> str:
    """One task broken down by its groups (POPE split, VQA kind, haystack size), primary metric in %."""
    sub = [r for r in rows if r["task"] == task]
    groups = sorted({r["group"] for r in sub if r["group"] != "all"}, key=lambda g: (len(g), g)) + ["all"]
    configs = list(dict.fromkeys((r["config"], r["label"], r["keep"]) for r in sub))
    cell = {(r["group"], r["config"]): r for r in sub}
    lines = [f"| {task}: Method | keep | " + " | ".join(groups) + " | n |", "|---" * (len(groups) + 3) + "|"]
    for cfg, label, keep in configs:
        vals = [cell.get((g, cfg)) for g in groups]
        lines.append(f"| {label} | {keep or 'all'} | " + " | ".join(_fmt(v["primary"]) if v else "–" for v in vals)
                     + f" | {cell[('all', cfg)]['n']} |")
    return "\n".join(lines)


def write_report(out: str | Path, meta: dict | None = None) -> dict:
    """Everything from the records in `out`: summary.csv, report.md, *.png. Returns {name: path}."""
    out = Path(out)
    records = load_records(out)
    if not records:
        (out / "report.md").write_text("No records yet.\n")
        return {"report": out / "report.md"}
    rows = summary(records)
    write_csv(rows, out / "summary.csv")
    devices = sorted({f"{r['device']} ({r['dtype']}, {r['threads']} threads)" for r in records})
    parts = [f"# Sweep report\n\nModel: `{(meta or {}).get('model', '?')}`; data: {(meta or {}).get('data', '?')}; "
             f"device: {', '.join(devices)}; {len(records)} records; budget convention: "
             f"{', '.join(sorted({r.get('convention', 'final') for r in records}))}; multi-grid ranking: "
             f"{', '.join(sorted({r.get('ranking', 'not recorded') for r in records}))}.\n",
             "## Methods × benchmarks (primary metric, % ± standard error; Avg. = mean of method/vanilla over "
             "tasks)\n",
             main_table(rows, records), ""]
    for t in sorted({r["task"] for r in rows}):
        if task_mod.get(t).group_by:
            parts += [f"### {t} by {task_mod.get(t).group_by}\n", group_table(rows, t), ""]
    files = {"report": out / "report.md", "summary": out / "summary.csv"}
    for title, text in analyses.all_tables(rows, records):
        parts += [f"## {title}\n", text, ""]
    files.update(analyses.plots(rows, records, out))
    parts += [f"![{k}]({v.name})" for k, v in files.items() if str(v).endswith(".png")]
    (out / "report.md").write_text("\n".join(parts) + "\n")
    return files
