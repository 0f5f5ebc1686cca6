"""Task metrics on hand-made records and real-format loaders on fixture files the tests write."""
from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from explorer.eval import tasks
from explorer.eval.sources import ToySource, open_source
from explorer.eval.training_aware import framings


def _png(size=(32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def _recs(task, pairs):
    return [{"metrics": task.process_results({"answer": t}, {"answer": p})} for p, t in pairs]


def test_pope_metrics():
    pope = tasks.get("pope")
    recs = _recs(pope, [("Yes.", "yes"), ("yes", "no"), ("No", "yes"), ("no", "no"), ("yes", "yes")])
    assert tasks.score(pope, recs, "accuracy") == pytest.approx(3 / 5)
    assert tasks.score(pope, recs, "precision") == pytest.approx(2 / 3)
    assert tasks.score(pope, recs, "recall") == pytest.approx(2 / 3)
    assert tasks.score(pope, recs, "f1") == pytest.approx(2 / 3)
    assert tasks.score(pope, recs, "yes_ratio") == pytest.approx(3 / 5)
    assert pope.higher_is_better["f1"] and not pope.higher_is_better["yes_ratio"]


def test_vqa_normalisation_and_haystack():
    vqa = tasks.get("vqa")
    assert tasks.normalise("The Circle!") == "circle" and tasks.normalise("Three") == "3"
    recs = _recs(vqa, [("the red.", "red"), ("two", "2"), ("blue", "red")])
    assert tasks.score(vqa, recs) == pytest.approx(2 / 3)
    hay = tasks.get("haystack")
    assert tasks.score(hay, _recs(hay, [("yes", "yes"), ("maybe", "yes")])) == 0.5


def test_grounding_metrics():
    g = tasks.get("grounding")
    doc = {"box": [10, 10, 50, 50]}
    hit = g.process_results(doc, {"answer": "", "boxes": [{"box": [10, 10, 50, 40]}]})
    assert hit["iou"] == pytest.approx(0.75) and hit["acc@0.5"] == 1.0 and hit["centre_acc"] == 1.0
    miss = g.process_results(doc, {"answer": "", "boxes": [{"box": [40, 40, 90, 90]}]})
    assert miss["acc@0.5"] == 0.0 and miss["centre_acc"] == 0.0
    assert g.process_results(doc, {"answer": "no box", "boxes": []})["iou"] == 0.0


def test_toy_source_is_seeded_and_balanced():
    src = ToySource("pope", 12, seed=3)
    a, b = src[4], ToySource("pope", 12, seed=3)[4]
    assert a["question"] == b["question"] and a["id"] == b["id"]
    docs = [src[i] for i in range(12)]
    assert {d["split"] for d in docs} == {"random", "popular", "adversarial"}
    assert sum(d["answer"] == "yes" for d in docs) == 6
    hay = ToySource("haystack", 4, seed=0)
    assert [len(hay[i]["images"]) for i in range(4)] == [1, 2, 3, 5]
    g = ToySource("grounding", 1)[0]
    assert len(g["box"]) == 4 and max(g["box"]) <= g["images"][0].width


def test_pope_parquet_layout(tmp_path):
    rows = {"question_id": ["1", "2"], "question": ["Is there a dog in the image?"] * 2, "answer": ["yes", "no"],
            "image_source": ["a", "b"], "image": [{"bytes": _png(), "path": "a.png"}] * 2,
            "category": ["adversarial", "random"]}
    pq.write_table(pa.table(rows), tmp_path / "test-00000-of-00001.parquet")
    src = open_source("pope", str(tmp_path))
    assert len(src) == 2
    doc = src[0]
    assert doc["split"] == "adversarial" and doc["answer"] == "yes" and doc["images"][0].size == (32, 24)


def test_refcoco_parquet_layout(tmp_path):
    rows = {"question_id": ["9"], "image": [{"bytes": _png((64, 48)), "path": None}], "question": ["caption"],
            "answer": [["man on the left", "left man"]], "bbox": [[4.0, 6.0, 20.0, 10.0]], "file_name": ["x.jpg"]}
    pq.write_table(pa.table(rows), tmp_path / "val.parquet")
    doc = open_source("grounding", str(tmp_path / "val.parquet"), limit=1)[0]
    assert doc["box"] == [4.0, 6.0, 24.0, 16.0] and "man on the left" in doc["question"]


def test_jsonl_folder(tmp_path):
    Image.new("RGB", (40, 40), "blue").save(tmp_path / "a.png")
    lines = [{"id": "q1", "image": "a.png", "question": "What colour?", "answer": "blue", "split": "colour"},
             {"images": ["a.png", "a.png"], "question": "Is there a blue square?", "answer": "no"}]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    src = open_source("vqa", str(tmp_path))
    assert src[0]["id"] == "q1" and src[0]["split"] == "colour"
    assert len(src[1]["images"]) == 2 and src[1]["n_images"] == "2"


def test_training_aware_rates():
    f = framings(256, 0.889, 4)
    assert f["patches"] == 1024
    assert f["keep_fastv"] == 28 and f["keep_fastv_dagger"] == 113
    assert f["trr_fastv_dagger"] == pytest.approx(4 * f["tfrr_fastv_dagger"])
    assert framings(256, 0.667, 4)["keep_fastv_dagger"] == 256  # 1/TACR already removes 75 %: nothing to prune


def test_hub_layout_through_datasets(tmp_path):
    """`hf:<dataset>:<split>` goes through datasets.load_dataset (here a local dataset folder, as no hub is
    reachable); images written with the datasets Image feature come back as the POPE docs' PIL images."""
    datasets = pytest.importorskip("datasets")
    Image.new("RGB", (32, 24), "red").save(tmp_path / "a.png")
    ds = datasets.Dataset.from_dict(
        {"question_id": ["1", "2"], "question": ["Is there a dog in the image?"] * 2, "answer": ["yes", "no"],
         "image": [str(tmp_path / "a.png")] * 2, "category": ["popular", "random"]},
        features=datasets.Features({"question_id": datasets.Value("string"), "question": datasets.Value("string"),
                                    "answer": datasets.Value("string"), "image": datasets.Image(),
                                    "category": datasets.Value("string")}))
    (tmp_path / "pope").mkdir()
    ds.to_parquet(str(tmp_path / "pope" / "test-00000-of-00001.parquet"))
    src = open_source("pope", f"hf:{tmp_path / 'pope'}:test")
    assert len(src) == 2
    doc = src[1]
    assert doc["split"] == "random" and doc["answer"] == "no" and doc["images"][0].size == (32, 24)
    with pytest.raises(ValueError, match="could not load"):
        open_source("pope", f"hf:{tmp_path / 'missing'}:test")
