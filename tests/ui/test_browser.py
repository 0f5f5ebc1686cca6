"""A real headless Chromium (Debian's, via Playwright) drives the page like a person would."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from explorer.testing import EXAMPLES, ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-dev-shm-usage"]
# The tests save screenshots (of the tiny test model) in their tmp dirs; the README's are taken on the embedded
# model by docs/screenshots.py.
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")]


@pytest.fixture(scope="module")
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.errors, page.failed = [], []
        page.on("console", lambda msg: msg.type == "error" and page.errors.append(msg.text))
        page.on("response", lambda r: r.status >= 400 and page.failed.append(f"{r.status} {r.url}"))
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.set_default_timeout(60_000)
        page.goto(server[0])
        page.wait_for_selector("#run")
        yield page
        browser.close()


def alpha_panel_src(page) -> str:
    panel = page.locator(".method-panel:visible").filter(has_text="α blend")
    return panel.locator("img").first.get_attribute("src")


def settle(page) -> None:
    """Wait until no component shows Gradio's pending/progress state."""
    page.wait_for_timeout(300)
    page.wait_for_function("document.querySelectorAll('.pending, .generating, .eta-bar').length === 0")
    page.wait_for_timeout(300)


def wait_alpha_src(page, ok, timeout_s: float = 20) -> str:
    """Poll the α panel's image until `ok(src)`; returns that src."""
    for _ in range(int(timeout_s * 10)):
        src = alpha_panel_src(page)
        if src and ok(src):
            return src
        page.wait_for_timeout(100)
    raise AssertionError(f"the α panel did not change (src {src})")


def test_upload_compare_three_methods_then_move_alpha(page, tmp_path):
    page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLES / "astronaut.jpg"))
    page.wait_for_selector("#input-image img")
    page.locator("#prompt textarea").fill("what is the colour ?")
    for label in ("Vanilla (no pruning)", "Window FastV (even quota per window)"):
        page.locator("#methods").get_by_label(label, exact=True).uncheck()
    for label in ("Random", "FastV (last-token attention)"):
        page.locator("#methods").get_by_label(label, exact=True).check()
    page.locator("#keep input").fill("8")
    page.locator("#run").click()
    page.wait_for_function("document.querySelectorAll('.method-panel img').length >= 3")
    panels = page.locator(".method-panel:visible")
    panels.nth(2).locator("img").wait_for()
    assert panels.count() == 3
    text = " ".join(panels.all_inner_texts())
    for label in ("FastV", "Random", "α blend"):
        assert label in text
    before = alpha_panel_src(page)
    slider = page.locator("#alpha input[type=range]")
    slider.fill("0")
    slider.dispatch_event("pointerup")
    page.wait_for_function(
        "(before) => [...document.querySelectorAll('.method-panel')].some(p => p.innerText.includes('re-selected')"
        " && p.querySelector('img') && p.querySelector('img').src !== before)", arg=before)
    assert alpha_panel_src(page) != before
    assert "re-selected" in page.locator(".method-panel:visible").filter(has_text="α blend").inner_text()
    settle(page)
    moved = alpha_panel_src(page)
    number = page.locator("#alpha input[type=number]")  # the slider's number box works too
    number.fill("1")
    number.press("Enter")
    settle(page)
    one = wait_alpha_src(page, lambda src: src != moved)
    heat_box = page.get_by_label("Show score heat map instead of kept/pruned")
    heat_box.check()
    settle(page)
    wait_alpha_src(page, lambda src: src != one)
    heat_box.uncheck()
    settle(page)
    wait_alpha_src(page, lambda src: src == one)
    shot = tmp_path / "ui-screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert not page.errors, page.errors


def ensure_compared(page) -> None:
    """Results on the page (the test above leaves some; run alone, this compares three methods)."""
    if page.locator(".method-panel:visible").count() < 3:
        page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLES / "astronaut.jpg"))
        page.wait_for_selector("#input-image img")
        page.locator("#prompt textarea").fill("what is the colour ?")
        page.locator("#keep input").fill("8")
        page.locator("#run").click()
        page.wait_for_function("document.querySelectorAll('.method-panel img').length >= 3")
    settle(page)


