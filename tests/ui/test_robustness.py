"""A hostile visitor against a real server: every bad input gets one line, and the server answers next."""
from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from explorer.testing import EXAMPLES, ROOT

GOOD = dict(prompt="what is the colour ?", methods=["fastv"], keep=8, layer=2, alpha=0.5)


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad (and odd but valid) uploads, written once."""
    d = tmp_path_factory.mktemp("uploads")
    (d / "notes.png").write_text("this is not a picture")
    Image.new("L", (2, 20000)).save(d / "thin.png")
    good = (EXAMPLES / "astronaut.jpg").read_bytes()
    (d / "cut.jpg").write_bytes(good[: len(good) // 50])
    png = open_png_header(100_000, 100_000)
    (d / "bomb.png").write_bytes(png)
    (d / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    (d / "empty.png").write_bytes(b"")
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16) * 16).reshape(64, 64)).save(d / "deep16.png")
    return d


def open_png_header(width: int, height: int) -> bytes:
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def compare(client, **kw):
    args = dict(image=handle_file(str(EXAMPLES / "astronaut.jpg")), **GOOD)
    args.update(kw)
    return client.predict(**args, api_name="/compare")


def assert_one_line(exc: AppError, *expected: str) -> str:
    text = str(exc)
    assert text.strip() and "\n" not in text.strip(), text
    for leak in ("Traceback", str(ROOT), "/tmp/", "gradio/", "site-packages", "Overflow when", "TypeError"):
        assert leak not in text, f"{leak!r} leaked in {text!r}"
    assert any(e.lower() in text.lower() for e in expected), text
    return text


BAD_COMPARE = [
    (dict(prompt="  "), "prompt is empty"),
    (dict(prompt="why? " * 1000), "prompt is too long"),
    (dict(methods=[]), "at least one method"),
    (dict(methods=["x" * 300]), "unknown method", "not in the list"),
    (dict(methods=[123]), "by name", "not in the list"),
    (dict(keep="abc"), "budget must be a number", "number"),
    (dict(keep=10**30), "between 1 and"),
    (dict(keep=-5), "whole number >= 1"),
    (dict(keep=0, budget_unit="% of tokens"), "(0, 100]"),
    (dict(keep=1000), "more than the image"),
    (dict(layer=-1), "between 0", "less than minimum"),
    (dict(layer=10**20), "between 0"),
    (dict(layer=99), "out of range"),
    (dict(alpha=5), "between 0 and 1", "greater than maximum"),
    (dict(seed=10**30), "seed must be between"),
    (dict(seed=-1), "seed must be between"),
    (dict(max_new_tokens=10**6), "max new tokens must be between", "greater than maximum"),
    (dict(max_new_tokens=0), "max new tokens must be between", "less than minimum"),
    (dict(model="/etc"), "not offered here"),
    (dict(model="../../assets//toy-llava"), "not offered here"),
    (dict(model="no-such-org/no-such-model"), "not offered here"),
    (dict(reference="1, 2, 3"), "reference box must be"),
    (dict(reference="nan, nan, nan, nan"), "reference box must be"),
    (dict(knobs="{oops"), "must be JSON"),
    (dict(knobs="[" * 100_000), "must be JSON", "too long"),
    (dict(knobs='{"fastv": {"nope": 1}}'), "has no knob"),
    (dict(knobs='{"fastv_window": {"windows": "two"}}'), "whole number"),
    (dict(knobs='{"random": {"seed": 1e30}}', methods=["random"]), "seed must be between"),
    (dict(knobs='{"sparsevlm": {"layers": [2, "x"]}}', methods=["sparsevlm"]), "whole number"),
    (dict(knobs='{"fastv": 3}'), "object of knobs"),
    (dict(knobs='{"nosuch": {}}'), "unknown method"),
    ("notes.png", "not a readable image"),
    ("thin.png", "too elongated"),
    ("cut.jpg", "not a readable image"),
    ("bomb.png", "too large", "not a readable image"),
    ("drawing.svg", "not a readable image", "not supported"),
    ("empty.png", "not a readable image", "empty"),
    ("nine", "at most 8 images"),
    ("server-path", "must be an uploaded image file"),
    ("server-path-more", "must be uploaded image files"),
]


@pytest.mark.parametrize("case", BAD_COMPARE, ids=[str(i) for i in range(len(BAD_COMPARE))])
def test_bad_compare_requests_get_one_line_and_the_server_answers_next(client, files, case):
    kw, *expected = case
    if kw == "nine":
        kw = dict(more_images=[handle_file(str(EXAMPLES / "astronaut.jpg"))] * 8)
    elif kw == "server-path":
        kw = dict(image=str(ROOT / "README.md"))
    elif kw == "server-path-more":
        kw = dict(more_images=[str(ROOT / "README.md")])
    elif isinstance(kw, str):
        kw = dict(image=handle_file(str(files / kw)))
    with pytest.raises(AppError) as exc:
        compare(client, **kw)
    assert_one_line(exc.value, *expected)
    payload, _ = compare(client)
    assert payload["results"][0]["method"] == "fastv"


def test_repeated_methods_run_once_and_odd_valid_images_work(client, files):
    payload, _ = compare(client, methods=["vanilla"] * 1000 + ["fastv"])
    assert [r["method"] for r in payload["results"]] == ["vanilla", "fastv"]
    payload, _ = compare(client, image=handle_file(str(files / "deep16.png")))
    assert payload["images"][0]["width"] == 64


BAD_ANALYSIS = [
    (dict(keeps=",".join(str(k) for k in range(1, 21))), "at most 8 budgets"),
    (dict(alphas=",".join(str(a / 20) for a in range(12))), "at most 11 α values"),
    (dict(alphas="0.5,7"), "between 0 and 1"),
    (dict(n=10**9), "samples must be between"),
    (dict(n=0), "samples must be between"),
    (dict(task="nope"), "unknown task", "not in the list"),
    (dict(methods=["vanilla"] * 1000 + ["random", "fastv", "pooling", "fastv_window", "alpha", "dart"], n=60,
          keeps="144,128,96,64,48,32,16,8", alphas="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1"), "model runs"),
    (dict(keeps="eight"), "comma-separated"),
    (dict(model="/etc"), "not offered here"),
]


@pytest.mark.parametrize("case", BAD_ANALYSIS, ids=[str(i) for i in range(len(BAD_ANALYSIS))])
def test_analysis_over_the_bounds_is_refused_before_any_model_work(client, server, case):
    kw, *expected = case
    runs = server[1].runs
    args = dict(task="pope", methods=["random"], keeps="8", n=2, alphas="", model=None) | kw
    if args["model"] is None:
        args.pop("model")
    with pytest.raises(AppError) as exc:
        client.predict(**args, api_name="/analysis")
    assert_one_line(exc.value, *expected)
    assert server[1].runs == runs, "refused before any model run"


@pytest.fixture(scope="module")
def private_server(tiny_model):
    """A private box (free-form model names), same engine code."""
    from explorer.engine import Engine
    from explorer.ui import build_demo, launch_kwargs
    from explorer.ui.layout import allow_list

    engine = Engine(threads=1)
    demo = build_demo(engine, tiny_model, None, allow_list(tiny_model, free_form=True))
    demo.queue(default_concurrency_limit=2)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True,
                            **launch_kwargs())
    yield url, engine
    demo.close()


def test_eight_aliases_of_one_folder_load_one_model(private_server, tiny_model, tmp_path):
    url, engine = private_server
    parent, name = os.path.split(tiny_model)
    (tmp_path / "alias").symlink_to(tiny_model)
    aliases = [tiny_model, tiny_model + "/", f"{parent}//{name}", f"{parent}/./{name}", f"{parent}/{name}/.",
               f"{parent}/../{os.path.basename(parent)}/{name}", str(tmp_path / "alias"), f"{tiny_model}//"]
    client = Client(url, verbose=False)
    for alias in aliases:
        payload, _ = compare(client, model=alias)
        assert payload["results"][0]["method"] == "fastv"
    assert engine.loaded_keys() == [(os.path.realpath(tiny_model), None)]
    with pytest.raises(AppError, match="folder not found") as exc:  # a private box: the visitor's own text
        compare(client, model=str(tmp_path / "missing"))
    assert "\n" not in str(exc.value)


@pytest.mark.slow
def test_a_cached_answer_does_not_wait_for_a_model_run(client, server):
    """Cache look-ups happen outside the model's lock and queue: a hit returns while a long run is busy."""
    import threading

    compare(client)  # cached from now on
    counter, done = server[1], {}
    runs = counter.runs

    def long_run():
        busy = Client(server[0], verbose=False)
        compare(busy, prompt=f"a long question {id(done)} ?", methods=["vanilla", "fastv", "random", "pooling",
                "fastv_window", "alpha", "fastv_reverse", "fastv_vis"], max_new_tokens=120)
        done["long"] = True

    worker = threading.Thread(target=long_run)
    worker.start()
    while counter.runs == runs and worker.is_alive():  # wait until the model is at work
        threading.Event().wait(0.05)
    payload, status = compare(client)
    still_busy = worker.is_alive()
    worker.join()
    assert payload["cached"] is True and "cache" in status
    assert still_busy and "long" in done, "the cached answer came back while the model run was in progress"


