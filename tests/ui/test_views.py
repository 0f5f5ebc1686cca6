"""Issue 14's views and rough edges over a real server with gradio_client: agreement between methods, downloads
written on request (and no temp folders left), the Analysis report's images served, no server path exposed."""
from __future__ import annotations

import csv
import json
import re
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from explorer.testing import EXAMPLES, ROOT

METHODS = ["vanilla", "fastv", "random", "pooling", "alpha"]


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


def compare(client, **kw):
    args = dict(image=handle_file(str(EXAMPLES / "astronaut.jpg")), prompt="what is the colour ?", methods=METHODS,
                keep=8, layer=2, alpha=0.5)
    return client.predict(**{**args, **kw}, api_name="/compare")[0]


def scratch_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("explorer-*")}


def test_agreement_matrix_is_the_jaccard_of_the_kept_sets(client, server):
    payload = compare(client)
    runs = server[1].runs
    data, matrix_png, consensus_png = client.predict(payload, api_name="/agreement")
    assert server[1].runs == runs, "agreement needs no model call"
    assert data["methods"] == METHODS and data["consensus_of"] == METHODS[1:]
    (img,) = data["images"]
    m = img["matrix"]
    kept = [set(r["images"][0]["kept"]) for r in payload["results"]]
    assert [sorted(k) for k in kept] == [img["kept"][name] for name in METHODS]
    for i, a in enumerate(kept):
        assert m[i][i] == 1.0
        for j, b in enumerate(kept):
            assert m[i][j] == m[j][i] == pytest.approx(len(a & b) / len(a | b), abs=1e-4)
    assert m[0][1] == pytest.approx(8 / 36, abs=1e-4), "vanilla keeps all 36 tokens, fastv 8"
    assert img["consensus"] == [sum(t in k for k in kept[1:]) for t in range(36)]
    assert Image.open(matrix_png).width > 200 and Image.open(consensus_png).width > 200


def test_agreement_of_a_reselected_payload_and_bad_payloads(client):
    payload = compare(client, methods=["fastv", "alpha"])
    moved = client.predict(payload, alpha=0.0, keep=8, budget_unit="tokens", api_name="/reselect")
    data = client.predict(moved, api_name="/agreement")[0]
    kept = [set(r["images"][0]["kept"]) for r in moved["results"]]
    assert data["images"][0]["matrix"][0][1] == pytest.approx(len(kept[0] & kept[1]) / len(kept[0] | kept[1]),
                                                               abs=1e-4)
    assert client.predict(None, api_name="/agreement") == (None, None, None), "nothing to show before a compare"
    with pytest.raises(AppError) as err:
        client.predict({"results": [{"method": "fastv"}], "images": [{}]}, api_name="/agreement")
    assert "\n" not in str(err.value).strip() and "Traceback" not in str(err.value)


def test_downloads_are_written_on_request_and_no_folder_is_left(client):
    before = scratch_dirs()
    payload = compare(client, methods=["fastv", "random"])
    client.predict(payload, False, api_name="/rerender")  # what every α move runs on the page
    client.predict(payload, 0.2, 8, "tokens", api_name="/reselect")
    assert scratch_dirs() == before, "rendering writes no download files"
    files = client.predict(payload, False, api_name="/downloads")
    assert [Path(f).name for f in files] == ["results.json", "timings.csv", "panels.png"]
    assert json.loads(Path(files[0]).read_text())["results"] == payload["results"]
    assert next(csv.reader(Path(files[1]).open()))[0] == "method"
    assert Image.open(files[2]).width > 300
    assert scratch_dirs() == before, "the temporary folder is removed once Gradio has its copy"
    with pytest.raises(AppError, match="press Compare first"):
        client.predict(None, False, api_name="/downloads")


@pytest.mark.slow
def test_analysis_report_images_are_served(client, server, tiny_model):
    from explorer.model_ref import public_name

    before = scratch_dirs()
    report, plots = client.predict(task="pope", methods=["vanilla", "random"], keeps="4", n=2, alphas="",
                                   model=public_name(tiny_model), api_name="/analysis")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(links) == 3 and all(link.startswith("/gradio_api/file=") for link in links)
    for link in links:
        answer = httpx.get(server[0].rstrip("/") + link)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert len(plots) == 3
    assert scratch_dirs() == before, "the sweep's scratch folder is removed"


