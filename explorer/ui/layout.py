"""The page: inputs, one panel slot per registered method, the timing table, the chart, downloads.

Every listener has an api_name. Compare runs with several workers so answers from the results cache never
wait behind model work; the engine's work lock runs one model computation at a time, and the Analysis sweep
has its own one-worker queue (concurrency id "gpu").
"""
from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from ..engine import EMBEDDED_MODEL, Engine
from ..model_ref import AllowList, public_name
from ..methods import REGISTRY
from ..settings import SETTINGS, preset
from . import agreement, attention_view, breaking_view, conventions, examples, render, survival, text
from .analysis import analysis_tab
from .cache import ResultCache
from .compare_handlers import CompareHandlers
from .inputs import pick_box
from .insight_handlers import InsightHandlers
from .knobs import knob_controls

HUB_MODELS = ["llava-hf/llava-1.5-7b-hf", "llava-hf/llava-v1.6-vicuna-7b-hf", "Qwen/Qwen2-VL-2B-Instruct",
              "Qwen/Qwen2-VL-7B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct",
              "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "llava-hf/llava-onevision-qwen2-7b-ov-hf",
              "Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-8B-Instruct"]
CSS = """
.method-panel {border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px;}
.method-panel .prose p {font-size: 0.9em; margin: 2px 0;}
#panels {flex-wrap: wrap;}
#panels > .method-panel {flex: 0 1 calc((100% - 2 * var(--layout-gap)) / 3) !important; min-width: 300px;}
"""
DRAG_BOX_JS = Path(__file__).with_name("drag_box.js")  # drag on the input image: the reference box
DELETE_CACHE = (1800, 3600)  # every 30 min, files this page put in Gradio's cache over an hour ago are removed
# wide enough for every header word ("averaged", "ms/token") on one line; the answer takes the rest
TABLE_WIDTHS = ["132px", "72px", "76px", "90px", "76px", "64px", "70px", "80px", "70px", "90px", "150px", "auto"]
GPU = {"concurrency_id": "gpu", "concurrency_limit": 1}
COMPARE = {"concurrency_id": "compare", "concurrency_limit": 16}  # cached answers come back while a run is busy


def launch_kwargs() -> dict:
    """Arguments Gradio 6 wants on launch() rather than Blocks() (theme, css), plus the upload bound."""
    return {"css": CSS, "theme": gr.themes.Soft(), "max_file_size": "25mb", "show_error": True,
            "js": DRAG_BOX_JS.read_text()}


def allow_list(model_id: str, folders: list[str] = (), free_form: bool | None = None) -> AllowList:
    """The models this page offers: the default, the embedded model, HUB_MODELS and operator-named folders.

    `free_form` (default: $EXPLORER_ANY_MODEL=1) lets a private box load any hub id or folder by name.
    """
    if free_form is None:
        free_form = os.environ.get("EXPLORER_ANY_MODEL") == "1"
    embedded = [str(EMBEDDED_MODEL)] if (EMBEDDED_MODEL / "config.json").exists() else []
    return AllowList.build(model_id, [*embedded, *HUB_MODELS], list(folders), free_form=free_form)


def _friendly(component, message: str, invalid: str = "Send an uploaded file here, not a path or text."):
    """Turn a component's validation or preprocessing failure (a plain path string, a corrupt upload) into a
    one-line gr.Error instead of a validation dump."""
    original = component.preprocess
    model = getattr(component, "data_model", None)
    if model is not None:
        class Friendly(model):
            @classmethod
            def model_validate(cls, obj, *args, **kwargs):
                try:
                    return model.model_validate(obj, *args, **kwargs)
                except Exception:  # noqa: BLE001 - pydantic's multi-line dump would echo the value
                    raise gr.Error(invalid) from None

        component.data_model = Friendly

    def preprocess(payload):
        try:
            return original(payload)
        except gr.Error:
            raise
        except Exception:  # noqa: BLE001 - PIL raises many kinds
            raise gr.Error(message) from None  # never a stack trace

    component.preprocess = preprocess
    return component


