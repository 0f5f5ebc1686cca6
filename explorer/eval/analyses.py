"""The paper's analyses over sweep records: costs (Table 5), α dilemma (Table 4), language guidance
(Table 3), position bias (Figure 2), plus the plots."""
from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

import numpy as np

from . import tasks as task_mod


def cost_columns(recs: list[dict]) -> dict:
    med = statistics.median
    return {"kept_at_layer": round(statistics.fmean(r["tokens"]["kept_at_layer"] for r in recs), 1),
            "layer_averaged": round(statistics.fmean(r["tokens"]["layer_averaged"] for r in recs), 1),
            "prefill_ms": round(med(r["timings"]["prefill_ms"] for r in recs), 2),
            "decode_ms_per_token": round(med(r["timings"]["decode_ms_per_token"] for r in recs), 2),
            "scoring_ms": round(med(r["timings"]["scoring_ms"] for r in recs), 2),
            "flops_pct": round(100 * statistics.fmean(r["flops_ratio"] for r in recs), 1),
            "kv_mb": round(statistics.fmean(r["kv_cache_bytes"] for r in recs) / 2**20, 3)}


TIMING_NOTE = ("shared-prefix: a sample's configurations shared the vision tower and the layers below each cut, "
               "measured once and attributed to each; solo-prefill: a configuration that could not share ran "
               "alone and only its later decode steps were batched; solo: every configuration ran alone, "
               "`sweep --solo`")


def latency_table(rows: list[dict], records: list[dict], task: str) -> str:
    """Table 5: tokens, measured latency, FLOPs %, KV-cache MB and accuracy per method, device stated."""
    sub = [r for r in rows if r["task"] == task and r["group"] == "all"]
    dev = Counter(f"{r['device']}, {r['dtype']}, {r['threads']} thread(s)" for r in records if r["task"] == task)
    timing = sorted({r.get("timings", {}).get("timing", "solo") for r in records if r["task"] == task})
    lines = [f"Device: {', '.join(dev)}. Latency = median over samples (one run each; on a shared CPU only "
             f"ratios mean anything). Timing: {', '.join(timing)} ({TIMING_NOTE}).\n",
             f"| Method | keep | tokens at K | layer-avg tokens | prefill ms | decode ms/token | scoring ms | "
             f"FLOPs % | KV MB | {task} {task_mod.get(task).primary} |", "|---" * 10 + "|"]
    for r in sub:
        lines.append(f"| {r['label']} | {r['keep'] or 'all'} | {r['kept_at_layer']:g} | {r['layer_averaged']:g} | "
                     f"{r['prefill_ms']:.1f} | {r['decode_ms_per_token']:.2f} | {r['scoring_ms']:.2f} | "
                     f"{r['flops_pct']:.1f} | {r['kv_mb']:.3f} | {100 * r['primary']:.1f} |")
    return "\n".join(lines)


def alpha_table(rows: list[dict]) -> str | None:
    """Table 4: primary metric per task (and keep) for α = 0 … 1; best α in bold; vanilla beside."""
    sub = [r for r in rows if r["method"] == "alpha" and r["group"] == "all"]
    if not sub:
        return None
    alphas = sorted({r["alpha"] for r in sub})
    van = {r["task"]: r["primary"] for r in rows if r["method"] == "vanilla" and r["group"] == "all"}
    lines = ["| Task | keep | Vanilla | " + " | ".join(f"α={a:g}" for a in alphas) + " | best α |",
             "|---" * (len(alphas) + 4) + "|"]
    for task, keep in sorted({(r["task"], r["keep"]) for r in sub}):
        cell = {r["alpha"]: r["primary"] for r in sub if r["task"] == task and r["keep"] == keep}
        best = max(cell.values())
        vals = [(f"**{100 * cell[a]:.1f}**" if cell[a] == best else f"{100 * cell[a]:.1f}") if a in cell else "–"
                for a in alphas]
        bests = ", ".join(f"{a:g}" for a in alphas if cell.get(a) == best)
        v = f"{100 * van[task]:.1f}" if task in van else "–"
        lines.append(f"| {task} | {keep} | {v} | " + " | ".join(vals) + f" | {bests} |")
    return "\n".join(lines)


