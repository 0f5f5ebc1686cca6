"""The "Analysis" tab: a small sweep (tens of toy-world samples) on the current model, with a progress bar,
showing the paper-shaped table and plots. Bigger sweeps are the CLI's job (`python -m explorer.eval sweep`)."""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from ..engine import Engine, InputError
from ..eval.quick import run_small_sweep
from ..eval.sweep import configs
from ..eval.tasks import TASKS
from ..limits import method_names, real, sweep_size, whole
from ..model_ref import AllowList, public_name
from ..methods import REGISTRY
from ..settings import PRESETS, SETTINGS, Settings, checked, preset
from . import conventions
from .errors import raise_user_error

DEFAULTS = PRESETS["analysis"]  # task, budgets, samples and methods, measured to say something (settings.py)
FILE_ROUTE = "/gradio_api/file="  # where Gradio serves files from its cache
ABANDONED_S = 3.0  # no progress line taken for this long: the visitor cancelled or left, the sweep stops
ABOUT = """Runs the chosen methods on **n fresh toy-world samples** of one task (seeded; the same n samples for
every method) and shows the table the paper would print: accuracy per method and budget, *Avg.* as % of
vanilla, the latency-vs-FLOPs table, and where each method's kept tokens sit (position bias, Fig. 2). With α
values given, the α method is swept too (Table 4). The model and the multi-grid ranking are the Compare tab's.
A sweep of 20 samples × 6 methods takes a minute or two on a laptop CPU; for hundreds of samples use
`python -m explorer.eval sweep` (resumable, sharded)."""


