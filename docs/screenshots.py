"""Retake the README's screenshots on the embedded model, as a visitor would make them.

    python docs/screenshots.py [--port 7861] [--out docs]

Starts the app as the README does (`python app.py`, embedded toy model, no results cache) and drives headless
Chromium (Debian's, through Playwright): a toy grounding example with six methods at 64 of 576 tokens
(ui-screenshot.png: inputs and the side-by-side panels), the breaking-points ladder of FastV, Window FastV and
the α blend on the letter example (ui-breaking-points.png) and one answer word's attention
(ui-answer-attention.png). Not a test: tests/ui/test_browser.py checks the same page on a tiny model.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
SIX = ["Vanilla (no pruning)", "Random", "Pooling (max-norm per window)", "FastV (last-token attention)",
       "Window FastV (even quota per window)", "SparseVLM (text raters, progressive, recycling)"]
LADDER = ["FastV (last-token attention)", "Window FastV (even quota per window)",
          "α blend (importance + uniqueness)"]


def start_app(port: int) -> subprocess.Popen:
    """`python app.py` on `port`; returns once the page answers."""
    app = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--no-cache"], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            if httpx.get(f"http://127.0.0.1:{port}", timeout=5).status_code == 200:
                return app
        except httpx.HTTPError:
            pass
        time.sleep(1)
    app.kill()
    sys.exit("error: the app did not answer within 4 minutes")


def choose(page, labels: list[str]) -> None:
    """Exactly `labels` checked in the method list."""
    boxes = page.locator("#methods input[type=checkbox]")
    for i in range(boxes.count()):
        if boxes.nth(i).is_checked():
            boxes.nth(i).uncheck()
    for label in labels:
        page.locator("#methods").get_by_label(label, exact=True).check()


def compare(page, example: str, labels: list[str], keep: int) -> None:
    page.locator("#examples, .gradio-container").get_by_text(example, exact=True).first.click()
    page.wait_for_selector("#input-image img")
    choose(page, labels)
    page.locator("#keep input").fill(str(keep))
    page.locator("#run").click()
    page.wait_for_function(f"document.querySelectorAll('.method-panel img').length >= {len(labels)}",
                           timeout=300_000)
    page.wait_for_timeout(1500)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=7861)
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--url", default=None, help="an app already running (default: start one on --port)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    app = None if args.url else start_app(args.port)
    url = args.url or f"http://127.0.0.1:{args.port}"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.wait_for_selector("#run")
            try:
                shoot(page, out)
            except Exception:
                page.screenshot(path=str(out / "screenshots-failed.png"), full_page=True)
                raise
            browser.close()
    finally:
        if app is not None:
            app.terminate()
            app.wait(timeout=30)
    print("wrote", ", ".join(str(out / n) for n in ("ui-screenshot.png", "ui-breaking-points.png",
                                                     "ui-answer-attention.png")))


def shoot(page, out: Path) -> None:
    compare(page, "toy_grounding_41", SIX, 64)
    bottom = page.locator(".method-panel:visible").last.evaluate(
        "p => p.getBoundingClientRect().bottom + window.scrollY")  # page coordinates
    page.screenshot(path=str(out / "ui-screenshot.png"), full_page=True,
                    clip={"x": 0, "y": 0, "width": 1400, "height": bottom + 20})
    print("compare view taken", flush=True)
    compare(page, "toy_letter_3", LADDER, 64)
    page.locator("#breaking-budgets textarea, #breaking-budgets input").first.fill("")
    page.locator("#breaking-run").click()
    page.wait_for_function("[...document.querySelectorAll('#breaking-plot img')].some(i => i.complete && "
                           "i.naturalWidth > 300)", timeout=600_000)
    page.wait_for_timeout(1000)
    page.locator("#breaking").screenshot(path=str(out / "ui-breaking-points.png"))
    print("breaking points taken", flush=True)
    words = page.locator("#attn-words label")
    words.first.wait_for()
    words.first.click()
    page.wait_for_function("[...document.querySelectorAll('#attn-image img')].some(i => i.complete && "
                           "i.naturalWidth > 400)", timeout=300_000)
    page.wait_for_timeout(1000)
    page.locator("#attention").screenshot(path=str(out / "ui-answer-attention.png"))


if __name__ == "__main__":
    main()