def test_no_server_path_in_the_page_or_the_api(client, server, tiny_model):
    config = httpx.get(server[0].rstrip("/") + "/config").text
    api = client.view_api(print_info=False, return_format="str")
    for text in (config, api, json.dumps(client.view_api(print_info=False, return_format="dict"))):
        assert str(ROOT) not in text and str(Path(tiny_model).parent) not in text
    assert "embedded toy model" in config or "local:" in config


def test_each_panel_has_a_kept_per_row_strip(client):
    """View 5: beside each grid a strip with one bar per grid row, as long as that row's kept count."""
    from explorer.engine import open_image
    from explorer.ui import render

    payload = compare(client, methods=["vanilla", "fastv"])
    image = open_image(str(EXAMPLES / "astronaut.jpg"))
    summary = payload["images"][0]
    for result in payload["results"]:
        entry = result["images"][0]
        counts = render.row_counts({"offset": 0, "grid": entry["grid"]}, entry["kept"])
        assert len(counts) == 6 and sum(counts) == len(entry["kept"])
        panel = render.panel_image([image], [summary], result)
        assert panel.width == render.fit(image).width + 2 + render.HIST_W
        strip = np.asarray(panel.crop((panel.width - render.HIST_W, 0, panel.width, panel.height)))
        rows = np.linspace(summary["frame"][1] * panel.height, summary["frame"][3] * panel.height, 7)
        for r, count in enumerate(counts):
            middle = strip[int((rows[r] + rows[r + 1]) / 2), 2]
            assert (tuple(middle) == render.BAR) == (count > 0), (result["method"], r, counts)
    assert counts != [6] * 6, "fastv keeps 8 of 36: not every row full"


def test_knob_controls_write_the_knobs_json():
    """Controls generated from the methods' fields merge into the JSON box: non-defaults only, hand-typed keys
    for other methods kept, tuples from comma lists."""
    from explorer.methods import REGISTRY
    from explorer.ui.knobs import knob_fields, merged

    specs = [(m, name, hint, default) for m in ("fastv_window", "sparsevlm")
             for name, hint, default, _ in knob_fields(REGISTRY[m])]
    assert [s[:2] for s in specs] == [("fastv_window", "windows"), ("sparsevlm", "layers"), ("sparsevlm", "recycle")]
    assert merged("", specs, [4, "2, 6, 15", 0.3]) == "", "defaults write nothing"
    assert json.loads(merged("", specs, [2, "2, 8", 0.3])) == {"fastv_window": {"windows": 2},
                                                                "sparsevlm": {"layers": [2, 8]}}
    typed = '{"dart": {"pivot_image": 2}, "fastv_window": {"windows": 3}}'
    assert json.loads(merged(typed, specs, [4, "2, 6, 15", 0.5])) == {"dart": {"pivot_image": 2},
                                                                       "sparsevlm": {"recycle": 0.5}}


def test_knob_controls_show_the_help_and_range_declared_on_the_method():
    from explorer.methods import REGISTRY
    from explorer.ui.knobs import control, knob_fields

    for method, knob, bounds in [("vispruner", "important", (0.0, 1.0)), ("fastv_window", "windows", (1, 64))]:
        name, hint, default, meta = next(f for f in knob_fields(REGISTRY[method]) if f[0] == knob)
        box = control(method, name, hint, default, meta)
        assert (box.minimum, box.maximum) == bounds and box.info == meta["help"]
    name, hint, default, meta = next(f for f in knob_fields(REGISTRY["fastv"]) if f[0] == "query")
    assert [c[1] for c in control("fastv", name, hint, default, meta).choices] == ["last", "all"]


def test_shared_settings_are_page_controls_not_method_knobs():
    """Budget, K, α, seed, budget convention and ranking are set once on the page: no method's knob group repeats
    them (the ranking control used to appear in every multi-grid method's group)."""
    from explorer.methods import REGISTRY
    from explorer.settings import SETTINGS
    from explorer.ui.knobs import knob_fields

    shared = set(SETTINGS.method_knobs())
    assert "ranking" in shared and "convention" in shared
    for cls in REGISTRY.values():
        assert not {name for name, *_ in knob_fields(cls)} & shared, cls.name