@pytest.mark.slow
def test_a_cancelled_analysis_stops_its_worker_and_frees_the_queue(client, server, tiny_model):
    import time

    from explorer.model_ref import public_name

    counter, model = server[1], public_name(tiny_model)
    runs = counter.runs
    job = client.submit(task="pope", methods=["vanilla", "random", "pooling", "fastv", "fastv_window"],
                        keeps="8,4", n=60, alphas="", model=model, api_name="/analysis")  # 540 model runs
    deadline = time.monotonic() + 120
    while counter.runs < runs + 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counter.runs >= runs + 3, "the long analysis started"
    job.cancel()
    cancelled = time.monotonic()
    time.sleep(5)  # the worker notices within ABANDONED_S (3 s) that nobody takes its progress lines
    settled = counter.runs
    time.sleep(3)
    assert counter.runs - settled <= 1, "the sweep's worker stopped after the run in progress"
    assert settled - runs < 540
    report, _ = client.predict(task="pope", methods=["random"], keeps="4", n=1, alphas="", model=model,
                               api_name="/analysis")
    assert "random" in report and time.monotonic() - cancelled < 30, "the queue answers the next analysis"


def test_a_phone_photo_reaches_the_model_upright(client, tmp_path):
    """EXIF orientation 6 (a phone held upright): the model sees the portrait picture the browser shows."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (96, 48), (200, 30, 30)).save(tmp_path / "phone.jpg", exif=exif.tobytes())
    payload, _ = compare(client, image=handle_file(str(tmp_path / "phone.jpg")))
    assert (payload["images"][0]["width"], payload["images"][0]["height"]) == (48, 96)