class AnalysisHandlers:
    def __init__(self, engine: Engine, model_id: str, models: AllowList | None = None):
        self.models = models or AllowList.build(model_id, [])
        self.engine, self.model_id = engine, public_name(model_id)
        self.publish = str  # analysis_tab sets this to a component's copy-into-Gradio's-cache

    def run(self, task, methods, keeps, n, alphas, model, convention=SETTINGS.convention, ranking=SETTINGS.ranking,
            progress=gr.Progress()):
        """Small sweep -> (markdown report, [plot paths]); every bound checked before any model work.

        A generator: the sweep runs in a worker thread while this yields a progress line every second. When the
        visitor cancels or goes away, Gradio stops pulling (or closes) it; the worker notices that the progress
        lines are no longer taken (none for ABANDONED_S seconds) and stops after the run in progress.
        """
        try:
            chosen = checked(Settings(convention=convention, ranking=ranking), self.engine.limits)
            job = {**self._plan(task, methods, keeps, n, alphas, model), "convention": chosen.convention,
                   "ranking": chosen.ranking}
        except Exception as exc:  # noqa: BLE001 - one line for the visitor, whatever happened
            raise_user_error("analysis", exc, private=self.models.free_form)
        scratch = tempfile.mkdtemp(prefix="explorer-analysis-")  # records and PNGs; removed when this ends
        job["out"] = scratch
        stop, state = threading.Event(), {"line": "starting", "pulled": time.monotonic()}
        deadline = time.monotonic() + self.engine.limits.max_analysis_seconds

        def tick(done, total, text):
            if stop.is_set() or time.monotonic() - state["pulled"] > ABANDONED_S:
                raise InputError("The analysis was cancelled.")
            if time.monotonic() > deadline:
                raise InputError(f"The analysis ran past its time budget of "
                                 f"{self.engine.limits.max_analysis_seconds:g} s after {done} of {total} runs; "
                                 "ask for fewer samples or methods.")
            state["line"] = f"{done} of {total} runs · {text}"
            progress(done / max(total, 1), desc=text)

        def work():
            try:
                state["result"] = run_small_sweep(self.engine, progress=tick, **job)
            except BaseException as exc:  # noqa: BLE001 - handed to the generator below
                state["error"] = exc

        worker = threading.Thread(target=work, name="analysis", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                state["pulled"] = time.monotonic()  # the consumer asked for the next line
                worker.join(timeout=1.0)
                if worker.is_alive():
                    yield f"Running: {state['line']}", gr.skip()
            if "error" in state:
                raise_user_error("analysis", state["error"], private=self.models.free_form)
            yield self._served(*state["result"])
        finally:
            stop.set()  # normal end, cancel or a client gone: the worker stops after the run in progress
            shutil.rmtree(scratch, ignore_errors=True)

    def _served(self, report: str, plots: list[str]) -> tuple[str, list[str]]:
        """The report with its images pointing at Gradio's copies (served, unlike the scratch folder's
        relative names), and those copies for the gallery."""
        served = [self.publish(p) for p in plots]
        for path, copy in zip(plots, served):
            report = report.replace(f"]({Path(path).name})", f"]({FILE_ROUTE}{quote(copy)})")
        return report, served

    def _plan(self, task, methods, keeps, n, alphas, model) -> dict:
        """Every bound of the request checked; the keyword arguments of run_small_sweep."""
        limits = self.engine.limits
        if task not in TASKS:
            raise InputError(f"Unknown task {str(task)[:40]!r}.")
        methods = method_names(methods, limits, REGISTRY)
        budgets = [whole(v, "A budget", 1, 10**6) for v in _numbers(keeps, "budgets", limits.max_budgets)]
        alpha_values = ([real(v, "An α value", 0, 1) for v in _numbers(alphas, "α values", limits.max_alphas)]
                        if str(alphas or "").strip() else None)
        n = whole(n or 0, "Samples", 0, 10**9)
        sweep_size(n, len(configs(methods, budgets, alpha_values)), budgets, alpha_values, limits)
        name = (model or "").strip() or self.model_id
        return dict(task=task, methods=methods, keep=budgets, n=n, model_id=self.models.spec(name),
                    alphas=alpha_values, model_name=name)


def _numbers(text, what: str, most: int) -> list[str]:
    """Distinct comma-separated values (as text), at most `most` of them."""
    text = str(text or "")
    values = list(dict.fromkeys(v for v in text.replace(" ", "").split(",") if v))
    if not values:
        raise InputError(f"Give at least one value for the {what}.")
    if len(values) > most:
        raise InputError(f"At most {most} {what} per analysis, got {len(values)}.")
    for v in values:
        try:
            float(v)
        except ValueError:
            raise InputError(f"The {what} must be comma-separated numbers, e.g. 144,64.") from None
    return values


def analysis_tab(engine: Engine, model_id: str, model_box, ranking_box, gpu: dict,
                 models: AllowList | None = None) -> None:
    """Build the tab's controls inside the current Blocks context; `model_box` and `ranking_box` are the Compare
    tab's model dropdown and multi-grid ranking."""
    h = AnalysisHandlers(engine, model_id, models)
    gr.Markdown(ABOUT)
    with gr.Row():
        task = gr.Dropdown(list(TASKS), value=DEFAULTS.task, label="Task", elem_id="analysis-task")
        n = gr.Number(DEFAULTS.samples, label=f"Samples (≤ {engine.limits.max_samples})", precision=0,
                      elem_id="analysis-n")
        keeps = gr.Textbox(",".join(map(str, DEFAULTS.budgets)), label="Budgets (tokens kept, comma-separated)",
                           elem_id="analysis-keep")
        alphas = gr.Textbox("", label="α values (optional, e.g. 0,0.5,1)", elem_id="analysis-alpha")
        convention = conventions.budget_radio("analysis-convention", info=False)
    methods = gr.CheckboxGroup([(REGISTRY[m].label, m) for m in REGISTRY], value=preset("analysis"),
                               label="Methods", elem_id="analysis-methods")
    go = gr.Button("Run analysis", variant="primary", elem_id="analysis-run")
    report = gr.Markdown(elem_id="analysis-report")
    plots = gr.Gallery(label="Plots", columns=2, height=420, elem_id="analysis-plots")
    h.publish = plots.move_resource_to_block_cache
    go.click(h.run, inputs=[task, methods, keeps, n, alphas, model_box, convention, ranking_box],
             outputs=[report, plots],
             api_name="analysis", **gpu)
