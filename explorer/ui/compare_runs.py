"""The compare path shared by the Compare button and the breaking-point view: widget values -> a checked
request -> the engine's compare behind the results cache.

One engine call at most per request. A cache key needs the model's revision, which the engine reports with
every result; the revision last reported for each model is remembered here, so a full cache hit makes no
engine call (and loads no model), and a miss makes one. A model's first request in this process has no
revision yet and is computed whole. If the engine reports a new revision (an evicted folder reloaded after it
changed), what the cache gave under the old one is computed again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..engine import Engine, InputError, open_image
from ..methods import Method
from ..model_ref import AllowList, ModelRef, public_name, resolve
from ..settings import Settings, build_methods, checked
from .cache import ResultCache, request_key
from .inputs import budget_knobs, parse_knobs


def _gpu(fn):
    """Run under @spaces.GPU on a ZeroGPU Space, with a duration sized to the request."""
    try:
        import spaces
    except ImportError:
        return fn

    def duration(images, prompt, methods, model_id, max_new_tokens, *rest, **kw):
        return min(300, 30 + len(methods) * len(images) * (5 + max_new_tokens // 4))

    return spaces.GPU(duration=duration)(fn)


@dataclass(frozen=True)
class Request:
    """One compare request, checked: everything a result depends on, plus the names the page shows."""

    images: list[Image.Image]
    prompt: str
    methods: list[Method]
    ref: ModelRef  # the model's resolved identity (no model loaded for it)
    model: str  # its public name, as the page shows it
    max_new_tokens: int
    names: list[str]  # file names of the images
    blobs: list[bytes]  # each image's size and pixels: cache key material

    def key(self, revision: str, methods: list[Method]) -> str:
        return request_key(self.blobs, self.prompt, self.ref.name, revision, [m.config() for m in methods],
                           self.max_new_tokens)


class CompareRuns:
    """Bound to one engine, one results cache and the page's model allow-list."""

    def __init__(self, engine: Engine, model_id: str, cache: ResultCache | None = None,
                 models: AllowList | None = None):
        self.models = models or AllowList.build(model_id, [])
        self.engine, self.model_id = engine, public_name(model_id)
        self.cache = cache or ResultCache(None)
        self.revisions: dict[tuple, str] = {}  # model identity -> the revision the engine last reported
        self._compute = _gpu(self._run_engine)

    def request(self, paths, prompt, methods, keep, unit, layer, alpha, max_new_tokens, seed, model, knobs,
                convention, ranking) -> Request:
        """The widgets' values checked and built, before any model work."""
        limits = self.engine.limits
        if not paths:
            raise InputError("No image given: upload, paste or pick an example image.")
        self.engine.check_images(paths)
        prompt = self.engine.check_prompt(prompt)
        keep_n, ratio = budget_knobs(keep, unit)
        settings = checked(Settings(keep=keep_n, ratio=ratio, layer=layer, alpha=alpha, seed=seed or 0,
                                    max_new_tokens=max_new_tokens, convention=convention, ranking=ranking), limits)
        built = build_methods(methods, settings, parse_knobs(knobs), limits)
        images = [open_image(p, limits) for p in paths]
        name = (model or "").strip() or self.model_id
        blobs = [f"{im.width}x{im.height}".encode() + im.tobytes() for im in images]
        return Request(images, prompt, built, resolve(self.models.spec(name)), name, settings.max_new_tokens,
                       [Path(p).name for p in paths], blobs)

    def run(self, req: Request, methods: list[Method] | None = None, progress=None) -> dict:
        """The CLI-schema payload for `methods` (default: the request's) on the request's input. Cache look-ups
        take no lock (a full hit never waits for model work); the misses are computed under the cache lock,
        looking again once it is held."""
        methods = methods or req.methods
        revision = self.revisions.get(req.ref.key)
        hit = self._look_up(req, methods, revision)
        if hit is not None:
            return hit
        with self.cache.lock:
            return self._look_up(req, methods, self.revisions.get(req.ref.key)) or \
                self._fill(req, methods, progress)

    def _look_up(self, req: Request, methods: list[Method], revision: str | None) -> dict | None:
        """The payload when the cache holds every method and the input's summary for `revision`, else None."""
        if revision is None:
            return None
        summary = self.cache.get(req.key(revision, []))
        found = [self.cache.get(req.key(revision, [m])) for m in methods]
        if summary is None or any(r is None for r in found):
            return None
        return _payload(summary, found, req.names)

    def _fill(self, req: Request, methods: list[Method], progress) -> dict:
        """Compute what the cache lacks for the engine's current revision (one engine call unless the revision
        changed under the cache) and store it."""
        revision = self.revisions.get(req.ref.key)
        found = [self.cache.get(req.key(revision, [m])) if revision else None for m in methods]
        todo = [m for m, r in zip(methods, found) if r is None] or methods[:1]
        fresh = self._engine_compare(req, todo, progress)
        if fresh["revision"] != revision and len(todo) < len(methods):  # found under another revision: redo
            found, todo = [None] * len(methods), methods
            fresh = self._engine_compare(req, todo, progress)
        self.revisions[req.ref.key] = revision = fresh["revision"]
        summary = {k: fresh[k] for k in ("model", "revision", "prompt", "images")}
        self.cache.put(req.key(revision, []), summary)
        by_method = answered(todo, fresh["results"])
        for i, m in enumerate(methods):
            result = by_method.get(m)
            if found[i] is None and result is not None:
                self.cache.put(req.key(revision, [m]), result)
                found[i] = {**result, "cached": False}
        return _payload(summary, found, req.names)

    def _engine_compare(self, req: Request, methods: list[Method], progress) -> dict:
        step = self._step(progress, time.monotonic() + self.engine.limits.max_compare_seconds)
        return self._compute(req.images, req.prompt, methods, req.ref.name, req.max_new_tokens, req.names, step)

    def _run_engine(self, images, prompt, methods, model_id, max_new_tokens, names, progress=None):
        return self.engine.compare(images, prompt, methods, model_id=model_id, max_new_tokens=max_new_tokens,
                                   names=names, progress=progress)

    def _step(self, progress, deadline: float):
        """Per-method progress, and the request's time budget: no further method starts after `deadline`."""
        def step(i, n, name):
            if i and time.monotonic() > deadline:
                raise InputError(f"The comparison ran past its time budget of "
                                 f"{self.engine.limits.max_compare_seconds:g} s after {i} of {n} methods; "
                                 "choose fewer methods or images.")
            if progress:
                progress((i, n), desc=f"running {name}")
        return step


def answered(methods: list[Method], results: list[dict]) -> dict[Method, dict]:
    """Each requested method's result: the engine answers every distinct method once, in order. (A result's
    config is the method as the model ran it, e.g. SparseVLM's layers cut to the model's depth, so it is not
    matched by config.)"""
    distinct = list(dict.fromkeys(methods))
    if len(distinct) != len(results) or any(m.name != r["method"] for m, r in zip(distinct, results)):
        raise RuntimeError("the engine's results do not follow the requested methods")
    return dict(zip(distinct, results))


def _payload(summary: dict, found: list[dict], names: list[str]) -> dict:
    results = [{**r, "cached": r.get("cached", True)} for r in found]
    # "path" stays None: gradio_client would take a dict with a string "path" for a file to download.
    return {**summary, "images": [{**s, "path": None, "name": n} for s, n in zip(summary["images"], names)],
            "cached": all(r["cached"] for r in results), "results": results}
