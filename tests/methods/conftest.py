"""Shared fixtures for the advanced-method tests: tiny models of every family, loaded once, 1 torch thread."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tiny_models import BUILDERS  # noqa: E402

from explorer.engine import Engine  # noqa: E402
from explorer.runtime.decode import greedy  # noqa: E402
from explorer.runtime import pruner_for  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def engine():
    return Engine(threads=1)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, engine):
    """family name -> (loaded model, prepared input) for a small red image and a question."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    image.paste((10, 10, 220), (0, 0, 20, 15))
    for name, build in BUILDERS.items():
        loaded = engine.model(str(build(root / name)))
        out[name] = (loaded, engine.prepare(loaded, [image], "what is the colour of the square ?"))
    return out


def run_plan(loaded, prepared, method, steps: int = 3, fixed=None):
    """One pruned prefill + greedy decode; returns (plan, decoded with every step's logits)."""
    with pruner_for(loaded.family, loaded.model, method, prepared.layouts, prepared.prompt_len, fixed=fixed) as p:
        decoded = greedy(loaded.model, loaded.family, prepared.inputs, steps, set(), keep_logits=True)
    return p.plan, decoded
