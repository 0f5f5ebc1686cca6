"""The result cache's safety rules and the pure drawing/re-selection helpers (no server)."""
from __future__ import annotations

import os
import pickle
import sqlite3

import numpy as np
import pytest
from PIL import Image

from explorer.ui import render
from explorer.ui.cache import ResultCache, request_key
from explorer.ui.reselect import reselect


def test_cache_roundtrip_private_dir_and_keys(tmp_path):
    cache = ResultCache(tmp_path / "c")
    assert cache.enabled and (os.stat(tmp_path / "c").st_mode & 0o777) == 0o700
    key = request_key([b"img"], "q", "m", "r", [{"method": "fastv"}], 8)
    assert len(key) == 64 and key != request_key([b"img"], "q2", "m", "r", [{"method": "fastv"}], 8)
    assert key != request_key([b"img"], "q", "m", "r2", [{"method": "fastv"}], 8)
    cache.put(key, {"a": [1, 2]})
    assert cache.get(key) == {"a": [1, 2]}
    assert cache.get("0" * 64) is None


def test_cache_refuses_pickled_rows(tmp_path):
    """A value planted with pickle mode (the CVE-2025-69872 vector) is never unpickled."""
    cache = ResultCache(tmp_path / "c")
    key = "f" * 64
    cache.put(key, {"ok": True})
    db = sqlite3.connect(tmp_path / "c" / "cache.db")
    db.execute("UPDATE Cache SET mode = 4, value = ? WHERE key = ?", (pickle.dumps({"evil": 1}), key))
    db.commit()
    db.close()
    assert cache.get(key) is None


def test_broken_cache_directory_never_breaks(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = ResultCache(blocker / "sub")
    assert not cache.enabled
    cache.put("k", {"x": 1})
    assert cache.get("k") is None
    with cache.lock:
        pass


def _payload():
    scores = [float(i) for i in range(16)]
    entry = {"grid": [4, 4], "image_tokens": 16, "kept": [12, 13, 14, 15], "scores": scores,
             "score_parts": {"importance": scores, "uniqueness": scores[::-1]}}
    result = {"method": "alpha", "label": "α", "config": {"method": "alpha", "keep": 4, "ratio": None, "layer": 2,
                                                          "alpha": 1.0},
              "images": [entry], "answer": "[0.10, 0.10, 0.50, 0.50]",
              "boxes": [{"image": 0, "box": [10, 10, 50, 50], "raw": [0.1, 0.1, 0.5, 0.5]}],
              "tokens": {"image_total": 16, "kept_at_layer": 4, "layer_averaged": 10.0},
              "timings": {"prefill_ms": 1.0, "decode_ms_per_token": 1.0, "scoring_ms": 0.1},
              "flops": {"prefill": 1e6, "ratio_to_vanilla": 0.5}, "kv_cache_bytes": 1024, "device": "cpu",
              "dtype": "float32", "attention": "sdpa", "threads": 1}
    return {"images": [{"width": 100, "height": 100, "frame": [0, 0, 1, 1]}], "results": [result]}


def test_reselect_alpha_and_back():
    payload = _payload()
    zero = reselect(payload, 0.0, 4, None)
    assert zero["results"][0]["images"][0]["kept"] == [0, 1, 2, 3] and "stale" in zero["results"][0]
    back = reselect(zero, 1.0, 4, None)
    assert back["results"][0]["images"][0]["kept"] == [12, 13, 14, 15] and "stale" not in back["results"][0]
    assert back["results"][0] == payload["results"][0]
    half = reselect(payload, 1.0, None, 0.5)
    assert half["results"][0]["images"][0]["kept"] == list(range(8, 16))


def test_render_panel_caption_table_chart():
    payload = _payload()
    result = payload["results"][0]
    img = render.panel_image([Image.new("RGB", (100, 100), "white")], payload["images"], result, [10, 10, 50, 60])
    assert img.size == (render.SHOW + 2 + render.HIST_W, render.SHOW), "grid, then the kept-per-row strip"
    assert img.getpixel((5, 5))[0] < 120, "pruned cell dimmed"
    assert img.getpixel((render.SHOW - 40, render.SHOW - 40)) == (255, 255, 255), "kept cell clear"
    heat = render.panel_image([Image.new("RGB", (100, 100), "white")], payload["images"], result, heatmap=True)
    assert heat.getpixel((5, 5)) != heat.getpixel((render.SHOW - 40, render.SHOW - 40))
    text = render.caption(result, [10, 10, 50, 60])
    assert "IoU with reference: 0.80" in text and "kept 4/16" in text
    assert render.table_rows(payload)[0][0] == "alpha" and "prefill ms" in render.to_csv(payload)
    assert render.chart(payload).width > 100
    assert render.grid_png([(img, "alpha")]).height == img.height + 22


@pytest.mark.parametrize("text, box", [("", None), ("1,2,3,4", [1, 2, 3, 4]), ("[0, 0, 10.5, 20]", [0, 0, 10.5, 20])])
def test_parse_reference(text, box):
    from explorer.ui.inputs import parse_reference

    assert parse_reference(text) == box


def test_llava_next_overlay_draws_base_and_highres_grids(engine, loaded):
    """A NeXT image has two grids; both are drawn, and a kept high-res cell is left clear."""
    from explorer.methods import make
    lm = loaded["llava_next"]
    image = Image.fromarray((np.random.RandomState(2).rand(32, 64, 3) * 255).astype("uint8"))
    prep = engine.prepare(lm, [image], "what is the colour ?")
    result = engine.run(lm, prep, make("fastv", keep=10), max_new_tokens=1)
    entry = result["images"][0]
    assert [s["name"] for s in entry["segments"]] == ["base", "highres"]
    summary = {"frame": [0, 0, 1, 1]}
    drawn = render.overlay(image, summary, entry)
    single = render.fit(image)
    assert drawn.width == 2 * single.width + 8 and drawn.height == single.height
    kept_all = dict(entry, kept=list(range(entry["image_tokens"])))
    dark = dict(entry, kept=[])
    assert np.asarray(render.overlay(image, summary, kept_all)).mean() > np.asarray(
        render.overlay(image, summary, dark)).mean() + 20


def test_not_applicable_result_renders_its_sentence():
    """A method the model cannot run: its panel is the greyed image with the sentence, its table row says why,
    the chart and re-selection leave it out; a run result states its budget convention."""
    payload = _payload()
    payload["results"][0]["convention"] = "paper"
    reason = "VisionZip (dominant + contextual) does not apply to this model: Qwen2-VL's vision tower has no [CLS]."
    payload["results"].append({"method": "visionzip", "label": "VisionZip", "status": "not_applicable",
                               "reason": reason, "convention": "paper", "config": {"method": "visionzip"},
                               "images": [], "answer": None})
    skipped = payload["results"][1]
    assert render.caption(skipped) == f"**VisionZip**  \nNot applicable: {reason}"
    assert "budget: paper" in render.caption(payload["results"][0])
    rows = render.table_rows(payload)
    assert rows[0][:2] == ["alpha", "paper"] and rows[1][0] == "visionzip" and rows[1][-1] == reason
    assert all(len(row) == len(render.TABLE_HEADERS) for row in rows)
    assert render.panel_image([Image.new("RGB", (100, 100), "white")], payload["images"], skipped).size == \
        (render.SHOW, render.SHOW)
    assert render.chart(payload).width > 100
    assert reselect(payload, 0.0, 4, None)["results"][1] == skipped
