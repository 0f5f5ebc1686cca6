"""The Compare tab's events: run the methods, re-select at a new α / budget, draw the panels, downloads, and
share links. Every failure is a gr.Error."""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import gradio as gr

from ..engine import Engine, InputError
from ..limits import real
from ..methods import REGISTRY
from ..model_ref import AllowList
from ..settings import SETTINGS
from . import render, share
from .cache import ResultCache
from .compare_runs import CompareRuns
from .errors import raise_user_error
from .inputs import budget_knobs, image_paths, parse_reference, session_images
from .reselect import reselect as reselect_payload

log = logging.getLogger(__name__)
DOWNLOAD_ORDER = ["results.json", "timings.csv", "panels.png"]


class CompareHandlers:
    """Bound to one engine and one result cache (through `runs`, which the insight views share)."""

    def __init__(self, engine: Engine, model_id: str, cache: ResultCache | None = None,
                 models: AllowList | None = None):
        self.runs = CompareRuns(engine, model_id, cache, models)
        self.engine, self.models, self.cache = engine, self.runs.models, self.runs.cache
        self.publish = str  # the layout sets this to a component's copy-into-Gradio's-cache

    def compare(self, image, prompt, methods, keep=SETTINGS.keep, layer=SETTINGS.layer, alpha=SETTINGS.alpha,
                budget_unit="tokens", max_new_tokens=SETTINGS.max_new_tokens, seed=SETTINGS.seed, model=None,
                reference=None, more_images=None, knobs=None, convention=SETTINGS.convention,
                ranking=SETTINGS.ranking, progress=gr.Progress()):
        """Run the chosen methods on the image(s); returns (CLI-schema JSON, status line, session).
        `convention`: the budget convention, "paper" (each method as its authors set budgets) or "final";
        `ranking`: images of several grids, "authors" or "per_grid" (see Method)."""
        paths = image_paths(image, more_images)
        try:
            req = self.runs.request(paths, prompt, methods, keep, budget_unit, layer, alpha, max_new_tokens, seed,
                                    model, knobs, convention, ranking)
            payload = {**self.runs.run(req, progress=progress), "model": req.model}
        except Exception as exc:  # noqa: BLE001 - one line for the visitor, whatever happened
            raise_user_error("compare", exc, private=self.models.free_form)
        payload["reference"] = parse_reference(reference)
        note = "served from the cache" if payload["cached"] else "computed"
        status = f"{len(payload['results'])} method(s) on {len(paths)} image(s), {note} · model `{payload['model']}`"
        skipped = sum(r.get("status") == "not_applicable" for r in payload["results"])
        status += f" · budget convention: {convention}" + (f" · {skipped} not applicable here" if skipped else "")
        return payload, status, {"paths": [str(p) for p in paths]}

    def reselect(self, payload, alpha=SETTINGS.alpha, keep=SETTINGS.keep, budget_unit="tokens"):
        """Re-select kept tokens at a new α / budget from cached scores; no model call."""
        if not payload or not payload.get("results"):
            return payload
        try:
            keep_n, ratio = budget_knobs(keep, budget_unit)
            return reselect_payload(payload, real(alpha, "α", 0, 1), keep_n, ratio)
        except (gr.Error, InputError) as exc:
            raise_user_error("reselect", exc)
        except Exception:  # noqa: BLE001 - the payload comes from the client: any shape may arrive
            log.info("reselect refused: malformed results payload")
            raise gr.Error("Cannot re-select: these results are not from this page; run Compare again.") from None

    def render(self, payload, session, heatmap=False):
        """Panel updates (visible, image, caption) per slot, the table, the chart, the download files."""
        try:
            return self._render(payload, session, heatmap)
        except Exception as exc:  # noqa: BLE001 - the payload comes from the client
            raise_user_error("render", exc)

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
        images = session_images(session, self.engine.limits)
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
            raise_user_error("downloads", exc)

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
            paths = session["paths"] if session else image_paths(image, more_images)
            self.engine.check_images(paths)
            blobs = [Path(p).read_bytes() for p in paths]
            share_id, record = share.pack(dict(zip(share.FIELDS, values)), payload, blobs)
            self.cache.put(share.PREFIX + share_id, record)
        except Exception as exc:  # noqa: BLE001 - one line for the visitor
            raise_user_error("share", exc)
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
