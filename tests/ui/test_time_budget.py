"""A Compare request's time budget: no further method starts once it is spent (one line, no crash)."""
from __future__ import annotations

import gradio as gr
import pytest

from explorer.testing import EXAMPLES

from explorer.engine import Engine
from explorer.limits import Limits
from explorer.ui.handlers import Handlers


def test_compare_stops_starting_methods_after_its_time_budget(tiny_model):
    engine = Engine(threads=1, limits=Limits(max_compare_seconds=0))
    runs = []
    original = engine.run
    engine.run = lambda *a, **kw: runs.append(1) or original(*a, **kw)
    h = Handlers(engine, tiny_model)
    with pytest.raises(gr.Error, match="time budget of 0 s after 1 of 3 methods") as exc:
        h.compare(str(EXAMPLES / "astronaut.jpg"), "what ?", ["vanilla", "fastv", "random"], keep=8,
                  max_new_tokens=2, progress=None)
    assert len(runs) == 1 and "\n" not in exc.value.message