def guidance_table(rows: list[dict]) -> str | None:
    """Table 3: haystack accuracy ± s.e. by number of images, per method."""
    sub = [r for r in rows if r["task"] == "haystack" and r["group"] != "all"]
    if not sub:
        return None
    sizes = sorted({r["group"] for r in sub}, key=int)
    cell = {(r["config"], r["group"]): r for r in sub}
    lines = ["| Method | keep | " + " | ".join(f"{s} image(s)" for s in sizes) + " |", "|---" * (len(sizes) + 2) + "|"]
    for cfg, label, keep in dict.fromkeys((r["config"], r["label"], r["keep"]) for r in sub):
        vals = [cell.get((cfg, s)) for s in sizes]
        lines.append(f"| {label} | {keep or 'all'} | " + " | ".join(
            f"{100 * v['primary']:.1f} ± {100 * v['stderr']:.1f} (n={v['n']})" if v else "–" for v in vals) + " |")
    return "\n".join(lines)


def position_stats(records: list[dict]) -> dict:
    """Per config: keep frequency and mean score per token position on the most common grid.

    Returns {config: {label, keep, grid, freq (n,), score (n,) or None, images, late, mean_pos}} where
    `mean_pos` is the mean kept position scaled to 0..1 (0.5 = no bias) and `late` the share of kept tokens
    in the last quarter of the image's sequence (0.25 = no bias).
    """
    grids = Counter(tuple(img["grid"]) for r in records for img in r["images"])
    if not grids:
        return {}
    grid = grids.most_common(1)[0][0]
    n = grid[0] * grid[1]
    out: dict = {}
    for r in records:
        if r["method"] == "vanilla":
            continue
        s = out.setdefault(r["config"], {"label": r["label"], "keep": r["keep"], "grid": grid, "freq": np.zeros(n),
                                         "score": np.zeros(n), "scored": 0, "images": 0})
        for img in r["images"]:
            if tuple(img["grid"]) != grid or img["image_tokens"] != n:
                continue
            s["images"] += 1
            s["freq"][[k for k in img["kept"] if k < n]] += 1
            if "scores" in img:
                s["score"] += np.asarray(img["scores"][:n])
                s["scored"] += 1
    for s in out.values():
        s["freq"] = s["freq"] / max(1, s["images"])
        s["score"] = s["score"] / s["scored"] if s["scored"] else None
        w = s["freq"]
        pos = np.arange(n) / max(1, n - 1)
        s["mean_pos"] = float((w * pos).sum() / w.sum()) if w.sum() else float("nan")
        s["late"] = float(w[int(0.75 * n):].sum() / w.sum()) if w.sum() else float("nan")
    return out


def position_table(records: list[dict]) -> str | None:
    stats = position_stats(records)
    if not stats:
        return None
    lines = ["Mean kept position (0 = first image token, 1 = last; 0.5 = no bias) and share of kept tokens "
             "in the last quarter of the sequence (25% = no bias).\n",
             "| Method | keep | images | mean kept position | kept in last quarter |", "|---|---|---|---|---|"]
    for s in stats.values():
        lines.append(f"| {s['label']} | {s['keep']} | {s['images']} | {s['mean_pos']:.3f} | {100 * s['late']:.1f}% |")
    return "\n".join(lines)


def all_tables(rows: list[dict], records: list[dict]) -> list[tuple[str, str]]:
    out = []
    for title, fn in (("α dilemma (Table 4)", lambda: alpha_table(rows)),
                      ("Language guidance on haystacks (Table 3)", lambda: guidance_table(rows)),
                      ("Position bias (Figure 2)", lambda: position_table(records))):
        text = fn()
        if text:
            out.append((title, text))
    for task in sorted({r["task"] for r in rows}):
        out.append((f"Latency vs FLOPs, {task} (Table 5)", latency_table(rows, records, task)))
    return out