def loaded(page, selector: str) -> int:
    """How many images under `selector` have loaded (naturalWidth > 0)."""
    return page.evaluate(f"[...document.querySelectorAll('{selector} img')].filter(i => i.complete && "
                         "i.naturalWidth > 0).length")


def test_agreement_matrix_and_consensus_appear(page, tmp_path):
    ensure_compared(page)
    page.locator("#agreement-matrix img").wait_for()
    page.locator("#consensus img").wait_for()
    page.wait_for_function("[...document.querySelectorAll('#agreement-matrix img, #consensus img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    assert "Agreement between methods" in page.locator("#agreement").inner_text()
    page.locator("#agreement").screenshot(path=str(tmp_path / "agreement.png"))
    page.locator("#save").click()
    page.wait_for_function("document.querySelectorAll('#downloads a').length >= 3")
    links = page.evaluate("[...document.querySelectorAll('#downloads a')].map(a => a.href.split('/').pop())")
    assert {"results.json", "timings.csv", "panels.png"} <= set(links), links
    assert not page.errors and not page.failed, (page.errors, page.failed)


def test_analysis_report_images_load_without_404s(page, tmp_path):
    page.get_by_role("tab", name="Analysis").click()
    page.locator("#analysis-n input").fill("2")
    page.locator("#analysis-keep textarea, #analysis-keep input").first.fill("8")
    page.locator("#analysis-run").click()
    page.wait_for_function("[...document.querySelectorAll('#analysis-report img')].filter(i => i.complete && "
                           "i.naturalWidth > 0).length === 3", timeout=300_000)
    assert loaded(page, "#analysis-report") == 3
    assert "Avg." in page.locator("#analysis-report").inner_text()
    page.screenshot(path=str(tmp_path / "analysis.png"), full_page=True)
    assert not page.errors and not page.failed, (page.errors, page.failed)


def test_no_server_path_in_the_page(page, tiny_model):
    html = page.content()
    assert str(ROOT) not in html and str(Path(tiny_model).parent) not in html  # view_api: tests/ui/test_views.py


def reference_box(page) -> list[float]:
    text = page.locator("#reference textarea, #reference input").first.input_value()
    return [float(v) for v in text.split(",")] if text.strip() else []


def test_drag_on_the_image_draws_the_reference_box(page):
    page.get_by_role("tab", name="Compare").click()
    if not page.locator("#input-image img").count():
        page.locator("#input-image input[type=file]").set_input_files(str(EXAMPLES / "astronaut.jpg"))
    img = page.locator("#input-image img").first
    img.wait_for()
    page.locator("#reference textarea, #reference input").first.fill("")
    size = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    r = img.bounding_box()
    page.mouse.move(r["x"] + 0.3 * r["width"], r["y"] + 0.3 * r["height"])
    page.mouse.down()
    page.mouse.move(r["x"] + 0.5 * r["width"], r["y"] + 0.5 * r["height"], steps=5)
    assert page.locator("#drag-box").is_visible(), "the box is drawn while dragging"
    page.mouse.move(r["x"] + 0.7 * r["width"], r["y"] + 0.7 * r["height"], steps=5)
    page.mouse.up()
    page.wait_for_timeout(500)
    x1, y1, x2, y2 = reference_box(page)  # one box, not a drag plus a click's corner
    assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1]
    assert abs((x1 + x2) / 2 - size[0] / 2) <= 3 and abs((y1 + y2) / 2 - size[1] / 2) <= 3, "centred like the drag"
    assert x2 - x1 > 0.2 * size[0] and not page.locator("#drag-box").count()
    img.click(position={"x": 0.1 * r["width"], "y": 0.1 * r["height"]})
    page.wait_for_function("document.querySelector('#reference textarea, #reference input').value.split(',')"
                           ".length === 2")
    img.click(position={"x": 0.4 * r["width"], "y": 0.4 * r["height"]})
    page.wait_for_function("document.querySelector('#reference textarea, #reference input').value.split(',')"
                           ".length === 4")
    assert reference_box(page) != [x1, y1, x2, y2], "two clicks still draw a box"
    assert not page.errors and not page.failed, (page.errors, page.failed)


