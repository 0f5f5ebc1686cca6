"""The "Analysis" tab: a small sweep (tens of toy-world samples) on the current model, with a progress bar,
showing the paper-shaped table and plots. Bigger sweeps are the CLI's job (`python -m explorer.eval sweep`)."""
from __future__ import annotations

import gradio as gr

from ..engine import Engine, InputError
from ..eval.quick import run_small_sweep
from ..eval.tasks import TASKS
from ..methods import REGISTRY, MethodError
from ..models import ModelLoadError

MAX_SAMPLES = 60
DEFAULT = ["vanilla", "random", "pooling", "fastv", "fastv_window"]
ABOUT = """Runs the chosen methods on **n fresh toy-world samples** of one task (seeded; the same n samples for
every method) and shows the table the paper would print: accuracy per method and budget, *Avg.* as % of
vanilla, the latency-vs-FLOPs table, and where each method's kept tokens sit (position bias, Fig. 2). With α
values given, the α method is swept too (Table 4). A sweep of 20 samples × 5 methods takes about a minute on a
laptop CPU; for hundreds of samples use `python -m explorer.eval sweep` (resumable, sharded)."""


class AnalysisHandlers:
    def __init__(self, engine: Engine, model_id: str):
        self.engine, self.model_id = engine, model_id

    def run(self, task, methods, keeps, n, alphas, model, progress=gr.Progress()):
        """Small sweep -> (markdown report, [plot paths])."""
        try:
            budgets = _numbers(keeps, int, "budgets")
            alpha_values = _numbers(alphas, float, "α values") if (alphas or "").strip() else None
            if not methods:
                raise InputError("Choose at least one method.")
            n = int(n or 0)
            if not 1 <= n <= MAX_SAMPLES:
                raise InputError(f"Samples must be between 1 and {MAX_SAMPLES} here; use the CLI for more.")
            if task not in TASKS:
                raise InputError(f"Unknown task {task!r}.")
            progress(0, desc="starting")

            def tick(done, total, text):
                progress(done / max(total, 1), desc=text)

            return run_small_sweep(self.engine, task, list(methods), budgets, n=n, progress=tick,
                                   model_id=model or self.model_id, alphas=alpha_values)
        except (InputError, MethodError, ModelLoadError, ValueError) as exc:
            raise gr.Error(str(exc)) from None


def _numbers(text, kind, what):
    try:
        values = [kind(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise InputError(f"The {what} must be comma-separated numbers, e.g. 144,64.") from None
    if not values:
        raise InputError(f"Give at least one value for the {what}.")
    return values


def analysis_tab(engine: Engine, model_id: str, model_box, gpu: dict) -> None:
    """Build the tab's controls inside the current Blocks context; `model_box` is the page's model dropdown."""
    h = AnalysisHandlers(engine, model_id)
    gr.Markdown(ABOUT)
    with gr.Row():
        task = gr.Dropdown(list(TASKS), value="pope", label="Task", elem_id="analysis-task")
        n = gr.Number(20, label=f"Samples (≤ {MAX_SAMPLES})", precision=0, elem_id="analysis-n")
        keeps = gr.Textbox("144,64", label="Budgets (tokens kept, comma-separated)", elem_id="analysis-keep")
        alphas = gr.Textbox("", label="α values (optional, e.g. 0,0.5,1)", elem_id="analysis-alpha")
    methods = gr.CheckboxGroup([(REGISTRY[m].label, m) for m in REGISTRY], value=[m for m in DEFAULT if m in REGISTRY],
                               label="Methods", elem_id="analysis-methods")
    go = gr.Button("Run analysis", variant="primary", elem_id="analysis-run")
    report = gr.Markdown(elem_id="analysis-report")
    plots = gr.Gallery(label="Plots", columns=2, height=420, elem_id="analysis-plots")
    go.click(h.run, inputs=[task, methods, keeps, n, alphas, model_box], outputs=[report, plots],
             api_name="analysis", **gpu)
