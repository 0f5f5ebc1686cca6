"""Drawing, no Gradio: token-grid overlays, boxes, the panel-grid PNG, the timing table, the bar chart."""
from __future__ import annotations

import colorsys
import csv
import io

import numpy as np
from PIL import Image, ImageDraw

from ..boxes import iou

SHOW = 384  # longest side of a panel image, pixels
HIST_W, BAR = 34, (214, 150, 0)  # the kept-per-row strip beside each grid: width (pixels), bar colour
KEPT, REF, PRED = (255, 214, 0), (0, 200, 80), (230, 40, 40)
TABLE_HEADERS = ["method", "budget", "prefill ms", "decode ms/token", "scoring ms", "KV cache MB", "FLOPs (G)",
                 "FLOPs % vanilla", "tokens kept at K", "layer-averaged tokens", "device", "answer"]


def fit(image: Image.Image, side: int = SHOW) -> Image.Image:
    scale = side / max(image.size)
    return image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))


def _cells(frame, size, grid):
    """Pixel rectangle of every token cell (row-major) inside the frame the grid covers."""
    (w, h), (gh, gw) = size, grid
    x0, y0, x1, y1 = frame[0] * w, frame[1] * h, frame[2] * w, frame[3] * h
    xs, ys = np.linspace(x0, x1, gw + 1), np.linspace(y0, y1, gh + 1)
    return [(xs[c], ys[r], xs[c + 1], ys[r + 1]) for r in range(gh) for c in range(gw)]


