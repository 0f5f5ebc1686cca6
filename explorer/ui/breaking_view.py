"""View 1, "Breaking points": one line per method of "answer equals vanilla's" against the budget, and a summary."""
from __future__ import annotations

import io

from PIL import Image

ABOUT = ("Every selected pruning method at a ladder of budgets (empty box: the image's tokens × 1, ½, ¼, 1/9, "
         "1/18, 1/36, 1/72, i.e. 576 → 8 on LLaVA-1.5): does its answer still equal vanilla's (exact text; for a "
         "box answer, IoU ≥ 0.5 with the reference box, or vanilla's box when none is given)? Uses the inputs "
         "above; runs already in the results cache come back at once. Also `/breaking_points` in the API.")


def figure(data: dict) -> Image.Image:
    """Agrees (1) / disagrees (0) against the budget, largest budget left; lines nudged apart to stay visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves, budgets = data["curves"], data["budgets"]
    fig, ax = plt.subplots(figsize=(7.5, 3.4), dpi=100)
    for i, c in enumerate(curves):
        nudge = (i - (len(curves) - 1) / 2) * 0.04
        xs = [p["budget"] for p in c["points"] if p["agrees"] is not None]
        ys = [int(p["agrees"]) + nudge for p in c["points"] if p["agrees"] is not None]
        holds = c["holds_down_to"]
        ax.plot(xs, ys, marker="o", lw=1.6, label=f"{c['method']} (holds to {holds if holds else '—'})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlim(max(budgets) * 1.3, min(budgets) / 1.3)  # largest budget left: breaking happens to the right
    ax.set_yticks([0, 1], ["differs", "= vanilla"])
    ax.set_ylim(-0.4, 1.4)
    ax.set_xlabel("budget (image tokens kept)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def summary(data: dict) -> str:
    """Markdown: vanilla's answer, then per method the smallest budget still agreeing and the first break."""
    rule = "IoU ≥ 0.5 with " + ("the reference box" if data["reference"] else "vanilla's box") \
        if data["criterion"] == "iou" else "the same answer text"
    lines = [f"Vanilla answers `{data['vanilla']['answer'] or '(empty)'}`; agreeing means {rule}.", "",
             "| method | agrees down to | first differs at | answers (budget: answer) |", "|---|---|---|---|"]
    for c in data["curves"]:
        answers = "; ".join(f"{p['budget']}: {p['answer'] if p['answer'] is not None else '(' + p['reason'] + ')'}"
                            for p in c["points"])
        lines.append(f"| {c['label']} | {c['holds_down_to'] or '—'} | {c['first_disagreement'] or 'never'} | "
                     f"{answers.replace('|', '/')} |")
    return "\n".join(lines)
