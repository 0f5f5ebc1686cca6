"""The example gallery in assets/examples: photos shipped inside scikit-image (licences noted) and toy-world
scenes, some with a reference box. `python -m explorer.ui.examples` regenerates the files and manifest."""
from __future__ import annotations

import json
import random
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
MANIFEST = EXAMPLES / "examples.json"

PHOTOS = [  # skimage.data function, prompt, licence from its docstring, what to look for
    ("astronaut", "What is the person wearing?", "public domain (NASA)",
     "Position bias: FastV keeps the bottom rows (the suit's lower part) whatever you ask; random spreads out."),
    ("chelsea", "What animal is in the image?", "CC0 (Stefan van der Walt)",
     "A single large object: most methods answer alike even at 10 % of tokens — pruning looks free here."),
    ("coffee", "What is in the cup?", "CC0 (Rachel Michetti)",
     "Compare FastV with Reverse FastV: keeping the least attended tokens often changes little."),
    ("rocket", "What is in the image?", "public domain (NASA)",
     "A thin object: Window FastV and pooling keep some of it wherever it is; FastV keeps the bottom."),
    ("hubble_deep_field", "How many galaxies are there?", "public domain (NASA/ESA)",
     "No single salient region: uniqueness (low α) and random spread differ most from FastV."),
    ("text", "What does the text say?", "public domain",
     "Text needs many tokens: watch answers degrade as the budget shrinks."),
]
# (task, seed, images for a haystack question). The last three were added with the v2 release (issue 9): for
# each of grounding, 2-image haystack and letter, seeds 41, 42, ... were drawn in order and the first one the
# model answered correctly unpruned was kept (grounding 41 and letter 41 at the first try; haystack 41 was
# answered wrongly, 42 rightly).
TOY = [("grounding", 11, None), ("grounding", 23, None), ("grounding", 31, None), ("colour", 5, None),
       ("shape", 13, None), ("existence", 17, None), ("count", 7, None), ("letter", 3, None), ("haystack", 19, 3),
       ("grounding", 41, None), ("haystack", 42, 2), ("letter", 41, None)]
TOY_NOTES = {
    "grounding": "Grounding collapse: at 16 tokens boxes drift from the green reference though the object is kept.",
    "shape": "One object answers this: which methods keep any of its tokens at 16 or 32?",
    "existence": "A 'yes' needs the asked-about object's tokens: lower the budget (16) and see which methods lose "
                 "it and say 'no'.",
    "haystack": "Several images, one question: the anchor object's image decides. Language-guided methods keep "
                "tokens in every image alike; compare the per-image grids.",
    "colour": "Move α: low α keeps tokens unlike the background, i.e. the shapes.",
    "count": "Counting needs every object kept: spread-out methods (window, pooling) count better.",
    "letter": "A small letter: does the method keep its cells? Turn on the heat map to see why.",
}


def load() -> list[dict]:
    """Manifest entries with absolute file paths (first image, more images); empty when the gallery is missing."""
    if not MANIFEST.exists():
        return []
    entries = json.loads(MANIFEST.read_text())
    files = lambda e: [e["file"], *e.get("more", [])]  # noqa: E731
    return [{**e, "path": str(EXAMPLES / e["file"]), "more_paths": [str(EXAMPLES / f) for f in e.get("more", [])]}
            for e in entries if all((EXAMPLES / f).exists() for f in files(e))]


def rows(entries: list[dict]) -> list[list]:
    """gr.Examples rows: image, more images (or None), prompt, reference box text, note."""
    box = lambda b: ", ".join(f"{v:g}" for v in b) if b else ""  # noqa: E731
    return [[e["path"], e["more_paths"] or None, e["prompt"], box(e.get("reference")), e["note"]] for e in entries]


def build(out: Path = EXAMPLES, side: int = 448) -> list[dict]:
    """Write the gallery images and the manifest (needs scikit-image; the toy scenes need explorer.toy)."""
    from PIL import Image
    from skimage import data

    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, prompt, licence, note in PHOTOS:
        img = Image.fromarray(getattr(data, name)()).convert("RGB")
        img.thumbnail((side, side))
        img.save(out / f"{name}.jpg", quality=88)
        entries.append({"file": f"{name}.jpg", "prompt": prompt, "reference": None, "note": note,
                        "licence": licence, "source": f"skimage.data.{name}()"})
    from ..toy.world import make_sample

    for task, seed, n in TOY:
        sample = make_sample(random.Random(seed), task, size=320, n_images=n)
        files = [f"toy_{task}_{seed}.png"] if n is None else [f"toy_{task}_{seed}_{i + 1}.png" for i in range(n)]
        for img, file in zip(sample["images"], files):
            img.save(out / file)
        width = sample["images"][0].width
        ref = [round(v * width, 1) for v in sample["box"]] if sample["box"] else None
        entries.append({"file": files[0], **({"more": files[1:]} if n else {}), "prompt": sample["question"],
                        "reference": ref, "answer": sample["answer"], "note": TOY_NOTES[task],
                        "licence": "generated (this project)", "source": f"explorer.toy.world.make_sample"
                        f"(random.Random({seed}), {task!r}, size=320{f', n_images={n}' if n else ''})"})
    (out / "examples.json").write_text(json.dumps(entries, indent=1) + "\n")
    return entries


if __name__ == "__main__":
    for entry in build():
        print(entry["file"], "-", entry["licence"])