def plots(rows: list[dict], records: list[dict], out: Path) -> dict[str, Path]:
    """PNG plots: metric vs budget, α curves, position-bias histogram and heat maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    alls = [r for r in rows if r["group"] == "all"]
    tasks = sorted({r["task"] for r in alls})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sub = [r for r in alls if r["task"] == task]
        for label in dict.fromkeys(r["label"] for r in sub if r["method"] not in ("vanilla", "alpha")):
            pts = sorted((r["keep"], r["primary"]) for r in sub if r["label"] == label)
            ax.plot(*zip(*pts), marker="o", label=label)
        for r in sub:
            if r["method"] == "vanilla":
                ax.axhline(r["primary"], color="k", ls="--", label="vanilla")
        ax.set(title=task, xlabel="image tokens kept", ylabel=task_mod.get(task).primary)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    files["budget"] = _save(fig, out / "budget.png")
    al = [r for r in alls if r["method"] == "alpha"]
    if al:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for task, keep in sorted({(r["task"], r["keep"]) for r in al}):
            pts = sorted((r["alpha"], r["primary"]) for r in al if r["task"] == task and r["keep"] == keep)
            ax.plot(*zip(*pts), marker="o", label=f"{task} keep {keep}")
        ax.set(xlabel="α (0 = uniqueness only, 1 = FastV attention)", ylabel="primary metric")
        ax.legend(fontsize=7)
        fig.tight_layout()
        files["alpha"] = _save(fig, out / "alpha.png")
    stats = position_stats(records)
    if stats:
        files.update(_position_plots(plt, stats, out))
    return files


def _rows(v: np.ndarray, grid) -> np.ndarray:
    """Mean of a per-token vector over each grid row (row-major index -> one bin per row)."""
    return v.reshape(grid).mean(axis=1)


def _position_plots(plt, stats: dict, out: Path) -> dict[str, Path]:
    files = {}
    keeps = sorted({s["keep"] for s in stats.values()}, reverse=True)
    scored = {}
    for s in stats.values():  # one score curve per method (scores do not depend on the budget)
        if s["score"] is not None and s["label"] not in scored:
            scored[s["label"]] = s
    n_ax = len(keeps) + (1 if scored else 0)
    fig, axes = plt.subplots(n_ax, 1, figsize=(7, 2.6 * n_ax), squeeze=False)
    for ax, k in zip(axes[:, 0], keeps):
        for s in stats.values():
            if s["keep"] == k:
                ax.plot(_rows(s["freq"], s["grid"]), marker=".", lw=1, label=s["label"])
        ax.set(title=f"Keep frequency by position, keep {k} (mean over each grid row; row 0 = image top, "
                     "first in the sequence)", xlabel="grid row (sequence order)", ylabel="keep frequency")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=6, ncol=3)
    if scored:
        ax = axes[-1][0]
        for label, s in scored.items():
            v = _rows(s["score"], s["grid"])
            ax.plot((v - v.min()) / (np.ptp(v) or 1), marker=".", lw=1, label=label)
        ax.set(title="Mean selection score per grid row, min-max scaled per method (FastV: last-token attention)",
               xlabel="grid row",
               ylabel="scaled score")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    files["position_hist"] = _save(fig, out / "position_hist.png")
    items = list(stats.values())
    rows = 2 if scored else 1
    fig, axes = plt.subplots(rows, len(items), figsize=(2.2 * len(items), 2.6 * rows), squeeze=False)
    for col, s in enumerate(items):
        ax = axes[0][col]
        im = ax.imshow(s["freq"].reshape(s["grid"]), vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"{s['label']}\nk={s['keep']} kept", fontsize=7)
        ax.axis("off")
        if rows == 2:
            ax = axes[1][col]
            ax.axis("off")
            if s["score"] is not None:
                ax.imshow(s["score"].reshape(s["grid"]), cmap="magma")
                ax.set_title("mean score", fontsize=7)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="keep frequency")
    files["position_heatmap"] = _save(fig, out / "position_heatmap.png")
    return files


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