def _heat(value: float) -> tuple[int, int, int]:
    """Blue (low) to red (high) through yellow."""
    r, g, b = colorsys.hsv_to_rgb((1 - value) * 0.66, 0.9, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def overlay(image: Image.Image, summary: dict, entry: dict, heatmap: bool = False) -> Image.Image:
    """One image with its token grid: kept cells clear, pruned dimmed, merged groups coloured, or scores.

    LLaVA-NeXT images have two grids (base, high-res with a newline column): both are drawn, side by side.
    """
    tiles = [_segment_overlay(image, frame, entry, seg, heatmap) for frame, seg in segments(summary, entry)]
    return tiles[0] if len(tiles) == 1 else hstack(tiles, gap=8)


def row_counts(segment: dict, kept) -> list[int]:
    """View 5: kept tokens per grid row of one grid (its newline column, if any, not counted)."""
    index, _ = segment_cells((0, 0, 1, 1), (1, 1), segment)
    gh = segment["grid"][0]
    cols, kept = len(index) // gh, set(kept)
    return [sum(t in kept for t in index[r * cols:(r + 1) * cols]) for r in range(gh)]


def with_row_histograms(tile: Image.Image, summary: dict, entry: dict) -> Image.Image:
    """The tile with, at its right, one thin strip per grid of the image (see row_histogram)."""
    strips = [row_histogram(tile.height, frame, seg, entry["kept"]) for frame, seg in segments(summary, entry)]
    return hstack([tile, *strips], gap=2)


def row_histogram(height: int, frame, segment: dict, kept, width: int = HIST_W) -> Image.Image:
    """A thin strip, one bar per grid row beside that row, as long as the row's kept count (the fullest row
    fills the strip); the grey line is the count an even spread would keep (the paper's Fig. 2, one image)."""
    counts = row_counts(segment, kept)
    strip = Image.new("RGB", (width, height), (238, 238, 242))
    draw = ImageDraw.Draw(strip)
    ys = np.linspace(frame[1] * height, frame[3] * height, len(counts) + 1)
    scale = (width - 4) / max(max(counts), 1)
    for r, count in enumerate(counts):
        if count:
            draw.rectangle((1, ys[r] + 0.5, 1 + scale * count, ys[r + 1] - 0.5), fill=BAR)
    even = 1 + scale * sum(counts) / len(counts)
    draw.line((even, ys[0], even, ys[-1]), fill=(90, 90, 90), width=1)
    return strip


def segments(summary: dict, entry: dict) -> list[tuple[tuple, dict]]:
    """(frame, segment) per token grid of one image: one grid, or LLaVA-NeXT's base and high-res grids."""
    segs = entry.get("segments") or [{"name": "image", "offset": 0, "grid": entry["grid"]}]
    return [(summary["frame"] if len(segs) == 1 else (0, 0, 1, 1), seg) for seg in segs]


def segment_cells(frame, size, segment: dict) -> tuple[list[int], list[tuple]]:
    """Token index (image index) and pixel rectangle of every cell of one grid drawn at `size`."""
    gh, gw = segment["grid"]
    cols = gw - 1 if segment.get("name") == "highres" else gw  # LLaVA-NeXT's newline column has no pixels
    index = [segment["offset"] + r * gw + c for r in range(gh) for c in range(cols)]
    return index, _cells(frame, size, (gh, cols))


def _segment_overlay(image, frame, entry: dict, segment: dict, heatmap: bool) -> Image.Image:
    base = fit(image)
    index, cells = segment_cells(frame, base.size, segment)
    kept = set(entry["kept"])
    shade = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(shade)
    scores = entry.get("scores")
    if heatmap and scores:
        values = np.asarray([scores[i] for i in index], dtype=float)
        span = values.max() - values.min()
        values = (values - values.min()) / span if span > 0 else np.zeros_like(values)
        for value, cell in zip(values, cells):
            draw.rectangle(cell, fill=(*_heat(value), 120))
    else:
        cell_of = {token: cell for token, cell in zip(index, cells)}
        for token, cell in cell_of.items():
            if token not in kept:
                draw.rectangle(cell, fill=(20, 20, 30, 165))
        for g, group in enumerate(entry.get("groups", [])):
            colour = tuple(int(v * 255) for v in colorsys.hsv_to_rgb((g * 0.618) % 1.0, 0.8, 1.0))
            for token in group:
                if token in cell_of:
                    draw.rectangle(cell_of[token], fill=(*colour, 110))
    for token, cell in zip(index, cells):
        draw.rectangle(cell, outline=(*KEPT, 230) if token in kept else (255, 255, 255, 40), width=1)
    return Image.alpha_composite(base.convert("RGBA"), shade).convert("RGB")


def draw_boxes(image: Image.Image, size: tuple[int, int], predicted: list, reference) -> Image.Image:
    """Reference box (green) and predicted boxes (red), given in pixels of the upload of `size`."""
    scale = image.width / size[0]
    draw = ImageDraw.Draw(image)
    if reference:
        draw.rectangle([v * scale for v in reference], outline=REF, width=3)
    for box in predicted:
        draw.rectangle([v * scale for v in box], outline=PRED, width=3)
    return image


def panel_image(images: list[Image.Image], summaries: list[dict], result: dict, reference=None,
                heatmap: bool = False) -> Image.Image:
    """Every image of the request side by side, with this method's overlay, boxes and kept-per-row strip."""
    if not_applicable(result):  # nothing ran: the first image, greyed out (the caption says why)
        return Image.blend(fit(images[0]), Image.new("RGB", fit(images[0]).size, (235, 235, 235)), 0.8)
    tiles = []
    for i, (img, summary, entry) in enumerate(zip(images, summaries, result["images"])):
        tile = overlay(img, summary, entry, heatmap)
        boxes = [b["box"] for b in result.get("boxes", []) if b["image"] == i]
        tile = draw_boxes(tile, (summary["width"], summary["height"]), boxes, reference if i == 0 else None)
        tiles.append(with_row_histograms(tile, summary, entry))
    return hstack(tiles)


def hstack(tiles: list[Image.Image], gap: int = 6, bg=(255, 255, 255)) -> Image.Image:
    out = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), max(t.height for t in tiles)), bg)
    x = 0
    for tile in tiles:
        out.paste(tile, (x, 0))
        x += tile.width + gap
    return out


def vstack(tiles: list[Image.Image], gap: int = 4, bg=(255, 255, 255)) -> Image.Image:
    out = Image.new("RGB", (max(t.width for t in tiles), sum(t.height for t in tiles) + gap * (len(tiles) - 1)), bg)
    y = 0
    for tile in tiles:
        out.paste(tile, (0, y))
        y += tile.height + gap
    return out


def ious(result: dict, reference) -> list[float]:
    return [round(iou(b["box"], reference), 3) for b in result.get("boxes", []) if b["image"] == 0] if reference else []


def not_applicable(result: dict) -> bool:
    return result.get("status") == "not_applicable"


