"""The Gradio web app: layout (the page); compare_handlers and insight_handlers (its events); compare_runs (the
compare path behind the results cache); inputs and errors (widget values in, one-line errors out); render and
the *_view modules (drawing); cache (results on disk).

Gradio only; reaches models through the engine, never model classes.
"""
from .layout import build_demo, launch_kwargs

__all__ = ["build_demo", "launch_kwargs"]
