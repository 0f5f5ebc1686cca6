"""Issue 14's "why" views through a real server with gradio_client: breaking points, survival per layer,
answer-token attention."""
from __future__ import annotations

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from explorer.testing import EXAMPLES

IMAGE = str(EXAMPLES / "astronaut.jpg")
PROMPT = "what is the colour ?"


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


def compare(client, **kw):
    args = dict(image=handle_file(IMAGE), prompt=PROMPT, methods=["vanilla", "fastv"], keep=8, layer=2, alpha=0.5)
    return client.predict(**{**args, **kw}, api_name="/compare")[0]


def one_line(err) -> str:
    text = str(err.value).strip()
    assert "\n" not in text and "Traceback" not in text, text
    return text


def test_breaking_points_one_curve_per_method_consistent_with_compare(client):
    methods = ["vanilla", "fastv", "random"]
    data, plot, summary = client.predict(image=handle_file(IMAGE), prompt=PROMPT, methods=methods,
                                         budgets="36, 9, 2", layer=2, api_name="/breaking_points")
    assert data["budgets"] == [36, 9, 2] and data["criterion"] == "text"
    assert [c["method"] for c in data["curves"]] == ["fastv", "random"], "one curve per pruning method"
    vanilla = compare(client, methods=["vanilla"])["results"][0]["answer"]
    assert data["vanilla"]["answer"] == vanilla
    for c in data["curves"]:
        assert [p["budget"] for p in c["points"]] == [36, 9, 2]
        for p in c["points"]:  # each point is what Compare answers at that budget
            got = compare(client, methods=[c["method"]], keep=p["budget"])["results"][0]
            assert p["answer"] == got["answer"] and p["agrees"] == (got["answer"] == vanilla)
            assert p["tokens"] == p["budget"]
        flags = [p["agrees"] for p in c["points"]]
        first = flags.index(False) if False in flags else None
        assert c["first_disagreement"] == (None if first is None else c["points"][first]["budget"])
        assert c["holds_down_to"] == (c["points"][first - 1]["budget"] if first else
                                      None if first == 0 else c["points"][-1]["budget"])
    assert c["points"][0]["agrees"] is True or c["method"] != "fastv", "all 36 tokens kept: vanilla's answer"
    assert Image.open(plot).width > 300 and "agrees down to" in summary


def test_breaking_points_default_ladder_and_bad_input(client):
    data = client.predict(image=handle_file(IMAGE), prompt=PROMPT, methods=["fastv"], budgets="",
                          api_name="/breaking_points")[0]
    assert data["budgets"] == [36, 18, 9, 4, 2, 1], "576 x (1, 1/2, 1/4, 1/9, 1/18, 1/36, 1/72), scaled to 36"
    for budgets, message in [("36, x", "whole numbers"), ("99", "from 1 to the image's 36 tokens")]:
        with pytest.raises(AppError) as err:
            client.predict(image=handle_file(IMAGE), prompt=PROMPT, methods=["fastv"], budgets=budgets,
                           api_name="/breaking_points")
        assert message in one_line(err)
    with pytest.raises(AppError) as err:
        client.predict(image=handle_file(IMAGE), prompt=PROMPT, methods=["vanilla"], budgets="",
                       api_name="/breaking_points")
    assert "besides vanilla" in one_line(err)


def test_survival_one_frame_per_cut_with_shrinking_counts(client, server):
    payload = compare(client, methods=["vanilla", "fastv", "sparsevlm"], knobs='{"sparsevlm": {"layers": [0, 1, 2]}}')
    runs = server[1].runs
    data, strip = client.predict(payload, api_name="/survival")
    assert server[1].runs == runs, "survival needs no model call"
    assert [m["method"] for m in data["methods"]] == ["sparsevlm"], "single-cut, unmerged methods have no strip"
    frames = data["methods"][0]["images"][0]["frames"]
    sparse = payload["results"][2]
    assert [f["layer"] for f in frames] == [c["layer"] for c in sparse["tokens"]["per_cut"]] == [1, 2, 3]
    counts = [f["tokens"] for f in frames]
    assert counts == [c["image_tokens"] for c in sparse["tokens"]["per_cut"]]
    assert all(a >= b for a, b in zip(counts, counts[1:])) and counts[-1] < counts[0], counts
    for before, after in zip(frames, frames[1:]):  # a token that survives a cut survived the one before
        merged = {t for g in after["groups"] for t in g[1:]}
        assert set(after["kept"]) <= set(before["kept"]) | merged
    assert Image.open(strip).width > 3 * 100
    assert client.predict(None, api_name="/survival") == (None, None)
    with pytest.raises(AppError) as err:
        client.predict({"results": [{"method": "x", "images": [{"survivors": [{}, {}]}]}], "images": [{}]},
                       api_name="/survival")
    one_line(err)


def test_answer_attention_is_a_distribution_over_the_image_tokens(client):
    payload = compare(client, methods=["vanilla", "fastv"], max_new_tokens=4)
    fastv = payload["results"][1]
    assert len(fastv["answer_tokens"]) >= 2
    data, picture = client.predict(payload, "fastv", 1, 3, handle_file(IMAGE), api_name="/answer_attention")
    assert data["method"] == "fastv" and data["token"] == 1 and data["layer"] == 3
    assert data["word"] == fastv["answer_tokens"][1] and data["tokens"] == fastv["answer_tokens"][:2]
    for side in ("attention", "vanilla"):
        (dist,) = data[side]["images"]
        assert len(dist) == 36 and min(dist) >= 0
        assert sum(dist) == pytest.approx(1.0, abs=1e-4), "sums to 1 over the image span"
        assert 0 < data[side]["image_share"] <= 1
    kept = set(fastv["images"][0]["kept"])
    assert {i for i, v in enumerate(data["attention"]["images"][0]) if v > 0} <= kept, "layer 3 >= K: kept tokens only"
    assert sum(v > 0 for v in data["vanilla"]["images"][0]) == 36
    assert Image.open(picture).width > 400
    for args, message in [((payload, "random", 0, 3), "No answer of 'random'"),
                          ((payload, "fastv", 0, 99), "layer must be between 0 and 3"),
                          ((payload, "fastv", 40, 3), "The answer has")]:
        with pytest.raises(AppError) as err:
            client.predict(*args, handle_file(IMAGE), api_name="/answer_attention")
        assert message in one_line(err)


def test_a_shared_link_reopens_the_same_inputs_and_results(client, server):
    payload = compare(client, methods=["vanilla", "fastv"])
    runs = server[1].runs
    link = client.predict(payload, handle_file(IMAGE), None, PROMPT, ["vanilla", "fastv"], 8, "tokens", 2, 0.5, 16,
                          0, None, "1, 2, 30, 40", "", "paper", api_name="/share")
    share_id = link.rsplit("share=", 1)[1]
    assert len(share_id) == 24
    record = client.predict(share_id, api_name="/shared")
    assert record["payload"] == payload and record["inputs"]["prompt"] == PROMPT
    assert record["inputs"]["methods"] == ["vanilla", "fastv"] and record["inputs"]["reference"] == "1, 2, 30, 40"
    assert len(record["images"]) == 1 and server[1].runs == runs, "sharing runs no model"
    for bad in ("0" * 24, "../../etc/passwd"):
        with pytest.raises(AppError) as err:
            client.predict(bad, api_name="/shared")
        assert "unknown or has expired" in one_line(err)