def test_knob_controls_fill_the_json_box(page):
    page.get_by_role("tab", name="Compare").click()
    page.locator("#knob-panel").get_by_text("Method knobs").first.click()
    windows = page.locator("#knob-fastv_window-windows input")
    if not windows.is_visible():
        page.locator("#methods").get_by_label("Window FastV (even quota per window)", exact=True).check()
    windows.fill("2")
    windows.press("Enter")
    page.wait_for_function("document.querySelector('#knobs textarea').value.includes('windows')")
    assert json.loads(page.locator("#knobs textarea").input_value()) == {"fastv_window": {"windows": 2}}
    page.locator("#methods").get_by_label("Window FastV (even quota per window)", exact=True).uncheck()
    windows.wait_for(state="hidden")
    assert not page.errors and not page.failed, (page.errors, page.failed)


def test_breaking_points_plot_and_answer_word_attention(page, tmp_path):
    page.get_by_role("tab", name="Compare").click()
    ensure_compared(page)
    page.locator("#breaking-budgets textarea, #breaking-budgets input").first.fill("36, 9, 2")
    page.locator("#breaking-run").click()
    page.wait_for_function("[...document.querySelectorAll('#breaking-plot img')].some(i => i.complete && "
                           "i.naturalWidth > 300)", timeout=300_000)
    assert "agrees down to" in page.locator("#breaking-summary").inner_text()
    words = page.locator("#attn-words label")
    words.first.wait_for()
    assert words.count() >= 1
    words.nth(min(1, words.count() - 1)).click()
    page.wait_for_function("[...document.querySelectorAll('#attn-image img')].some(i => i.complete && "
                           "i.naturalWidth > 400)", timeout=120_000)
    assert "Answer-token attention" in page.locator("#attention").inner_text()
    page.locator("#attention").screenshot(path=str(tmp_path / "attention.png"))
    page.locator("#breaking").screenshot(path=str(tmp_path / "breaking.png"))
    assert not page.errors and not page.failed, (page.errors, page.failed)


def test_a_shared_link_reopens_inputs_and_panels(page):
    page.get_by_role("tab", name="Compare").click()
    ensure_compared(page)
    shown = page.locator(".method-panel:visible").count()
    page.locator("#share").click()
    page.wait_for_function("document.querySelector('#share-link textarea, #share-link input').value.includes("
                           "'share=')")
    link = page.locator("#share-link textarea, #share-link input").first.input_value()
    context = page.context.browser.new_context(viewport={"width": 1400, "height": 1000})  # a visitor with the link
    other = context.new_page()
    errors = []
    other.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    other.goto(link)
    other.wait_for_function(f"document.querySelectorAll('.method-panel img').length >= {shown}", timeout=120_000)
    assert other.locator(".method-panel:visible").count() == shown
    assert other.locator("#prompt textarea").input_value() == page.locator("#prompt textarea").input_value()
    assert other.locator("#input-image img").count() and "Reopened shared" in other.locator("#status").inner_text()
    context.close()
    assert not errors and not page.errors and not page.failed, (errors, page.errors, page.failed)


def test_four_panels_are_one_size(page):
    """With 4 methods in the 3-column grid the last panel keeps its size (it used to span the whole width)."""
    page.get_by_role("tab", name="Compare").click()
    ensure_compared(page)
    methods = page.locator("#methods")
    for box in methods.locator("input[type=checkbox]").all():
        box.uncheck()
    for label in ("Vanilla (no pruning)", "Random", "FastV (last-token attention)", "Pooling (max-norm per window)"):
        methods.get_by_label(label, exact=True).check()
    page.locator("#run").click()
    page.wait_for_function("[...document.querySelectorAll('.method-panel')].filter(p => p.offsetParent && "
                           "p.querySelector('img')).length >= 4", timeout=120_000)
    settle(page)
    boxes = [b for b in (p.bounding_box() for p in page.locator(".method-panel:visible").all()) if b]
    assert len(boxes) == 4, boxes
    widths = {round(b["width"]) for b in boxes}
    assert max(widths) - min(widths) <= 2, boxes
    assert not page.errors and not page.failed, (page.errors, page.failed)
