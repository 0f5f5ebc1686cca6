"""A real app server on 127.0.0.1 (tiny random LLaVA, private temp cache), shared by the UI tests."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = os.environ.get("HF_HUB_OFFLINE") or "1"  # no network calls from the tests
if "huggingface_hub" in sys.modules:  # tests/conftest.py imported it before this file: set its constant too
    sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from ui_paths import ROOT  # noqa: E402

sys.path.insert(0, str(ROOT))  # the repo (explorer/); tests/ above is for tiny_models


class CountingEngine:
    """Counts model runs, so a test can prove a result came without one."""

    def __init__(self, engine):
        self.engine, self.runs = engine, 0
        original = engine.run

        def run(*args, **kwargs):
            self.runs += 1
            return original(*args, **kwargs)

        engine.run = run


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    from tiny_models import build_llava

    return str(build_llava(tmp_path_factory.mktemp("tiny-llava")))


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


def pytest_configure(config):
    # gradio 6.31's queue calls pandas options that pandas 3 deprecates; not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore:.*(no_silent_downcasting|copy keyword).*")
