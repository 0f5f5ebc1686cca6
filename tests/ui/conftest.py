"""A real app server on 127.0.0.1 (tiny random LLaVA, private temp cache), shared by the UI tests."""
from __future__ import annotations

import os
import sys

import httpx
import pytest

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = os.environ.get("HF_HUB_OFFLINE") or "1"  # no network calls from the tests
if "huggingface_hub" in sys.modules:  # tests/conftest.py imported it before this file: set its constant too
    sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True


class CountingEngine:
    """Counts the engine's model work (run, compare and run_many calls: a sweep sends one run_many per sample),
    so a test can prove a result came without any."""

    def __init__(self, engine):
        self.engine, self.runs = engine, 0
        for name in ("run", "compare", "run_many"):
            setattr(engine, name, self._counted(getattr(engine, name)))

    def _counted(self, original):
        def counted(*args, **kwargs):
            self.runs += 1
            return original(*args, **kwargs)

        return counted


@pytest.fixture(scope="session")
def tiny_model(checkpoints) -> str:
    return str(checkpoints["llava"])


@pytest.fixture(scope="session")
def server(tiny_model, tmp_path_factory):
    """(url, counter): the app with the tiny model as default, launched like app.py does."""
    from explorer.engine import Engine
    from explorer.ui import build_demo, launch_kwargs
    from explorer.ui.cache import ResultCache

    engine = Engine(threads=1)
    counter = CountingEngine(engine)
    cache = ResultCache(tmp_path_factory.mktemp("cache") / "results")
    demo = build_demo(engine, tiny_model, cache)
    demo.queue(default_concurrency_limit=4)
    # Gradio's own start-up check gives the first page 3 s, which a loaded 2-core box misses: check it here.
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True,
                            _frontend=False, **launch_kwargs())
    assert httpx.get(url, timeout=120).status_code == 200
    yield url, counter
    demo.close()
