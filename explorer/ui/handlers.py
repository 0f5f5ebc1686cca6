"""Event handlers: turn widget values into engine calls and payloads. Every failure is a gr.Error."""
from __future__ import annotations

import json
import math
import logging
import tempfile
import time
from pathlib import Path

import gradio as gr

from ..engine import Engine, InputError, ModelLoadError, open_image
from ..limits import knob_values, real, whole
from ..model_ref import NEUTRAL, AllowList, public_name
from ..methods import REGISTRY, MethodError, make
from ..settings import SETTINGS, Settings, build_methods, checked
from .. import breaking
from . import agreement as agree, attention_view, breaking_view, render, share, survival as surv
from .cache import ResultCache, request_key
from .reselect import reselect as reselect_payload

log = logging.getLogger(__name__)
USER_ERRORS = (InputError, MethodError, ModelLoadError, ValueError)
DOWNLOAD_ORDER = ["results.json", "timings.csv", "panels.png"]


def _gpu(fn):
    """Run under @spaces.GPU on a ZeroGPU Space, with a duration sized to the request."""
    try:
        import spaces
    except ImportError:
        return fn

    def duration(images, prompt, methods, model_id, max_new_tokens, *rest, **kw):
        return min(300, 30 + len(methods) * len(images) * (5 + max_new_tokens // 4))

    return spaces.GPU(duration=duration)(fn)


def parse_reference(text: str | None) -> list[float] | None:
    """'x1, y1, x2, y2' in pixels of the first image, or None when empty."""
    if not text or not str(text).strip():
        return None
    try:
        box = [float(v) for v in str(text).strip().strip("[]()").replace(";", ",").split(",")]
    except ValueError:
        raise gr.Error("The reference box must be four numbers: x1, y1, x2, y2 (pixels).") from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
        raise gr.Error("The reference box must be x1, y1, x2, y2 with x2 > x1 and y2 > y1 (pixels).")
    return box


def parse_knobs(text: str | None) -> dict[str, dict]:
    """Per-method knobs from JSON, e.g. {"fastv_window": {"windows": 2}}; build_methods checks each knob."""
    if not text or not str(text).strip():
        return {}
    if len(str(text)) > 10_000:
        raise gr.Error("Method knobs are too long (at most 10,000 characters).")
    try:
        knobs = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = getattr(exc, "msg", "too deeply nested")
        raise gr.Error(f"Method knobs must be JSON like {{\"fastv_window\": {{\"windows\": 2}}}}: {reason}.") from None
    if not isinstance(knobs, dict) or not all(isinstance(v, dict) for v in knobs.values()):
        raise gr.Error("Method knobs must map a method name to an object of knobs.")
    return knobs


def budget_knobs(keep, unit: str | None) -> tuple[int | None, float | None]:
    """(keep, ratio) from the budget number and its unit ('tokens' or '%')."""
    try:
        value = real(keep, "The budget", -math.inf, math.inf)
    except InputError:
        raise gr.Error(f"The budget must be a number, got {str(keep)[:40]!r}.") from None
    if unit and str(unit).startswith("%"):
        if not 0 < value <= 100:
            raise gr.Error(f"A budget in % must be in (0, 100], got {value:g}.")
        return None, value / 100
    if value < 1 or value != int(value):
        raise gr.Error(f"A budget in tokens must be a whole number >= 1, got {value:g}.")
    return whole(value, "A budget in tokens", 1, 10**6), None


def user_error(what: str, exc: Exception, private: bool = False) -> gr.Error:
    """The gr.Error to raise for `exc` (every caller does `raise user_error(...) from None`): one line for the
    visitor; a log line for a refused request, a traceback only for a real failure.

    On a public page a model that does not load gets a plain sentence (its message may hold a server path)."""
    if isinstance(exc, gr.Error):
        log.info("%s refused: %s", what, exc.message)
        return exc
    if isinstance(exc, ModelLoadError) and str(exc) != NEUTRAL and not private:
        log.warning("%s: model did not load: %s", what, exc)
        return gr.Error("That model could not be loaded here; choose another from the model list.")
    if isinstance(exc, USER_ERRORS):
        log.info("%s refused: %s", what, exc)
        return gr.Error(str(exc).splitlines()[0] if str(exc).strip() else "The request was refused.")
    log.exception("%s failed", what)
    return gr.Error(f"The run failed ({type(exc).__name__}); the server log has the details.")


class Handlers:
    """Bound to one engine and one result cache; the layout wires these to widgets."""

    def __init__(self, engine: Engine, model_id: str, cache: ResultCache | None = None,
                 models: AllowList | None = None):
        self.models = models or AllowList.build(model_id, [])
        self.engine, self.model_id = engine, public_name(model_id)
        self.cache = cache or ResultCache(None)
        self._compute = _gpu(self._run_engine)
        self.publish = str  # the layout sets this to a component's copy-into-Gradio's-cache

    def _run_engine(self, images, prompt, methods, model_id, max_new_tokens, names, progress=None):
        return self.engine.compare(images, prompt, methods, model_id=model_id, max_new_tokens=max_new_tokens,
                                   names=names, progress=progress)

    def compare(self, image, prompt, methods, keep=SETTINGS.keep, layer=SETTINGS.layer, alpha=SETTINGS.alpha,
                budget_unit="tokens", max_new_tokens=SETTINGS.max_new_tokens, seed=SETTINGS.seed, model=None,
                reference=None, more_images=None, knobs=None, convention=SETTINGS.convention,
                ranking=SETTINGS.ranking, progress=gr.Progress()):
        """Run the chosen methods on the image(s); returns (CLI-schema JSON, status line, session).
        `convention`: the budget convention, "paper" (each method as its authors set budgets) or "final";
        `ranking`: images of several grids, "authors" or "per_grid" (see Method)."""
        paths = [p for p in [image, *(more_images or [])] if p]
        try:
            payload = self._compare(paths, prompt, methods, keep, layer, alpha, budget_unit, max_new_tokens,
                                    seed, model, knobs, progress, convention, ranking)
        except Exception as exc:  # noqa: BLE001 - one line for the visitor, whatever happened
            raise user_error("compare", exc, private=self.models.free_form) from None
        payload["reference"] = parse_reference(reference)
        note = "served from the cache" if payload["cached"] else "computed"
        status = f"{len(payload['results'])} method(s) on {len(paths)} image(s), {note} · model `{payload['model']}`"
        skipped = sum(r.get("status") == "not_applicable" for r in payload["results"])
        status += f" · budget convention: {convention}" + (f" · {skipped} not applicable here" if skipped else "")
        return payload, status, {"paths": [str(p) for p in paths]}

    def _compare(self, paths, prompt, methods, keep, layer, alpha, unit, max_new_tokens, seed, model, knobs,
                 progress, convention=SETTINGS.convention, ranking=SETTINGS.ranking):
        req = self._request(paths, prompt, methods, keep, unit, layer, alpha, max_new_tokens, seed, model, knobs,
                            convention, ranking)
        payload = self._cached(req["images"], req["prompt"], req["methods"], req["loaded"].model_id,
                               req["loaded"].revision, req["max_new_tokens"], req["names"], progress)
        return {**payload, "model": req["model"]}

    def _request(self, paths, prompt, methods, keep, unit, layer, alpha, max_new_tokens, seed, model, knobs,
                 convention, ranking) -> dict:
        """The widgets' values checked and built: images, prompt, methods, the loaded model, names."""
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
        loaded = self.engine.model(self.models.spec(name))
        return {"images": images, "prompt": prompt, "methods": built, "loaded": loaded, "model": name,
                "max_new_tokens": settings.max_new_tokens, "names": [Path(p).name for p in paths]}

    def breaking_points(self, image, prompt, methods, budgets="", layer=SETTINGS.layer, alpha=SETTINGS.alpha,
                        max_new_tokens=SETTINGS.max_new_tokens, seed=SETTINGS.seed, model=None, reference=None,
                        more_images=None, knobs=None, convention=SETTINGS.convention, ranking=SETTINGS.ranking,
                        progress=gr.Progress()):
        """View 1: every selected pruning method at each budget (comma list; empty: the image's token count
        × 1, 1/2, 1/4, 1/9, 1/18, 1/36, 1/72); returns (curves JSON, plot, summary markdown)."""
        paths = [p for p in [image, *(more_images or [])] if p]
        try:
            data = self._breaking(paths, prompt, methods, budgets, layer, alpha, max_new_tokens, seed, model,
                                  parse_reference(reference), knobs, convention, ranking, progress)
            return data, breaking_view.figure(data), breaking_view.summary(data)
        except Exception as exc:  # noqa: BLE001 - one line for the visitor, whatever happened
            raise user_error("breaking_points", exc, private=self.models.free_form) from None

    def _breaking(self, paths, prompt, methods, budgets, layer, alpha, max_new_tokens, seed, model, reference,
                  knobs, convention, ranking, progress) -> dict:
        limits = self.engine.limits
        req = self._request(paths, prompt, methods, 1, "tokens", layer, alpha, max_new_tokens, seed, model, knobs,
                            convention, ranking)
        loaded, deadline = req["loaded"], time.monotonic() + limits.max_analysis_seconds

        def run(methods, done=0, total=1):  # the engine's compare path, through the results cache
            if done and time.monotonic() > deadline:
                raise gr.Error(f"The breaking-point run passed its time budget of {limits.max_analysis_seconds:g} s "
                               f"after {done} of {total} runs; choose fewer methods or budgets.")
            step = (lambda frac, desc="": progress((done + frac[0], total), desc=desc)) if progress else None
            return self._cached(req["images"], req["prompt"], methods, loaded.model_id, loaded.revision,
                                req["max_new_tokens"], req["names"], step)

        vanilla = run([make("vanilla")])
        tokens = min(img["tokens"] for img in vanilla["images"])
        ladder = breaking.parse_budgets(budgets, tokens, limits.max_budgets)
        pruning = [m for m in req["methods"] if m.prunes]
        if len(pruning) * len(ladder) > limits.max_runs:
            raise InputError(f"That needs {len(pruning) * len(ladder)} runs; the limit is {limits.max_runs}.")
        return {"model": req["model"], "prompt": req["prompt"], **breaking.breaking_points(
            lambda ms, done, total: run(ms, done, total)["results"], req["methods"], ladder,
            vanilla["results"][0], reference)}

    def _cached(self, images, prompt, methods, model_id, revision, max_new_tokens, names, progress):
        """Per-method cache lookups (no lock: a full hit never waits for model work); compute only the
        misses, under the cache lock, looking again once it is held."""
        blobs = [f"{im.width}x{im.height}".encode() + im.tobytes() for im in images]
        base_key = request_key(blobs, prompt, model_id, revision, [], max_new_tokens)
        keys = [request_key(blobs, prompt, model_id, revision, [m.config()], max_new_tokens) for m in methods]
        summary, found = self.cache.get(base_key), [self.cache.get(k) for k in keys]
        if summary is not None and all(r is not None for r in found):
            return self._payload(summary, found, names)
        with self.cache.lock:
            summary = self.cache.get(base_key)
            found = [self.cache.get(k) for k in keys]
            missing = [m for m, r in zip(methods, found) if r is None]
            if missing or summary is None:
                todo = missing or methods[:1]
                step = self._step(progress, time.monotonic() + self.engine.limits.max_compare_seconds)
                fresh = self._compute(images, prompt, todo, model_id, max_new_tokens, names, step)
                summary = {k: fresh[k] for k in ("model", "revision", "prompt", "images")}
                self.cache.put(base_key, summary)
                by_config = {json.dumps(r["config"], sort_keys=True): r for r in fresh["results"]}
                for i, (m, k) in enumerate(zip(methods, keys)):
                    result = by_config.get(json.dumps(m.config(), sort_keys=True))
                    if found[i] is None and result is not None:
                        self.cache.put(k, result)
                        found[i] = {**result, "cached": False}
        return self._payload(summary, found, names)

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

    @staticmethod
    def _payload(summary: dict, found: list[dict], names: list[str]) -> dict:
        results = [{**r, "cached": r.get("cached", True)} for r in found]
        # "path" stays None: gradio_client would take a dict with a string "path" for a file to download.
        return {**summary, "images": [{**s, "path": None, "name": n} for s, n in zip(summary["images"], names)],
                "cached": all(r["cached"] for r in results), "results": results}

    def reselect(self, payload, alpha=SETTINGS.alpha, keep=SETTINGS.keep, budget_unit="tokens"):
        """Re-select kept tokens at a new α / budget from cached scores; no model call."""
        if not payload or not payload.get("results"):
            return payload
        try:
            keep_n, ratio = budget_knobs(keep, budget_unit)
            return reselect_payload(payload, real(alpha, "α", 0, 1), keep_n, ratio)
        except (gr.Error, InputError) as exc:
            raise user_error("reselect", exc) from None
        except Exception:  # noqa: BLE001 - the payload comes from the client: any shape may arrive
            log.info("reselect refused: malformed results payload")
            raise gr.Error("Cannot re-select: these results are not from this page; run Compare again.") from None

    def render(self, payload, session, heatmap=False):
        """Panel updates (visible, image, caption) per slot, the table, the chart, the download files."""
        try:
            return self._render(payload, session, heatmap)
        except Exception as exc:  # noqa: BLE001 - the payload comes from the client
            raise user_error("render", exc) from None

    def _render(self, payload, session, heatmap):
        slots = len(REGISTRY)
        if not payload or not payload.get("results") or not session:
            hidden = [gr.update(visible=False), None, ""] * slots
            return [*hidden, None, None, None]
        panels, updates = self._panels(payload, session, heatmap), []
        for (img, _), result in zip(panels, payload["results"]):
            updates += [gr.update(visible=True), img, render.caption(result, payload.get("reference"))]
        updates += [gr.update(visible=False), None, ""] * (slots - len(panels))
        return [*updates, render.table_rows(payload), render.chart(payload), None]  # downloads: on request

    def _panels(self, payload, session, heatmap) -> list[tuple]:
        """(panel image, title) per method, drawn on the session's images."""
        images = [open_image(p, self.engine.limits) for p in session["paths"]]
        return [(render.panel_image(images, payload["images"], r, payload.get("reference"), bool(heatmap)),
                 f"{r['method']}: {r['answer']}") for r in payload["results"][:len(REGISTRY)]]

    def downloads(self, payload, session, heatmap=False) -> list[str]:
        """results.json, timings.csv and (with the page's images) panels.png for the results shown, written on
        request into a temporary folder that is removed at once: the files live on only in Gradio's cache
        (one copy per distinct content, removed by the page's delete_cache schedule)."""
        if not payload or not payload.get("results"):
            raise gr.Error("Nothing to download yet: press Compare first.")
        try:
            with tempfile.TemporaryDirectory(prefix="explorer-downloads-") as tmp:
                out = Path(tmp)
                (out / "results.json").write_text(json.dumps(payload, indent=1))
                (out / "timings.csv").write_text(render.to_csv(payload))
                if session and session.get("paths"):
                    render.grid_png(self._panels(payload, session, heatmap)).save(out / "panels.png")
                files = sorted(out.iterdir(), key=lambda f: DOWNLOAD_ORDER.index(f.name))
                return [self.publish(str(f)) for f in files]
        except Exception as exc:  # noqa: BLE001 - the payload comes from the client
            raise user_error("downloads", exc) from None

    def agreement(self, payload, session=None):
        """View 2: (Jaccard matrix and consensus counts as JSON, matrix plot, consensus overlay); no model call."""
        if not payload or not payload.get("results"):
            return None, None, None
        try:
            data = agree.agreement(payload)
            images = [open_image(p, self.engine.limits) for p in session["paths"]] if session else None
            return data, agree.matrix_figure(data), agree.consensus_image(images, payload, data)
        except Exception as exc:  # noqa: BLE001 - the payload comes from the client
            raise user_error("agreement", exc) from None

    def survival(self, payload, session=None):
        """View 3: (frames per cut as JSON, the strip of overlays) for methods that cut more than once or merge."""
        if not payload or not payload.get("results"):
            return None, None
        try:
            data = surv.survival(payload)
            images = [open_image(p, self.engine.limits) for p in session["paths"][:1]] if session else None
            return data, surv.strip_image(images, payload, data)
        except Exception as exc:  # noqa: BLE001 - the payload comes from the client
            raise user_error("survival", exc) from None

    def answer_attention(self, payload, method, token=None, layer=SETTINGS.layer, image=None, more_images=None,
                         session=None):
        """View 4: what the step producing answer token `token` of `method` attended to at decoder `layer` over
        the image tokens (sums to 1 over them), beside vanilla producing the same tokens; (JSON, picture)."""
        if not payload or not payload.get("results"):
            raise gr.Error("Nothing to explain yet: press Compare first.")
        if token is None:
            raise gr.Error("Click a word of the answer first.")
        try:
            paths = session["paths"] if session else [p for p in [image, *(more_images or [])] if p]
            data, result, images = self._attention(payload, method, token, layer, paths)
            return data, attention_view.pair_image(images, payload, result, data)
        except Exception as exc:  # noqa: BLE001 - the payload comes from the client
            raise user_error("answer_attention", exc, private=self.models.free_form) from None

    def _attention(self, payload, name, token, layer, paths):
        limits = self.engine.limits
        result = next((r for r in payload["results"] if r.get("method") == name), None)
        if result is None or result.get("status") != "ok":
            raise InputError(f"No answer of {str(name)[:40]!r} in these results: pick a method that ran.")
        self.engine.check_images(paths)
        images = [open_image(p, limits) for p in paths]
        knobs = knob_values(REGISTRY[name], {k: v for k, v in result["config"].items() if k != "method"}, limits)
        method = make(name, **knobs)
        model = self.models.spec(payload.get("model") or self.model_id)
        step = whole(token, "The answer token", 0, limits.max_new_tokens - 1)
        shown = result.get("answer_tokens")
        if shown is not None and step >= len(shown):
            raise InputError(f"The answer has {len(shown)} tokens; choose one of 0-{len(shown) - 1}.")
        mine = self.engine.answer_attention(images, payload["prompt"], method, layer, step, model_id=model)
        vanilla = mine if name == "vanilla" else self.engine.answer_attention(
            images, payload["prompt"], make("vanilla"), layer, step, model_id=model, forced=mine["token_ids"])
        word = mine["tokens"][step]
        data = {"method": name, "layer": mine["layer"], "token": step, "word": word, "tokens": mine["tokens"],
                **{side: {"images": r["images"], "image_share": r["image_share"]}
                   for side, r in (("attention", mine), ("vanilla", vanilla))}}
        return data, result, images

    def attention_words(self, payload, method=None):
        """The methods that ran and the chosen one's answer tokens, as (dropdown, radio) updates."""
        ran = [r for r in (payload or {}).get("results", []) if r.get("status") == "ok"]
        names = [r["method"] for r in ran]
        method = method if method in names else (next((n for n in names if n != "vanilla"), None) or
                                                 (names[0] if names else None))
        result = next((r for r in ran if r["method"] == method), {})
        words = result.get("answer_tokens") or (result.get("answer") or "").split()
        return (gr.update(choices=[(r["label"], r["method"]) for r in ran], value=method),
                gr.update(choices=[(f"{w.strip() or '␣'}", i) for i, w in enumerate(words)], value=None))

    def share(self, payload, session=None, image=None, more_images=None, prompt=None, methods=None, keep=None,
              budget_unit=None, layer=None, alpha=None, max_new_tokens=None, seed=None, model=None, reference=None,
              knobs=None, convention=None, ranking=None, request: gr.Request = None):
        """Store the inputs, images and results under an id; returns the page link that reopens them."""
        values = [prompt, methods, keep, budget_unit, layer, alpha, max_new_tokens, seed, model, reference, knobs,
                  convention, ranking]  # share.FIELDS, in order
        if not payload or not payload.get("results"):
            raise gr.Error("Nothing to share yet: press Compare first.")
        if not self.cache.enabled:
            raise gr.Error("Sharing needs the results cache, which is off on this server.")
        try:
            paths = session["paths"] if session else [p for p in [image, *(more_images or [])] if p]
            self.engine.check_images(paths)
            blobs = [Path(p).read_bytes() for p in paths]
            share_id, record = share.pack(dict(zip(share.FIELDS, values)), payload, blobs)
            self.cache.put(share.PREFIX + share_id, record)
        except Exception as exc:  # noqa: BLE001 - one line for the visitor
            raise user_error("share", exc) from None
        page = (request.headers.get("referer") if request else "") or ""
        return f"{page.split('?')[0]}?share={share_id}"

    def shared(self, share_id):
        """The stored record of a share id: {"inputs", "payload", "images": [base64]}."""
        record = self.cache.get(share.PREFIX + share_id) if share.valid(share_id) else None
        if record is None:
            raise gr.Error("That shared link is unknown or has expired here.")
        return record

    def reopen(self, request: gr.Request):
        """On page load with ?share=<id>: the inputs, images, results and session to put back (no model run)."""
        share_id = request.query_params.get("share") if request else None
        if not share_id:
            return [gr.update()] * (len(share.FIELDS) + 5)
        record = self.shared(share_id)
        paths = []
        for i, blob in enumerate(share.images_of(record)):
            with tempfile.TemporaryDirectory(prefix="explorer-share-") as tmp:
                own = Path(tmp) / f"image-{i}.png"
                own.write_bytes(blob)
                paths.append(self.publish(str(own)))
        values = share.inputs_of(record)
        note = f"Reopened shared results `{share_id}` (no model run)."
        return [paths[0], paths[1:] or None, *values, record["payload"], {"paths": paths}, note]

    def pick_box(self, reference, evt: gr.SelectData):
        """Two clicks on the input image draw a reference box (first corner, then the opposite one)."""
        x, y = evt.index[0], evt.index[1]
        parts = [p for p in str(reference or "").replace(" ", "").split(",") if p]
        if len(parts) == 2:
            x0, y0 = float(parts[0]), float(parts[1])
            return f"{min(x0, x):g}, {min(y0, y):g}, {max(x0, x):g}, {max(y0, y):g}"
        return f"{x:g}, {y:g}"
