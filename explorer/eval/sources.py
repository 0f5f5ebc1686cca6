"""Where docs come from: the toy world's seeded generator (any size, offline) or real files in public
layouts (lmms-lab POPE / RefCOCO parquet, or a folder of images + JSONL).

A source is a sequence: `len(src)` docs, `src[i]` builds doc i (images decoded only then), so each shard
of a sweep touches only its own docs.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

from ..engine import open_image
from ..toy import world

POPE_SPLITS = ("random", "popular", "adversarial")
VQA_KINDS = ("colour", "shape", "count", "letter")
HAYSTACK_SIZES = (1, 2, 3, 5)


class ToySource:
    """Docs drawn from the shapes world; doc i depends only on (task, seed, i)."""

    def __init__(self, task: str, n: int, seed: int = 0, splits: tuple | None = None):
        self.task, self.n, self.seed = task, n, seed
        default = {"pope": POPE_SPLITS, "vqa": VQA_KINDS, "haystack": HAYSTACK_SIZES}.get(task, ("toy",))
        self.splits = tuple(splits) if splits else default
        self.name = f"toy(seed={seed})"

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.n:
            raise IndexError(i)
        rng = random.Random(f"eval-{self.task}-{self.seed}-{i}")
        split = self.splits[i % len(self.splits)]
        doc = {"id": f"toy-{self.task}-{self.seed}-{i}", "split": str(split)}
        if self.task == "pope":
            want = "yes" if (i // len(self.splits)) % 2 == 0 else "no"
            for _ in range(500):
                s = world.make_sample(rng, "existence")
                if s["answer"] == want and (want == "yes" or s["meta"].get("negative") == split):
                    break
        elif self.task == "grounding":
            s = world.make_sample(rng, "grounding")
            side = s["images"][0].width
            doc["box"] = [v * side for v in s["box"]]
        elif self.task == "vqa":
            s = world.make_sample(rng, split)
        elif self.task == "haystack":
            s = world.make_sample(rng, "haystack", n_images=int(split))
            doc["n_images"] = str(split)
        else:
            raise ValueError(f"the toy world has no task {self.task!r}")
        doc.update(images=s["images"], question=s["question"], answer=s["answer"])
        return doc


class ListSource:
    """Docs from rows already in memory; `build(row, i)` decodes one row."""

    def __init__(self, rows: list[dict], build, name: str):
        self.rows, self.build, self.name = rows, build, name

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.build(self.rows[i], i)


def _image(cell) -> Image.Image:
    """A parquet image cell: {'bytes': ..., 'path': ...} (HF datasets' Image feature) or raw bytes."""
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if data is None and isinstance(cell, dict) and cell.get("path"):  # a path-only Image cell (local dataset)
        return open_image(cell["path"])
    return open_image(bytes(data), name="a dataset image")


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    rows = []
    for f in files:
        rows += pq.read_table(f).to_pylist()
    return rows


def hub_rows(spec: str) -> list[dict]:
    """Rows of `hf:<dataset>[:split]` through `datasets` (a hub id where the host reaches the hub, or a local
    dataset folder); image columns stay encoded ({bytes, path}) so the parquet builders below read them."""
    try:
        import datasets
    except ImportError:
        raise ValueError("hf: data needs the datasets package (pip install -r requirements-eval.txt)") from None
    name, _, split = spec[3:].partition(":")
    try:
        ds = datasets.load_dataset(name, split=split or "test")
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, bad split: one sentence for the user
        raise ValueError(f"could not load {name!r} through datasets: {str(exc).splitlines()[0][:200]}") from None
    for column, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(column, datasets.Image(decode=False))
    return ds.to_list()


def pope_parquet(path, split: str | None = None) -> ListSource:
    """lmms-lab/POPE layout: question_id, question, answer (yes/no), image {bytes, path}, category.
    `path` is a parquet file/folder or rows already loaded (`hub_rows`)."""
    rows = path if isinstance(path, list) else _read_parquet(Path(path))
    rows = [r for r in rows if split in (None, r.get("category"))]

    def build(r, i):
        return {"id": str(r.get("question_id", i)), "split": r.get("category", "all"), "images": [_image(r["image"])],
                "question": r["question"], "answer": str(r["answer"]).strip().lower()}
    return ListSource(rows, build, "pope-rows" if isinstance(path, list) else f"pope-parquet({path})")


REC_PROMPT = "Please provide the bounding box coordinate of the region this sentence describes: {}"


def refcoco_parquet(path, split: str | None = None) -> ListSource:
    """lmms-lab/RefCOCO layout: question_id, image, answer (referring expressions), bbox [x, y, w, h] px.
    `path` is a parquet file/folder or rows already loaded (`hub_rows`)."""
    rows = path if isinstance(path, list) else _read_parquet(Path(path))

    def build(r, i):
        phrases = r["answer"] if isinstance(r["answer"], (list, tuple)) else [r["answer"]]
        x, y, w, h = (float(v) for v in r["bbox"])
        return {"id": str(r.get("question_id", i)), "split": split or "val", "images": [_image(r["image"])],
                "question": REC_PROMPT.format(phrases[0]), "answer": phrases[0], "box": [x, y, x + w, y + h]}
    return ListSource(rows, build, "refcoco-rows" if isinstance(path, list) else f"refcoco-parquet({path})")


def jsonl_folder(path: str | Path) -> ListSource:
    """A JSONL file (or a folder holding data.jsonl): one doc per line with `image` or `images` (paths
    relative to the file), `question`, `answer`, optional `box` [x1, y1, x2, y2] in pixels, `split`, `id`."""
    path = Path(path)
    file = path / "data.jsonl" if path.is_dir() else path
    rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]

    def build(r, i):
        names = r.get("images") or [r["image"]]
        doc = {"id": str(r.get("id", i)), "split": str(r.get("split", "all")),
               "images": [open_image(file.parent / n) for n in names], "question": r["question"],
               "answer": str(r["answer"]), "n_images": str(r.get("n_images", len(names)))}
        if "box" in r:
            doc["box"] = [float(v) for v in r["box"]]
        return doc
    return ListSource(rows, build, f"jsonl({file})")


def open_source(task: str, data: str | None = "toy", limit: int | None = None, seed: int = 0,
                splits: tuple | None = None):
    """`data` = "toy" (generator), a .parquet file/folder (lmms-lab layout for the task), a JSONL, or
    `hf:<dataset>[:split]` loaded through `datasets` (e.g. hf:lmms-lab/POPE:test)."""
    if data in (None, "toy"):
        return ToySource(task, limit or 100, seed, splits)
    p = Path(data)
    if str(data).startswith("hf:"):
        if task not in ("pope", "grounding"):
            raise ValueError(f"no hub layout known for task {task!r}; use a JSONL folder")
        p = hub_rows(str(data))
    elif not p.exists():
        raise FileNotFoundError(f"no data at {data}")
    if isinstance(p, list):
        src = pope_parquet(p) if task == "pope" else refcoco_parquet(p)
    elif p.suffix == ".jsonl" or (p.is_dir() and (p / "data.jsonl").exists()):
        src = jsonl_folder(p)
    elif task == "pope":
        src = pope_parquet(p)
    elif task == "grounding":
        src = refcoco_parquet(p)
    else:
        raise ValueError(f"no parquet layout known for task {task!r}; use a JSONL folder")
    if limit is not None:
        src.rows = src.rows[:limit]
    return src
