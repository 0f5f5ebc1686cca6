"""The named API over a real server, driven by gradio_client."""
from __future__ import annotations

import pytest
from PIL import Image
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from explorer.testing import EXAMPLES

RESULT_KEYS = {"method", "label", "config", "images", "answer", "boxes", "tokens", "timings", "kv_cache_bytes",
               "flops", "positions", "device", "dtype", "attention", "threads"}
METHODS = ["vanilla", "fastv", "alpha", "pooling", "random"]


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


def compare(client, **kw):
    args = dict(image=handle_file(str(EXAMPLES / "astronaut.jpg")), prompt="what is the colour ?", methods=METHODS,
                keep=8, layer=2, alpha=0.5)
    args.update(kw)
    return client.predict(**args, api_name="/compare")


def test_compare_returns_every_method_in_cli_schema_then_cached(client, server):
    counter = server[1]
    first_time = "which colour is the suit ? (asked by this test only)"  # the server is shared by the session
    payload, status = compare(client, prompt=first_time)
    assert {"model", "revision", "cached", "prompt", "images", "results"} <= payload.keys()
    assert payload["cached"] is False and "computed" in status
    assert [r["method"] for r in payload["results"]] == METHODS
    for r in payload["results"]:
        assert RESULT_KEYS <= r.keys()
        entry = r["images"][0]
        assert entry["grid"] == [6, 6] and entry["image_tokens"] == 36
        assert len(entry["kept"]) == (36 if r["method"] == "vanilla" else 8)
    img = payload["images"][0]
    assert img["name"] == "astronaut.jpg" and len(img["frame"]) == 4
    runs = counter.runs
    again, status = compare(client, prompt=first_time)
    assert again["cached"] is True and "cache" in status
    assert counter.runs == runs, "a repeated request must not run the model"
    assert [r["images"] for r in again["results"]] == [r["images"] for r in payload["results"]]


def test_alpha_reselect_changes_kept_without_model_call(client, server):
    counter = server[1]
    payload, _ = compare(client, methods=["fastv", "alpha", "random"])
    runs = counter.runs
    one = client.predict(payload, alpha=1.0, keep=8, budget_unit="tokens", api_name="/reselect")
    zero = client.predict(payload, alpha=0.0, keep=8, budget_unit="tokens", api_name="/reselect")
    assert counter.runs == runs, "re-selection must not call the model"
    fastv, alpha1, random1 = one["results"]
    alpha0 = zero["results"][1]
    assert alpha1["images"][0]["kept"] == fastv["images"][0]["kept"], "alpha=1 is FastV"
    assert alpha0["images"][0]["kept"] != alpha1["images"][0]["kept"]
    assert alpha1["config"]["alpha"] == 1.0 and "stale" in alpha1
    assert "stale" not in random1 and random1 == payload["results"][2] | {"cached": random1["cached"]}
    smaller = client.predict(payload, alpha=0.5, keep=4, budget_unit="tokens", api_name="/reselect")
    assert [len(r["images"][0]["kept"]) for r in smaller["results"][:2]] == [4, 4]
    assert "Compare" in smaller["results"][2]["stale"], "random cannot re-select from scores"
    assert counter.runs == runs


@pytest.mark.parametrize("kw, message", [
    (dict(prompt="  "), "prompt is empty"),
    (dict(keep=1000), "more than the image"),
    (dict(keep=0), "whole number >= 1"),
    (dict(layer=99), "out of range"),
    (dict(methods=[]), "at least one method"),
    (dict(model="no-such-org/no-such-model"), "not offered here"),
    (dict(reference="1, 2, 3"), "reference box must be"),
    (dict(knobs='{"fastv": {"nope": 1}}'), "has no knob"),
    (dict(knobs="{oops"), "must be JSON"),
    ("not-an-image", "not a readable image"),
    ("huge", "too large"),
])
def test_bad_inputs_give_error_text_and_server_keeps_answering(client, kw, message, tmp_path):
    if kw == "not-an-image":
        bogus = tmp_path / "notes.png"
        bogus.write_text("this is not a picture")
        kw = dict(image=handle_file(str(bogus)))
    if kw == "huge":
        big = tmp_path / "huge.png"
        Image.new("L", (8000, 6000)).save(big)
        kw = dict(image=handle_file(str(big)))
    with pytest.raises(AppError, match=message):
        compare(client, **kw)
    payload, _ = compare(client, methods=["fastv"])
    assert payload["results"][0]["method"] == "fastv"


