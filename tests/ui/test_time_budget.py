"""A Compare request's time budget: no further method starts once it is spent (one line, no crash)."""
from __future__ import annotations

import gradio as gr
import pytest

from explorer.engine import Engine
from explorer.limits import Limits
from explorer.testing import EXAMPLES
from explorer.ui.compare_handlers import CompareHandlers


def test_compare_stops_starting_methods_after_its_time_budget(tiny_model):
    engine = Engine(threads=1, limits=Limits(max_compare_seconds=0))
    started, original = [], engine.compare

    def compare(*args, progress=None, **kwargs):  # the engine calls progress before each method it starts
        def step(i, n, name):
            progress(i, n, name)  # the handler's step: raises once the time budget is spent
            started.append(name)

        return original(*args, progress=step, **kwargs)

    engine.compare = compare
    h = CompareHandlers(engine, tiny_model)
    with pytest.raises(gr.Error, match="time budget of 0 s after 1 of 3 methods") as exc:
        h.compare(str(EXAMPLES / "astronaut.jpg"), "what ?", ["vanilla", "fastv", "random"], keep=8,
                  max_new_tokens=2, progress=None)
    assert started == ["vanilla"] and "\n" not in exc.value.message