def build_demo(engine: Engine, model_id: str, cache: ResultCache | None = None,
               models: AllowList | None = None) -> gr.Blocks:
    """The explorer page bound to one engine; `model_id` is the default model, `models` what it offers
    (default: `allow_list(model_id)`)."""
    models = models or allow_list(model_id)
    engine.pin(models.spec(public_name(model_id)))
    h = CompareHandlers(engine, model_id, cache if cache is not None else ResultCache(), models)
    views = InsightHandlers(h.runs)
    names = list(REGISTRY)
    with gr.Blocks(title="Token Pruning Explorer", analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(text.INTRO)
        with gr.Tab("Compare"):
            session = gr.State(None)
            with gr.Row():
                with gr.Column(scale=5):
                    image = gr.Image(type="filepath", label="Image (upload, paste or webcam; drag, or click twice, "
                                     "to draw a reference box)", sources=["upload", "clipboard", "webcam"], height=320,
                                     image_mode=None, elem_id="input-image")  # the file as sent: the engine normalises
                    _friendly(image, "The upload is not a readable image (PNG, JPEG, WebP ...) or is too large.",
                              "The image must be an uploaded image file, not a path or text.")
                    more = gr.File(file_count="multiple", file_types=["image"], label="More images (multi-image "
                                   "questions)", height=120)
                    _friendly(more, "More images must be readable image files (PNG, JPEG, WebP ...).",
                              "More images must be uploaded image files, not paths or text.")
                    prompt = gr.Textbox(label="Prompt", placeholder="Ask something about the image", elem_id="prompt")
                    reference = gr.Textbox(label="Reference box x1, y1, x2, y2 (pixels of the first image; optional)",
                                           elem_id="reference")
                    note = gr.Textbox(text.FIRST_LOOK, label="What to look for", interactive=False, lines=2)
                    gallery = examples.load()  # beside the inputs they fill, where a first visit sees them
                    if gallery:
                        gr.Examples(examples.rows(gallery), inputs=[image, more, prompt, reference, note],
                                    label="Examples", examples_per_page=16,
                                    example_labels=[e["file"].rsplit(".", 1)[0] for e in gallery])
                with gr.Column(scale=4):
                    # custom values reach the handler, which refuses names outside the list in one sentence
                    model = gr.Dropdown(models.choices(), value=h.runs.model_id, label="Model", allow_custom_value=True,
                                        elem_id="model")
                    methods = gr.CheckboxGroup([(REGISTRY[n].label, n) for n in names],
                                               value=preset("app"), label="Methods",
                                               elem_id="methods")
                    with gr.Row():
                        keep = gr.Number(SETTINGS.keep, label="Budget", elem_id="keep")
                        unit = gr.Radio(["tokens", "% of tokens"], value="tokens", label="Budget unit")
                        layer = gr.Number(SETTINGS.layer, label="Layer K", minimum=0, precision=0, elem_id="layer")
                    convention = conventions.budget_radio("convention")
                    ranking = conventions.ranking_radio("ranking")
                    alpha = gr.Slider(0, 1, value=SETTINGS.alpha, step=0.05,
                                      label="α (α-blend method; re-selects at once)", elem_id="alpha")
                    with gr.Row():
                        max_new = gr.Slider(1, 128, value=SETTINGS.max_new_tokens, step=1, label="Max new tokens")
                        seed = gr.Number(SETTINGS.seed, label="Seed (random)", precision=0)
                    knobs = gr.Textbox(label="Advanced: method knobs as JSON (the controls above write it)",
                                       placeholder='{"fastv_window": {"windows": 2}}', elem_id="knobs", render=False)
                    with gr.Accordion("Method knobs (each selected method's own settings)", open=False,
                                      elem_id="knob-panel"):
                        knob_controls(REGISTRY, methods.value, methods, knobs)
                        knobs.render()
                    heatmap = gr.Checkbox(False, label="Show score heat map instead of kept/pruned")
                    run = gr.Button("Compare", variant="primary", elem_id="run")
            status = gr.Markdown(elem_id="status", label="status")
            slots = []
            with gr.Row(equal_height=False, elem_id="panels"):  # panels one size: a last, lone one does not stretch
                for i in range(len(names)):
                    with gr.Column(visible=False, min_width=300, elem_classes=["method-panel"]) as col:
                        img = gr.Image(show_label=False, interactive=False, height=300, elem_classes=["panel-image"],
                                       buttons=["download", "fullscreen"])
                        cap = gr.Markdown()
                    slots += [col, img, cap]
            with gr.Accordion("Agreement between methods: which tokens do they keep alike?", open=True,
                              elem_id="agreement"):
                gr.Markdown(agreement.ABOUT)
                with gr.Row():
                    matrix = gr.Image(label="Jaccard of the kept sets", show_label=False, interactive=False,
                                      height=360, elem_id="agreement-matrix", buttons=["download", "fullscreen"])
                    consensus = gr.Image(label="Consensus of the pruning methods", show_label=False,
                                         interactive=False, height=360, elem_id="consensus",
                                         buttons=["download", "fullscreen"])
                agreed = gr.JSON(label="agreement (methods, kept sets, matrix, consensus counts)", visible=False)
            with gr.Accordion("Answer-token attention: which image tokens did a word of the answer look at?",
                              open=True, elem_id="attention"):
                gr.Markdown(attention_view.ABOUT)
                with gr.Row():
                    attn_method = gr.Dropdown([], label="Method", elem_id="attn-method", scale=2,
                                              allow_custom_value=True)  # the handler refuses unknown names
                    attn_layer = gr.Number(SETTINGS.layer, label="Decoder layer", minimum=0, precision=0,
                                           elem_id="attn-layer", scale=1)
                attn_words = gr.Radio([], label="Click a word of the answer", elem_id="attn-words")
                attn_token = gr.Number(None, precision=0, visible=False)  # the clicked word's index (and the API's)
                attn_image = gr.Image(show_label=False, interactive=False, height=340, elem_id="attn-image",
                                      buttons=["download", "fullscreen"])
                attn_data = gr.JSON(label="answer-token attention", visible=False)
            with gr.Accordion("Survival per layer: which tokens live through each cut?", open=False,
                              elem_id="survival"):
                gr.Markdown(survival.ABOUT)
                strip = gr.Image(show_label=False, interactive=False, elem_id="survival-strip",
                                 buttons=["download", "fullscreen"])
                frames = gr.JSON(label="survival (frames per cut)", visible=False)
            with gr.Accordion("Breaking points: down to which budget does each method still answer like vanilla?",
                              open=True, elem_id="breaking"):
                gr.Markdown(breaking_view.ABOUT)
                with gr.Row():
                    budgets = gr.Textbox(label="Budgets (tokens, comma-separated; empty: the default ladder)",
                                         placeholder="576, 288, 144, 64, 32, 16, 8", elem_id="breaking-budgets",
                                         scale=3)
                    find = gr.Button("Find breaking points", elem_id="breaking-run", scale=1)
                breaking_plot = gr.Image(show_label=False, interactive=False, height=340, elem_id="breaking-plot",
                                         buttons=["download", "fullscreen"])
                breaking_summary = gr.Markdown(elem_id="breaking-summary")
                breaking_data = gr.JSON(label="breaking points", visible=False)
            table = gr.Dataframe(headers=render.TABLE_HEADERS, label="Timing and cost per method", interactive=False,
                                 wrap=True, column_widths=TABLE_WIDTHS, elem_id="timing-table")
            with gr.Row():
                chart = gr.Image(label="Latency vs FLOPs: fewer FLOPs is not always faster", interactive=False,
                                 height=320)
                with gr.Column():
                    save = gr.Button("Prepare downloads (results.json, timings.csv, panels.png)", elem_id="save")
                    share_btn = gr.Button("Share: a link that reopens these inputs and results", elem_id="share")
                    link = gr.Textbox(label="Link to these results", interactive=False, elem_id="share-link",
                                      buttons=["copy"])
                    files = gr.File(label="Downloads", file_count="multiple", elem_id="downloads")
            h.publish = files.move_resource_to_block_cache
            with gr.Accordion("Legend, methods and what to look for", open=False):
                gr.Markdown(text.LEGEND)
                gr.Markdown(text.method_help(REGISTRY))
                gr.Markdown(text.LOOK_FOR)
            with gr.Accordion("Raw results (the CLI's --json schema)", open=False):
                result = gr.JSON(label="results", elem_id="result-json")

            view = dict(fn=h.render, inputs=[result, session, heatmap], outputs=[*slots, table, chart, files])
            args = [image, prompt, methods, keep, layer, alpha, unit, max_new, seed, model, reference, more, knobs,
                    convention, ranking]
            gr.on([run.click, prompt.submit], h.compare, inputs=args, outputs=[result, status, session],
                  api_name="compare", **COMPARE).success(api_name="render", api_visibility="undocumented", **view)
            gr.on([alpha.change, keep.submit, unit.input], h.reselect, inputs=[result, alpha, keep, unit],
                  outputs=result, api_name="reselect", trigger_mode="always_last").success(
                api_name="rerender", api_visibility="undocumented", **view)
            heatmap.input(api_name="heatmap", api_visibility="undocumented", **view)
            result.change(views.agreement, inputs=[result, session], outputs=[agreed, matrix, consensus],
                          api_name="agreement")
            result.change(views.survival, inputs=[result, session], outputs=[frames, strip], api_name="survival")
            gr.on([result.change, attn_method.input], views.attention_words, inputs=[result, attn_method],
                  outputs=[attn_method, attn_words], api_visibility="private", show_progress="hidden")
            explain = dict(fn=views.answer_attention, inputs=[result, attn_method, attn_token, attn_layer, image,
                                                             more, session], outputs=[attn_data, attn_image], **COMPARE)
            attn_words.input(lambda i: i, attn_words, attn_token, api_visibility="private", show_progress="hidden"
                             ).then(api_name="answer_attention", **explain)
            attn_layer.submit(api_visibility="private", **explain)
            share_inputs = [prompt, methods, keep, unit, layer, alpha, max_new, seed, model, reference, knobs,
                            convention, ranking]
            share_btn.click(h.share, inputs=[result, session, image, more, *share_inputs], outputs=link,
                            api_name="share")
            share_id = gr.Textbox(visible=False)
            share_id.submit(h.shared, inputs=share_id, outputs=gr.JSON(visible=False), api_name="shared")
            demo.load(h.reopen, outputs=[image, more, *share_inputs, result, session, status], api_visibility="private"
                      ).success(api_visibility="private", **view)
            save.click(h.downloads, inputs=[result, session, heatmap], outputs=files, api_name="downloads")
            find.click(views.breaking_points, inputs=[image, prompt, methods, budgets, layer, alpha, max_new, seed,
                                                      model, reference, more, knobs, convention, ranking],
                       outputs=[breaking_data, breaking_plot, breaking_summary], api_name="breaking_points", **COMPARE)
            image.select(pick_box, inputs=reference, outputs=reference, api_name="pick_box",
                         api_visibility="undocumented")
        with gr.Tab("Analysis"):
            analysis_tab(engine, model_id, model, ranking, GPU, models)
    return demo