def test_several_images_and_a_reference_box(client):
    payload, status = compare(client, methods=["fastv", "random"], reference="10, 20, 200, 300",
                              more_images=[handle_file(str(EXAMPLES / "toy_count_7.png"))])
    assert "2 image(s)" in status and payload["reference"] == [10, 20, 200, 300]
    assert [img["name"] for img in payload["images"]] == ["astronaut.jpg", "toy_count_7.png"]
    assert all(len(r["images"]) == 2 and len(r["images"][1]["kept"]) == 8 for r in payload["results"])


@pytest.mark.skipif(not (EXAMPLES.parent / "toy-llava" / "config.json").exists(), reason="no embedded model yet")
def test_embedded_model_answers_a_toy_question(client):
    from explorer.model_ref import EMBEDDED_NAME

    payload, _ = compare(client, image=handle_file(str(EXAMPLES / "toy_colour_5.png")), prompt="What colour is the "
                         "circle?", methods=["vanilla", "fastv"], keep=64, model=EMBEDDED_NAME)
    assert payload["model"] == EMBEDDED_NAME and all(r["answer"] for r in payload["results"])


def test_method_knobs(client):
    payload, _ = compare(client, methods=["fastv_window", "fastv"], knobs='{"fastv_window": {"windows": 2}}')
    window, fastv = payload["results"]
    assert window["config"]["windows"] == 2 and "windows" not in fastv["config"]


@pytest.mark.slow
def test_analysis_tab_runs_a_small_sweep(client, tiny_model):
    """The Analysis tab's endpoint: a real small sweep on the current model, a paper-shaped table and plots."""
    from explorer.model_ref import public_name

    tiny_model = public_name(tiny_model)  # the page offers models by public name, never by server path
    report, plots = client.predict(task="pope", methods=["vanilla", "random", "fastv"], keeps="8,4", n=2, alphas="",
                                   model=tiny_model, api_name="/analysis")
    assert "vanilla" in report and "random" in report and "fastv" in report and "Avg." in report
    assert "budget convention: paper" in report
    final, _ = client.predict(task="pope", methods=["dart"], keeps="8", n=1, alphas="", model=tiny_model,
                              convention="final", api_name="/analysis")
    assert "budget convention: final" in final
    names = {p["image"].rsplit("/", 1)[-1] for p in plots}
    assert {"budget.png", "position_hist.png", "position_heatmap.png"} <= names
    with pytest.raises(AppError, match="between 1 and"):
        client.predict(task="pope", methods=["random"], keeps="8", n=500, alphas="", model=tiny_model,
                       api_name="/analysis")
    with pytest.raises(AppError, match="comma-separated"):
        client.predict(task="pope", methods=["random"], keeps="eight", n=2, alphas="", model=tiny_model,
                       api_name="/analysis")


def test_budget_convention_through_the_api(client):
    """The named API takes the budget convention; each result and the status line say which one was used."""
    paper, status = compare(client, methods=["dart"], keep=16)  # default: as the authors, 4 + 8 * 2 tokens
    final, _ = compare(client, methods=["dart"], keep=16, convention="final")
    assert "budget convention: paper" in status
    assert paper["results"][0]["convention"] == "paper" and paper["results"][0]["tokens"]["kept_at_layer"] == 20
    assert final["results"][0]["convention"] == "final" and final["results"][0]["tokens"]["kept_at_layer"] == 16
    with pytest.raises(AppError, match="not in the list of choices"):  # the Radio refuses it, in one line
        compare(client, methods=["dart"], convention="halfway")


def test_ranking_is_one_page_setting_through_the_api(client):
    """The multi-grid ranking is a page-level input of /compare (not a knob of each method); the result keeps it."""
    payload, _ = compare(client, methods=["fastv"], keep=8, ranking="per_grid")
    assert payload["results"][0]["config"]["ranking"] == "per_grid"
    with pytest.raises(AppError, match="not in the list of choices"):
        compare(client, methods=["fastv"], ranking="rows")
