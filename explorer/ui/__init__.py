"""The Gradio web app: layout (page), handlers (events), render (drawing), cache (results on disk).

Gradio only; reaches models through the engine, never model classes.
"""
from .layout import build_demo, launch_kwargs

__all__ = ["build_demo", "launch_kwargs"]