def caption(result: dict, reference=None) -> str:
    """Markdown under a panel: answer, boxes with IoU, a timing line with the budget convention; says when the
    answer is stale, or why the method does not apply to this model."""
    if not_applicable(result):
        return f"**{result['label']}**  \nNot applicable: {result['reason']}"
    t, tok, flops = result["timings"], result["tokens"], result["flops"]
    kept = sum(len(e["kept"]) + len(e.get("groups", [])) for e in result["images"])
    total = sum(e["image_tokens"] for e in result["images"])
    cached = " · *cached*" if result.get("cached") else ""
    lines = [f"**{result['label']}**{cached}", f"Answer: `{result['answer'] or '(empty)'}`"]
    if result.get("stale"):
        lines.append(f"⚠ {result['stale']}")
    scores = ious(result, reference)
    if scores:
        lines.append("IoU with reference: " + ", ".join(f"{s:.2f}" for s in scores))
    elif reference:
        lines.append("No box in the answer (IoU 0).")
    lines.append(f"kept {kept}/{total} · prefill {t['prefill_ms']:.1f} ms · decode {t['decode_ms_per_token']:.1f} "
                 f"ms/tok · scoring {t['scoring_ms']:.1f} ms · FLOPs {flops['ratio_to_vanilla']:.0%}"
                 f" · layer-avg {tok['layer_averaged']:g}")
    per_cut = " → ".join(f"{c['image_tokens']}@L{c['layer']}" for c in tok.get("per_cut", []))
    lines.append(f"budget: {result.get('convention', 'final')}" + (f" · after each cut: {per_cut}" if per_cut else ""))
    if result.get("ranking"):
        lines.append(f"LLaVA-NeXT ranking: {result['ranking']}")
    return "  \n".join(lines)


def table_rows(payload: dict) -> list[list]:
    rows = []
    for r in payload["results"]:
        if not_applicable(r):
            rows.append([r["method"], r.get("convention"), *[None] * (len(TABLE_HEADERS) - 4), "not applicable",
                         r["reason"]])
            continue
        t, tok, f = r["timings"], r["tokens"], r["flops"]
        name = r["method"] + (" (cached)" if r.get("cached") else "")
        rows.append([name, r.get("convention", "final"), t["prefill_ms"], t["decode_ms_per_token"], t["scoring_ms"],
                     round(r["kv_cache_bytes"] / 2 ** 20, 3), round(f["prefill"] / 1e9, 4),
                     round(100 * f["ratio_to_vanilla"], 1), tok["kept_at_layer"], tok["layer_averaged"],
                     f"{r['device']} {r['dtype']} {r['attention']} ×{r['threads']}", r["answer"]])
    return rows


def to_csv(payload: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(TABLE_HEADERS)
    writer.writerows(table_rows(payload))
    return buf.getvalue()


def chart(payload: dict) -> Image.Image:
    """Bars per method: prefill latency and FLOPs, both relative to vanilla (or to the slowest method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in payload["results"] if not not_applicable(r)]
    if not results:
        return None
    ref = next((r for r in results if r["method"] == "vanilla"), None)
    base = ref["timings"]["prefill_ms"] if ref else max(r["timings"]["prefill_ms"] for r in results)
    latency = [r["timings"]["prefill_ms"] / base if base else 0 for r in results]
    flops = [r["flops"]["ratio_to_vanilla"] for r in results]
    x = np.arange(len(results))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(results) + 2), 3.2), dpi=100)
    ax.bar(x - 0.2, latency, 0.4, label="prefill latency" + (" / vanilla" if ref else " / slowest"))
    ax.bar(x + 0.2, flops, 0.4, label="FLOPs / vanilla")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, [r["method"] for r in results], rotation=20, ha="right")
    ax.set_ylabel("ratio")
    ax.set_ylim(0, max(latency + flops + [1.0]) * 1.1)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9))  # room for the image label Gradio draws on top
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def grid_png(panels: list[tuple[Image.Image, str]], columns: int = 3) -> Image.Image:
    """All panels with a title line each, as one image for download."""
    if not panels:
        return Image.new("RGB", (10, 10), "white")
    cw = max(p.width for p, _ in panels)
    ch = max(p.height for p, _ in panels) + 22
    rows = (len(panels) + columns - 1) // columns
    out = Image.new("RGB", (cw * min(columns, len(panels)), ch * rows), "white")
    draw = ImageDraw.Draw(out)
    for i, (img, title) in enumerate(panels):
        x, y = (i % columns) * cw, (i // columns) * ch
        draw.text((x + 4, y + 4), title[:60], fill=(0, 0, 0))
        out.paste(img, (x, y + 22))
    return out


def shade_tokens(image: Image.Image, summary: dict, entry: dict, fill) -> Image.Image:
    """Every grid of one image, each token's cell painted with fill(token) (an RGBA tuple, or None to leave
    it clear); the grids side by side."""
    tiles = []
    for frame, segment in segments(summary, entry):
        base = fit(image)
        shade = Image.new("RGBA", base.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(shade)
        for token, cell in zip(*segment_cells(frame, base.size, segment)):
            colour = fill(token)
            if colour is not None:
                draw.rectangle(cell, fill=colour)
        tiles.append(Image.alpha_composite(base.convert("RGBA"), shade).convert("RGB"))
    return hstack(tiles, gap=8)
