"""Every bound on one request: a named setting, a one-line message, checked before any model work."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from explorer.testing import picture

from explorer.cli import main
from explorer.engine import Engine
from explorer.limits import InputError, Limits, knob_values, method_names, real, sweep_size, whole
from explorer.methods import REGISTRY, make

NO_MODEL = "/nowhere/no-such-model"  # a request refused by a bound must fail before this is ever looked at


def one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text and "Overflow" not in text and "TypeError" not in text
    return text


@pytest.mark.parametrize("value, message", [
    (10**40, "between 0 and 2147483647"), (-1, "between 0"), ("12x", "whole number"), (1.5, "whole number"),
    (float("inf"), "whole number"), (float("nan"), "whole number"), (True, "whole number"), (None, "whole number"),
    ("9" * 5000, "whole number"), ([1], "whole number"),
])
def test_whole_numbers(value, message):
    with pytest.raises(InputError, match=message) as exc:
        whole(value, "The seed", 0, 2**31 - 1)
    assert len(one_line(exc)) < 120
    assert whole(" 7 ", "x", 0, 9) == 7 and whole(7.0, "x", 0, 9) == 7


@pytest.mark.parametrize("value", ["abc", float("nan"), 2.5, "1e999", {}])
def test_real_numbers(value):
    with pytest.raises(InputError, match="α must be"):
        real(value, "α", 0, 1)
    assert real("0.25", "α", 0, 1) == 0.25


def test_methods_are_deduplicated_and_capped():
    assert method_names(["fastv", "vanilla", "fastv", " vanilla "], Limits(), REGISTRY) == ["fastv", "vanilla"]
    assert method_names(["vanilla"] * 1000, Limits(), REGISTRY) == ["vanilla"]
    with pytest.raises(InputError, match="At most 2 methods"):
        method_names(["vanilla", "fastv", "random"], Limits(max_methods=2), REGISTRY)
    with pytest.raises(InputError, match="unknown method"):
        method_names(["vanilla", "x" * 500], Limits(), REGISTRY)
    with pytest.raises(InputError, match="at least one"):
        method_names([], Limits(), REGISTRY)


@pytest.mark.parametrize("cls, knobs, message", [
    ("fastv_window", {"windows": "two"}, "fastv_window.windows must be a whole number"),
    ("fastv_window", {"windows": [2]}, "whole number"),
    ("random", {"seed": 2**70}, "The seed must be between"),
    ("alpha", {"alpha": "half"}, "alpha.alpha must be a number"),
    ("fastv", {"query": 3}, "must be a short text"),
    ("sparsevlm", {"layers": "2,6"}, "list of 1 to 64 whole numbers"),
    ("fastv", {"nope": 1}, "has no knob"),
    ("alpha", {"alpha": 1.5}, "alpha.alpha must be between 0 and 1"),
    ("vispruner", {"important": -0.1}, "vispruner.important must be between 0 and 1"),
    ("fastv", {"query": "first"}, "fastv.query must be one of last, all"),
    ("mustdrop", {"window": 1}, "mustdrop.window must be between 2 and 16"),
])
def test_knob_types(cls, knobs, message):
    with pytest.raises(InputError, match=message) as exc:
        knob_values(REGISTRY[cls], knobs, Limits())
    one_line(exc)


def test_good_knobs_are_coerced():
    assert knob_values(REGISTRY["sparsevlm"], {"layers": [2, 6]}, Limits()) == {"layers": (2, 6)}
    assert knob_values(REGISTRY["fastv_window"], {"windows": 2.0}, Limits()) == {"windows": 2}


def test_sweep_size():
    sweep_size(60, 20, [144, 64], [0, 1], Limits())
    for args, message in (((61, 1, [64], None), "between 1 and 60"), ((1, 1, list(range(9)), None), "8 budgets"),
                          ((1, 1, [64], list(range(12))), "11 α values"), ((60, 21, [64], None), "1260 model runs")):
        with pytest.raises(InputError, match=message):
            sweep_size(*args, Limits())


def test_limits_from_environment():
    limits = Limits.from_env({"EXPLORER_MAX_METHODS": "3", "EXPLORER_MAX_ASPECT": "4.5"})
    assert limits.max_methods == 3 and limits.max_aspect == 4.5 and limits.max_images == Limits().max_images
    with pytest.raises(InputError, match="EXPLORER_MAX_IMAGES must be a number"):
        Limits.from_env({"EXPLORER_MAX_IMAGES": "many"})


@pytest.mark.parametrize("change, message", [
    (dict(images=[picture()] * 9), "At most 8 images"),
    (dict(images=[]), "No image"),
    (dict(prompt="?" * 2001), "prompt is too long"),
    (dict(methods=[make(m) for m in list(REGISTRY)[:3]]), "At most 2 methods"),
    (dict(methods=[make("random", seed=2**64)]), "seed must be between"),
    (dict(max_new_tokens=10**9), "Max new tokens must be between 1 and 256"),
    (dict(max_new_tokens="many"), "Max new tokens must be a whole number"),
    (dict(repeats=1000), "Repeats must be between"),
])
def test_engine_refuses_before_loading_a_model(change, message):
    engine = Engine(limits=Limits(max_methods=2))
    request = dict(images=[picture()], prompt="what ?", methods=[make("vanilla")], max_new_tokens=4)
    with pytest.raises(InputError, match=message) as exc:
        engine.compare(**{**request, **change}, model_id=NO_MODEL)
    one_line(exc)
    assert not engine.loaded_keys()


@pytest.fixture(scope="module")
def tiny(checkpoints):
    return str(checkpoints["llava"])


def test_duplicate_methods_run_once(tiny):
    out = Engine(threads=1).compare([picture()], "what ?", [make("fastv", keep=4)] * 5 + [make("vanilla")],
                                    model_id=tiny, max_new_tokens=2)
    assert [r["method"] for r in out["results"]] == ["fastv", "vanilla"]


def test_the_engine_normalises_pictures_given_as_objects(tiny, tmp_path):
    """Eval and library callers pass PIL images straight to the engine: they are normalised there too."""
    engine = Engine(threads=1)
    loaded = engine.model(tiny)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (64, 32), (0, 0, 255)).save(tmp_path / "phone.png", exif=exif.tobytes())
    rgba = Image.fromarray(np.zeros((40, 30, 4), dtype=np.uint8), "RGBA")  # fully transparent: white
    with Image.open(tmp_path / "phone.png") as phone:
        prepared = engine.prepare(loaded, [phone, rgba], "what ?")
    assert prepared.sizes == [(32, 64), (30, 40)]
    assert prepared.images[1].getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(InputError, match="too elongated"):
        engine.prepare(loaded, [Image.new("L", (2, 2000))], "what ?")


@pytest.mark.parametrize("args, message", [
    (["--seed", "99999999999999999999"], "--seed must be between"),
    (["--alpha", "7"], "--alpha must be between 0 and 1"),
    (["--threads", "0"], "--threads must be between 1"),
    (["--max-new-tokens", "100000"], "--max-new-tokens must be between"),
    (["--methods", ",".join(["vanilla"] * 1000) + ",fastv,random,pooling,alpha,dart,divprune,visionzip,avgpool,"
      "fastv_vis,fastv_window,fastv_reverse,fastervlm,sparsevlm,mustdrop,"], None),
])
def test_cli_bounds_one_line(capsys, tmp_path, args, message):
    picture().save(tmp_path / "p.png")
    code = main(["run", "--image", str(tmp_path / "p.png"), "--prompt", "hi", "--model", NO_MODEL, *args])
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    if message is None:  # 15 distinct methods after de-duplication: within the bound, so it reaches the model
        assert code == 3 and "folder not found" in err
    else:
        assert code == 2 and message in err


def test_eval_cli_says_folder_not_found_in_one_line(capsys, tmp_path):
    from explorer.eval.cli import main as eval_main

    code = eval_main(["sweep", "--model", NO_MODEL, "--out", str(tmp_path), "--limit", "1"])
    err = capsys.readouterr().err
    assert code == 3 and "folder not found" in err and len(err.strip().splitlines()) == 1


def test_sweep_seeds_beyond_the_visitor_range_still_run(tiny):
    """Sweeps derive per-doc seeds (seed * 1_000_003 + doc); only torch's range bounds them at run time."""
    engine = Engine(threads=1)
    loaded = engine.model(tiny)
    prepared = engine.prepare(loaded, [picture()], "what ?")
    result = engine.run(loaded, prepared, make("random", keep=4, seed=5_000 * 1_000_003), 1)
    assert len(result["images"][0]["kept"]) == 4
    with pytest.raises(InputError, match="seed must be between"):
        engine.run(loaded, prepared, make("random", keep=4, seed=2**64), 1)


def test_every_knob_declares_its_help_and_range_once_on_the_method():
    """Each method's own knobs carry help text, and a range (numbers) or choices (texts) in field metadata: the
    generated UI controls show them and knob_values enforces them."""
    import dataclasses

    shared = {"keep", "ratio", "layer", "convention", "seed"}
    for name, cls in REGISTRY.items():
        for f in dataclasses.fields(cls):
            if f.name in shared or f.default is dataclasses.MISSING:
                continue
            assert f.metadata.get("help"), f"{name}.{f.name} has no help text"
            if isinstance(f.default, (int, float)):
                lo, hi = f.metadata["range"]
                assert lo <= f.default <= hi, f"{name}.{f.name}: default outside its range"
                assert knob_values(cls, {f.name: f.default}, Limits()) == {f.name: f.default}
            elif isinstance(f.default, str):
                assert f.default in f.metadata["choices"], f"{name}.{f.name}"
