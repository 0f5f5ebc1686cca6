"""Issue 14's "why" views through a real server with gradio_client: breaking points, survival per layer,
answer-token attention."""
from __future__ import annotations

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from ui_paths import EXAMPLES

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
