"""One engine call at most per compare request: the revision for the cache key comes back with the result."""
from __future__ import annotations

import os
import shutil

from explorer.engine import Engine
from explorer.limits import Limits
from explorer.testing import EXAMPLES
from explorer.ui.cache import ResultCache
from explorer.ui.compare_runs import CompareRuns

IMAGE = str(EXAMPLES / "astronaut.jpg")


def counted(engine: Engine) -> dict:
    """Count the engine's calls of compare and model (the real methods, run as they are)."""
    calls = {"compare": 0, "model": 0}
    for name in calls:
        original = getattr(engine, name)

        def count(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        setattr(engine, name, count)
    return calls


def request(runs: CompareRuns, methods: list[str], prompt: str = "what is the colour ?"):
    return runs.request([IMAGE], prompt, methods, 8, "tokens", 2, 0.5, 2, 0, None, None, "paper", "authors")


def test_a_miss_is_one_engine_call_and_a_hit_none(tiny_model, tmp_path):
    engine = Engine(threads=1)
    calls = counted(engine)
    runs = CompareRuns(engine, tiny_model, ResultCache(tmp_path / "cache"))
    first = runs.run(request(runs, ["vanilla", "fastv"]))
    assert calls == {"compare": 1, "model": 1} and first["cached"] is False
    assert first["revision"] == engine.model(tiny_model).revision
    calls["model"] = 0
    again = runs.run(request(runs, ["vanilla", "fastv"]))
    assert calls == {"compare": 1, "model": 0}, "a full hit calls no engine (and loads no model)"
    assert again["cached"] is True and again["results"] == [{**r, "cached": True} for r in first["results"]]
    more = runs.run(request(runs, ["vanilla", "fastv", "random"]))
    assert calls == {"compare": 2, "model": 1}, "a partial hit: one call, for the missing method only"
    assert [r["cached"] for r in more["results"]] == [True, True, False]


def test_a_new_revision_recomputes_what_the_cache_gave_under_the_old_one(tiny_model, tmp_path):
    folder = shutil.copytree(tiny_model, tmp_path / "model")
    engine = Engine(threads=1, limits=Limits(max_models=0))  # nothing stays loaded: each call loads the folder
    calls = counted(engine)
    runs = CompareRuns(engine, str(folder), ResultCache(tmp_path / "cache"))
    old = runs.run(request(runs, ["vanilla", "fastv"]))
    for weights in folder.glob("*.safetensors"):  # the folder changes: a new content revision
        os.utime(weights, (1, 1))
    new = runs.run(request(runs, ["vanilla", "fastv", "random"]))
    assert new["revision"] != old["revision"] and calls["compare"] == 3, "the miss, then all again"
    assert [r["cached"] for r in new["results"]] == [False, False, False]
    assert runs.run(request(runs, ["vanilla", "fastv", "random"]))["cached"] is True


def test_a_method_fitted_to_the_models_depth_comes_back_with_and_without_cache(tiny_model, tmp_path):
    """SparseVLM's default layers (2, 6, 15) are cut to the model's depth: its result reports the layers it ran
    with, and is still the answer to the request (it once crashed every compare on the embedded model)."""
    for cache in (ResultCache(None), ResultCache(tmp_path / "cache")):
        runs = CompareRuns(Engine(threads=1), tiny_model, cache)
        for expect_cached in (False, cache.enabled):
            out = runs.run(request(runs, ["vanilla", "sparsevlm", "mustdrop"]))
            assert [r["method"] for r in out["results"]] == ["vanilla", "sparsevlm", "mustdrop"]
            sparse = out["results"][1]
            assert sparse["status"] == "ok" and len(sparse["config"]["layers"]) < 3, sparse["config"]
            assert out["cached"] is expect_cached
