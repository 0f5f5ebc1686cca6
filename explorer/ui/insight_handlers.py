"""The insight views under the Compare panels: breaking points (one more sweep of compares, through the results
cache), agreement and survival (drawn from the results shown, no model call), answer-token attention (one
probed run). Every failure is a gr.Error."""
from __future__ import annotations

import time

import gradio as gr

from .. import breaking
from ..engine import InputError, open_image
from ..limits import knob_values, whole
from ..methods import REGISTRY, make
from ..settings import SETTINGS
from . import agreement as agree, attention_view, breaking_view, survival as surv
from .compare_runs import CompareRuns
from .errors import raise_user_error
from .inputs import image_paths, parse_reference, session_images


class InsightHandlers:
    """Bound to the Compare tab's `runs` (engine, results cache, model allow-list)."""

    def __init__(self, runs: CompareRuns):
        self.runs, self.engine, self.models = runs, runs.engine, runs.models

    def breaking_points(self, image, prompt, methods, budgets="", layer=SETTINGS.layer, alpha=SETTINGS.alpha,
                        max_new_tokens=SETTINGS.max_new_tokens, seed=SETTINGS.seed, model=None, reference=None,
                        more_images=None, knobs=None, convention=SETTINGS.convention, ranking=SETTINGS.ranking,
                        progress=gr.Progress()):
        """View 1: every selected pruning method at each budget (comma list; empty: the image's token count
        × 1, 1/2, 1/4, 1/9, 1/18, 1/36, 1/72); returns (curves JSON, plot, summary markdown)."""
        paths = image_paths(image, more_images)
        try:
            data = self._breaking(paths, prompt, methods, budgets, layer, alpha, max_new_tokens, seed, model,
                                  parse_reference(reference), knobs, convention, ranking, progress)
            return data, breaking_view.figure(data), breaking_view.summary(data)
        except Exception as exc:  # noqa: BLE001 - one line for the visitor, whatever happened
            raise_user_error("breaking_points", exc, private=self.models.free_form)

    def _breaking(self, paths, prompt, methods, budgets, layer, alpha, max_new_tokens, seed, model, reference,
                  knobs, convention, ranking, progress) -> dict:
        limits = self.engine.limits
        req = self.runs.request(paths, prompt, methods, 1, "tokens", layer, alpha, max_new_tokens, seed, model,
                                knobs, convention, ranking)
        deadline = time.monotonic() + limits.max_analysis_seconds

        def run(methods, done=0, total=1):  # the engine's compare path, through the results cache
            if done and time.monotonic() > deadline:
                raise gr.Error(f"The breaking-point run passed its time budget of {limits.max_analysis_seconds:g} s "
                               f"after {done} of {total} runs; choose fewer methods or budgets.")
            step = (lambda frac, desc="": progress((done + frac[0], total), desc=desc)) if progress else None
            return self.runs.run(req, methods, step)

        vanilla = run([make("vanilla")])
        tokens = min(img["tokens"] for img in vanilla["images"])
        ladder = breaking.parse_budgets(budgets, tokens, limits.max_budgets)
        pruning = [m for m in req.methods if m.prunes]
        if len(pruning) * len(ladder) > limits.max_runs:
            raise InputError(f"That needs {len(pruning) * len(ladder)} runs; the limit is {limits.max_runs}.")
        return {"model": req.model, "prompt": req.prompt, **breaking.breaking_points(
            lambda ms, done, total: run(ms, done, total)["results"], req.methods, ladder,
            vanilla["results"][0], reference)}

    def agreement(self, payload, session=None):
        """View 2: (Jaccard matrix and consensus counts as JSON, matrix plot, consensus overlay); no model call."""
        if not payload or not payload.get("results"):
            return None, None, None
        try:
            data = agree.agreement(payload)
            images = session_images(session, self.engine.limits)
            return data, agree.matrix_figure(data), agree.consensus_image(images, payload, data)
        except Exception as exc:  # noqa: BLE001 - the payload comes from the client
            raise_user_error("agreement", exc)

    def survival(self, payload, session=None):
        """View 3: (frames per cut as JSON, the strip of overlays) for methods that cut more than once or merge."""
        if not payload or not payload.get("results"):
            return None, None
        try:
            data = surv.survival(payload)
            return data, surv.strip_image(session_images(session, self.engine.limits, first=1), payload, data)
        except Exception as exc:  # noqa: BLE001 - the payload comes from the client
            raise_user_error("survival", exc)

    def answer_attention(self, payload, method, token=None, layer=SETTINGS.layer, image=None, more_images=None,
                         session=None):
        """View 4: what the step producing answer token `token` of `method` attended to at decoder `layer` over
        the image tokens (sums to 1 over them), beside vanilla producing the same tokens; (JSON, picture)."""
        if not payload or not payload.get("results"):
            raise gr.Error("Nothing to explain yet: press Compare first.")
        if token is None:
            raise gr.Error("Click a word of the answer first.")
        try:
            paths = session["paths"] if session else image_paths(image, more_images)
            data, result, images = self._attention(payload, method, token, layer, paths)
            return data, attention_view.pair_image(images, payload, result, data)
        except Exception as exc:  # noqa: BLE001 - the payload comes from the client
            raise_user_error("answer_attention", exc, private=self.models.free_form)

    def _attention(self, payload, name, token, layer, paths):
        limits = self.engine.limits
        result = next((r for r in payload["results"] if r.get("method") == name), None)
        if result is None or result.get("status") != "ok":
            raise InputError(f"No answer of {str(name)[:40]!r} in these results: pick a method that ran.")
        self.engine.check_images(paths)
        images = [open_image(p, limits) for p in paths]
        knobs = knob_values(REGISTRY[name], {k: v for k, v in result["config"].items() if k != "method"}, limits)
        method = make(name, **knobs)
        model = self.models.spec(payload.get("model") or self.runs.model_id)
        step = whole(token, "The answer token", 0, limits.max_new_tokens - 1)
        shown = result.get("answer_tokens")
        if shown is not None and step >= len(shown):
            raise InputError(f"The answer has {len(shown)} tokens; choose one of 0-{len(shown) - 1}.")
        mine = self.engine.answer_attention(images, payload["prompt"], method, layer, step, model_id=model,
                                            beside_vanilla=True)
        vanilla = mine["vanilla"]
        word = mine["tokens"][step]
        data = {"method": name, "layer": mine["layer"], "token": step, "word": word, "tokens": mine["tokens"],
                **{side: {"images": r["images"], "image_share": r["image_share"]}
                   for side, r in (("attention", mine), ("vanilla", vanilla))}}
        return data, result, images

    @staticmethod
    def attention_words(payload, method=None):
        """The methods that ran and the chosen one's answer tokens, as (dropdown, radio) updates."""
        ran = [r for r in (payload or {}).get("results", []) if r.get("status") == "ok"]
        names = [r["method"] for r in ran]
        method = method if method in names else (next((n for n in names if n != "vanilla"), None) or
                                                 (names[0] if names else None))
        result = next((r for r in ran if r["method"] == method), {})
        words = result.get("answer_tokens") or (result.get("answer") or "").split()
        return (gr.update(choices=[(r["label"], r["method"]) for r in ran], value=method),
                gr.update(choices=[(f"{w.strip() or '␣'}", i) for i, w in enumerate(words)], value=None))
